//! Recommendation: keeps a purchase profile per user.
//!
//! State: `profile/<user_id>`, JSON
//! `{"orders":3,"categories":{"books":4,"garden":1},"recent":["sku-9","sku-4"]}`:
//! the user's order count, units bought per category, and the last
//! `recent_items` (config, default 10) distinct skus, newest first (an
//! order's skus in listed order, then the older ones). The counter
//! `stats/profiles_updated` grows once per order.
//!
//! If config `publish_updates` is `true`, an order that changes the user's
//! top categories (up to three, most units first, ties by name) publishes
//! `{"user_id":"u-0042","top_categories":["books","garden"]}` to topic
//! `recommendations`, keyed by user id: downstream systems hear of every
//! change, in order, and of nothing else (an order that only confirms the
//! ranking publishes nothing). That needs the capability
//! `publish = ["recommendations"]`.
//!
//! The profile is read, changed and written back, so the subscription must
//! be `ordered`: producers key orders by user id, so one user's orders are
//! then handled one at a time, in order. Invalid orders are dead-lettered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use courier_plugin::{Error, Message, Outcome, Plugin, config, publish_json, state};
use order_model::Order;
use serde::{Deserialize, Serialize};

/// The topic profile updates go to.
const UPDATES_TOPIC: &str = "recommendations";
/// How many categories an update names.
const TOP_CATEGORIES: usize = 3;

/// Text borrowed from the stored profile or the order where possible
/// (`Cow` borrows inside collections only through a newtype like this).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A user's purchase profile, as stored under `profile/<user_id>`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Profile<'a> {
    orders: u64,
    #[serde(borrow)]
    categories: BTreeMap<Text<'a>, u64>,
    #[serde(borrow)]
    recent: Vec<Text<'a>>,
}

/// What `publish_updates` sends to `recommendations`.
#[derive(Serialize)]
struct Update<'a> {
    user_id: &'a str,
    top_categories: Vec<&'a str>,
}

struct Settings {
    recent_items: usize,
    publish_updates: bool,
}

struct Recommendation;

impl Plugin for Recommendation {
    fn handle(message: Message) -> Outcome {
        match order_model::parse(&message.payload) {
            Ok(order) => update(&order).map_or_else(Outcome::from, |()| Outcome::ack()),
            Err(invalid) => Outcome::dead_letter(invalid.to_string()),
        }
    }
}

fn update(order: &Order) -> Result<(), Error> {
    let settings = settings()?;
    let key = format!("profile/{}", order.user_id);
    let stored = state::get(&key)?;
    let mut profile: Profile = match &stored {
        Some(bytes) => serde_json::from_slice(bytes)?,
        None => Profile::default(),
    };
    // Borrowed from the stored bytes (or the order), not copied.
    let before: Vec<Text> = if settings.publish_updates {
        profile.top_categories(TOP_CATEGORIES)
    } else {
        Vec::new()
    };
    profile.record(order, settings.recent_items);
    state::set_json(&key, &profile)?;
    state::increment("stats/profiles_updated", 1)?;
    if settings.publish_updates {
        let top = profile.top_categories(TOP_CATEGORIES);
        if top != before {
            let update = Update {
                user_id: &order.user_id,
                top_categories: top.iter().map(|name| name.0.as_ref()).collect(),
            };
            publish_json(UPDATES_TOPIC, Some(order.user_id.as_bytes()), &update)?;
        }
    }
    Ok(())
}

impl<'a> Profile<'a> {
    /// Adds `order` to the profile, keeping at most `recent_items` skus.
    fn record(&mut self, order: &'a Order, recent_items: usize) {
        self.orders += 1;
        for item in &order.items {
            let category = Text(Cow::Borrowed(item.category.as_ref()));
            *self.categories.entry(category).or_default() += u64::from(item.quantity);
        }
        let mut recent: Vec<Text<'a>> = Vec::with_capacity(recent_items);
        let newest = order
            .items
            .iter()
            .map(|item| Text(Cow::Borrowed(item.sku.as_ref())));
        for sku in newest.chain(self.recent.drain(..)) {
            if recent.len() == recent_items {
                break;
            }
            if !recent.contains(&sku) {
                recent.push(sku);
            }
        }
        self.recent = recent;
    }

    /// Up to `n` categories, most units first (ties by name). The names are
    /// clones of the profile's, so they borrow what it borrows.
    fn top_categories(&self, n: usize) -> Vec<Text<'a>> {
        let mut ranked: Vec<(&Text<'a>, u64)> = self
            .categories
            .iter()
            .map(|(name, units)| (name, *units))
            .collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(n)
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The settings, read once per instance.
fn settings() -> Result<&'static Settings, Error> {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    if let Some(settings) = SETTINGS.get() {
        return Ok(settings);
    }
    let settings = Settings {
        recent_items: config::parse("recent_items")?.unwrap_or(10),
        publish_updates: config::parse("publish_updates")?.unwrap_or(false),
    };
    Ok(SETTINGS.get_or_init(|| settings))
}

courier_plugin::export!(Recommendation);
