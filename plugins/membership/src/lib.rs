//! Membership: awards loyalty points for every order and keeps each user's
//! level.
//!
//! An order earns `total_cents / 100` points (one per whole currency unit).
//! Levels come from config `levels`, `name:threshold` pairs (default
//! `silver:1000,gold:5000,platinum:20000`); below the lowest threshold a
//! user is `basic`.
//!
//! State: `points/<user_id>` (counter), `level/<user_id>` (the level name,
//! written when it changes) and the counter `stats/upgrades` (level
//! changes). Publishes nothing. Invalid orders are dead-lettered; an invalid
//! `levels` config retries (so the orders wait for the operator to fix it).
//!
//! No counter is bumped on every order: one key that every partition's
//! orders write serializes them all, and the engine already counts what
//! each subscription handled (`courier status`). Totals are sums over the
//! per-user keys.

use std::sync::OnceLock;

use courier_plugin::{Error, Message, Outcome, Plugin, ResultExt, config, log, state};
use order_model::levels::{self, Levels};

struct Membership;

impl Plugin for Membership {
    fn handle(message: Message) -> Result<Outcome, Error> {
        let order = order_model::parse(&message.payload).permanent()?;
        award(levels()?, &order.user_id, order.total_cents_i64() / 100)?;
        Ok(Outcome::ack())
    }
}

fn award(levels: &Levels, user_id: &str, points: i64) -> Result<(), Error> {
    let total = state::increment(&["points/", user_id].concat(), points)?;
    let level = levels.level_for(total);
    let level_key = ["level/", user_id].concat();
    let previous = state::get(&level_key)?;
    if previous.as_deref() != Some(level.as_bytes()) {
        state::set(&level_key, level)?;
        let previous = previous
            .as_deref()
            .map_or(levels::BASIC.into(), String::from_utf8_lossy);
        if previous != level {
            state::increment("stats/upgrades", 1)?;
            log::info!("{user_id} moved from {previous} to {level} with {total} points");
        }
    }
    Ok(())
}

/// The level table, parsed once per instance. An invalid table is an
/// operator error: retry, so no order is lost while it gets fixed.
fn levels() -> Result<&'static Levels, Error> {
    static LEVELS: OnceLock<Levels> = OnceLock::new();
    if let Some(levels) = LEVELS.get() {
        return Ok(levels);
    }
    let text = config::get_or("levels", levels::DEFAULT_LEVELS)?;
    let levels = Levels::parse(&text)
        .map_err(|e| Error::transient(format!("invalid config `levels`: {e}")))?;
    Ok(LEVELS.get_or_init(|| levels))
}

courier_plugin::export!(Membership);
