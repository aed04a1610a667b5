//! Recommendation: keeps a purchase profile per user.
//!
//! State: `profile/<user_id>`, JSON
//! `{"orders":3,"categories":{"books":4,"garden":1},"recent":["sku-9","sku-4"]}`:
//! the user's order count, units bought per category, and the last
//! `recent_items` (config, default 10) distinct skus, newest first (an
//! order's skus in listed order, then the older ones).
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
use std::fmt;
use std::sync::OnceLock;

use courier_plugin::{Error, Message, Outcome, Plugin, ResultExt, config, publish_json, state};
use order_model::Order;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The topic profile updates go to.
const UPDATES_TOPIC: &str = "recommendations";
/// How many categories an update names.
const TOP_CATEGORIES: usize = 3;

/// Text borrowed from the stored profile or the order where possible
/// (`Cow` borrows inside collections only through a newtype like this).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Text<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user's purchase profile, as stored under `profile/<user_id>`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Profile<'a> {
    orders: u64,
    #[serde(borrow)]
    categories: Categories<'a>,
    #[serde(borrow)]
    recent: Vec<Text<'a>>,
}

/// Units bought per category, sorted by name: a JSON object in the
/// profile, held as a flat vector (a lookup scans a dozen names; nothing
/// to allocate per category, unlike a tree).
#[derive(Debug, Default)]
struct Categories<'a>(Vec<(Text<'a>, u64)>);

/// The top categories, most units first (ties by name).
type Top<'a> = [Option<Text<'a>>; TOP_CATEGORIES];

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
    fn handle(message: Message) -> Result<Outcome, Error> {
        let order = order_model::parse(&message.payload).permanent()?;
        update(&order)?;
        Ok(Outcome::ack())
    }
}

fn update(order: &Order) -> Result<(), Error> {
    let settings = settings()?;
    let key = ["profile/", &order.user_id].concat();
    let stored = state::get(&key)?;
    let mut profile: Profile = match &stored {
        Some(bytes) => courier_plugin::from_json(bytes)?,
        None => Profile::default(),
    };
    // Borrowed from the stored bytes (or the order), not copied.
    let before = settings.publish_updates.then(|| profile.categories.top());
    profile.record(order, settings.recent_items);
    // Sized from the stored profile, which an order grows by a few bytes
    // at most: the buffer is not regrown while the profile is written.
    let mut json = Vec::with_capacity(stored.as_ref().map_or(256, |bytes| bytes.len() + 64));
    serde_json::to_writer(&mut json, &profile)?;
    state::set(&key, &json)?;
    if let Some(before) = before {
        let top = profile.categories.top();
        if top != before {
            let update = Update {
                user_id: &order.user_id,
                top_categories: top.iter().flatten().map(Text::as_str).collect(),
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
            self.categories
                .add(&item.category, u64::from(item.quantity));
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
            if !recent.iter().any(|held| same(held.as_str(), sku.as_str())) {
                recent.push(sku);
            }
        }
        self.recent = recent;
    }
}

impl<'a> Categories<'a> {
    /// Adds `units` to `category` (inserted in name order if new).
    fn add(&mut self, category: &'a str, units: u64) {
        // A dozen names: a scan with `same` is cheaper than a binary search
        // of `memcmp` calls; the order matters only for a new name.
        if let Some((_, held)) = self
            .0
            .iter_mut()
            .find(|(name, _)| same(name.as_str(), category))
        {
            *held += units;
            return;
        }
        let at = self.0.partition_point(|(name, _)| name.as_str() < category);
        self.0.insert(at, (Text(Cow::Borrowed(category)), units));
    }

    /// The [`TOP_CATEGORIES`] categories with the most units, ties by name
    /// (clones of the names, so they borrow what the profile borrows).
    fn top(&self) -> Top<'a> {
        let mut best: [Option<(&Text<'a>, u64)>; TOP_CATEGORIES] = [None; TOP_CATEGORIES];
        // Names come in ascending order, so a later name with as many units
        // never outranks an earlier one: only strictly more units move it up.
        for (name, units) in &self.0 {
            let Some(at) = best
                .iter()
                .position(|slot| slot.is_none_or(|(_, held)| *units > held))
            else {
                continue;
            };
            best[at..].rotate_right(1);
            best[at] = Some((name, *units));
        }
        best.map(|slot| slot.map(|(name, _)| name.clone()))
    }
}

impl Serialize for Categories<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, units)| (name, units)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Categories<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<'a>(std::marker::PhantomData<Categories<'a>>);

        impl<'de: 'a, 'a> Visitor<'de> for Entries<'a> {
            type Value = Categories<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of units per category")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries: Vec<(Text<'a>, u64)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                // This plugin writes profiles sorted (so did its versions
                // that held a `BTreeMap`); anything else is put in order,
                // the last of duplicate names winning as in a map.
                if !entries.is_sorted_by(|a, b| a.0 < b.0) {
                    entries.reverse();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    entries.dedup_by(|later, earlier| later.0 == earlier.0);
                }
                Ok(Categories(entries))
            }
        }

        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// String equality without a `memcmp` call (which Wasm does byte by byte
