//! Analytics: revenue per category and orders per merchant.
//!
//! State (all counters, applied at commit time so concurrent workers never
//! lose an update; the plugin can run unordered): `revenue/<category>`
//! (cents, `price_cents * quantity` per item), `orders/<merchant_id>`,
//! `stats/orders`. It also writes `stats/version`, the config `version`
//! (default `1`), on every order, so a demo can show which version of the
//! plugin handled the latest orders. Publishes nothing. Invalid orders are
//! dead-lettered.

use std::sync::OnceLock;

use courier_plugin::{Error, Message, Outcome, Plugin, ResultExt, config, state};
use order_model::Order;

struct Analytics;

impl Plugin for Analytics {
    fn handle(message: Message) -> Result<Outcome, Error> {
        let order = order_model::parse(&message.payload).permanent()?;
        record(&order)?;
        Ok(Outcome::ack())
    }
}

fn record(order: &Order) -> Result<(), Error> {
    let mut key = String::with_capacity(64);
    for item in &order.items {
        key.clear();
        key.push_str("revenue/");
        key.push_str(&item.category);
        state::increment(&key, item.subtotal_cents())?;
    }
    key.clear();
    key.push_str("orders/");
    key.push_str(&order.merchant_id);
    state::increment(&key, 1)?;
    state::increment("stats/orders", 1)?;
    state::set("stats/version", version()?)?;
    Ok(())
}

/// The config `version`, read once per instance.
fn version() -> Result<&'static str, Error> {
    static VERSION: OnceLock<String> = OnceLock::new();
    if let Some(version) = VERSION.get() {
        return Ok(version);
    }
    let version = config::get_or("version", "1")?;
    Ok(VERSION.get_or_init(|| version))
}

courier_plugin::export!(Analytics);
