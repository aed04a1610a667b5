//! Notification: tells the merchant about every new order.
//!
//! For each valid order it publishes a notice to the topic named by config
//! `topic` (default `notifications`), keyed by `merchant_id`:
//!
//! ```json
//! {"order_id":"o-000001","merchant_id":"m-007","user_id":"u-0042","total_cents":2598,
//!  "currency":"EUR","text":"You have a new order o-000001 (2 items, 25.98 EUR): please ship it."}
//! ```
//!
//! State: the counter `notices/<merchant_id>` (notices per merchant; no
//! global counter, which every order would write). Invalid orders are
//! dead-lettered. Needs the capability `publish = ["notifications"]` (or
//! whatever `topic` names).

use std::sync::OnceLock;

use courier_plugin::{Error, Message, Outcome, Plugin, ResultExt, config, publish_json, state};
use order_model::Order;
use serde::Serialize;

/// The notice published for one order.
#[derive(Serialize)]
struct Notice<'a> {
    order_id: &'a str,
    merchant_id: &'a str,
    user_id: &'a str,
    total_cents: u64,
    currency: &'a str,
    text: String,
}

struct Notification;

impl Plugin for Notification {
    fn handle(message: Message) -> Result<Outcome, Error> {
        let order = order_model::parse(&message.payload).permanent()?;
        notify(&order)?;
        Ok(Outcome::ack())
    }
}

fn notify(order: &Order) -> Result<(), Error> {
    let notice = Notice {
        order_id: &order.order_id,
        merchant_id: &order.merchant_id,
        user_id: &order.user_id,
        total_cents: order.total_cents,
        currency: &order.currency,
        text: text(order),
    };
    publish_json(topic()?, Some(order.merchant_id.as_bytes()), &notice)?;
    state::increment(&["notices/", &order.merchant_id].concat(), 1)?;
    Ok(())
}

/// `You have a new order o-000001 (2 items, 25.98 EUR): please ship it.`
fn text(order: &Order) -> String {
    let units = order.unit_count();
    let noun = if units == 1 { "item" } else { "items" };
    format!(
        "You have a new order {} ({units} {noun}, {}.{:02} {}): please ship it.",
        order.order_id,
        order.total_cents / 100,
        order.total_cents % 100,
        order.currency,
    )
}

/// The target topic, read once per instance (config never changes under a
/// running instance).
fn topic() -> Result<&'static str, Error> {
    static TOPIC: OnceLock<String> = OnceLock::new();
    if let Some(topic) = TOPIC.get() {
        return Ok(topic);
    }
    let topic = config::get_or("topic", "notifications")?;
    Ok(TOPIC.get_or_init(|| topic))
}

courier_plugin::export!(Notification);