/// out of line): names and skus share prefixes (`sku-000123`), so it
/// compares from the end, where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().rev().eq(b.bytes().rev())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> Profile<'_> {
        serde_json::from_str(json).expect("profile JSON")
    }

    fn names<'a>(top: &'a Top<'a>) -> Vec<&'a str> {
        top.iter().flatten().map(Text::as_str).collect()
    }

    #[test]
    fn categories_round_trip_as_a_sorted_object() {
        let json = r#"{"orders":2,"categories":{"books":4,"garden":1},"recent":["sku-2","sku-1"]}"#;
        let mut stored = profile(json);
        assert_eq!(serde_json::to_string(&stored).expect("JSON"), json);
        stored.categories.add("art", 2);
        stored.categories.add("books", 1);
        assert_eq!(
            serde_json::to_string(&stored.categories).expect("JSON"),
            r#"{"art":2,"books":5,"garden":1}"#
        );
    }

    #[test]
    fn unsorted_or_repeated_names_are_put_in_order_the_last_winning() {
        let stored = profile(r#"{"categories":{"toys":1,"books":2,"toys":7}}"#);
        assert_eq!(
            serde_json::to_string(&stored.categories).expect("JSON"),
            r#"{"books":2,"toys":7}"#
        );
    }

    #[test]
    fn top_ranks_by_units_then_name() {
        let stored = profile(r#"{"categories":{"art":3,"books":5,"garden":3,"toys":9,"zoo":3}}"#);
        assert_eq!(names(&stored.categories.top()), ["toys", "books", "art"]);
        let few = profile(r#"{"categories":{"garden":1,"art":1}}"#);
        assert_eq!(names(&few.categories.top()), ["art", "garden"]);
        assert!(names(&Profile::default().categories.top()).is_empty());
    }

    #[test]
    fn recent_skus_are_newest_first_distinct_and_bounded() {
        let payload = r#"{"order_id":"o-1","user_id":"u-1","merchant_id":"m-1","items":[{"sku":"sku-3","category":"books","price_cents":100,"quantity":1},{"sku":"sku-1","category":"books","price_cents":100,"quantity":2},{"sku":"sku-3","category":"art","price_cents":100,"quantity":1}],"total_cents":400,"currency":"EUR","created_ms":1}"#;
        let order = order_model::parse(payload.as_bytes()).expect("order");
        let mut stored = profile(r#"{"orders":1,"recent":["sku-1","sku-2","sku-4"]}"#);
        stored.record(&order, 4);
        let recent: Vec<&str> = stored.recent.iter().map(Text::as_str).collect();
        assert_eq!(recent, ["sku-3", "sku-1", "sku-2", "sku-4"]);
        assert_eq!(stored.orders, 2);
        assert_eq!(
            serde_json::to_string(&stored.categories).expect("JSON"),
            r#"{"art":1,"books":3}"#
        );
        stored.record(&order, 2);
        let recent: Vec<&str> = stored.recent.iter().map(Text::as_str).collect();
        assert_eq!(recent, ["sku-3", "sku-1"]);
    }

    #[test]
    fn same_is_string_equality() {
        assert!(same("sku-000123", "sku-000123"));
        assert!(!same("sku-000123", "sku-000124"));
        assert!(!same("sku-1", "sku-10"));
        assert!(same("", ""));
    }
}
