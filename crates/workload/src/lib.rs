//! The order workload: a deterministic generator of orders for the order
//! fan-out plugins, the envelope form producers publish, and the figures
//! the plugins must end up with.
//!
//! An order is JSON in exactly the shape `plugins/orders` parses (and
//! validates), keyed by `user_id`:
//!
//! ```json
//! {"order_id":"o-00000001","user_id":"u-00042","merchant_id":"m-0007",
//!  "items":[{"sku":"sku-000123","category":"books","price_cents":1299,"quantity":2}],
//!  "total_cents":2598,"currency":"EUR","created_ms":1764000000000}
//! ```
//!
//! The same [`Shape`] (seed included) always yields the same orders, so a
//! run can be repeated and its results checked against an [`Expected`]
//! computed from the orders it published. Orders get items until their JSON
//! is about [`Shape::size_bytes`] long. `courier generate-orders`,
//! `courier bench` and the `order-fanout` demo use this module; it never
//! talks to an engine.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

/// Category names; shapes with more categories add `category-<n>`.
const CATEGORY_NAMES: [&str; 16] = [
    "books",
    "garden",
    "electronics",
    "toys",
    "grocery",
    "fashion",
    "sports",
    "beauty",
    "home",
    "music",
    "games",
    "health",
    "auto",
    "office",
    "pets",
    "baby",
];
/// The most items one order gets, whatever size is asked: a bound on the
/// size of one order (~70 bytes per item).
pub const MAX_ITEMS: usize = 1000;
/// Most units of one item.
const MAX_QUANTITY: u32 = 3;
/// Generated orders are this far apart in `created_ms`.
const ORDER_INTERVAL_MS: u64 = 10;
/// Points an order earns per cent (membership: one per whole unit).
pub const CENTS_PER_POINT: u64 = 100;

/// What to generate. Counts are clamped to at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The same seed yields the same orders.
    pub seed: u64,
    /// Distinct buyers (`u-00000` ..).
    pub users: u32,
    /// Distinct sellers (`m-0000` ..).
    pub merchants: u32,
    /// Distinct product categories.
    pub categories: u32,
    /// Distinct products; each has a fixed category and price.
    pub skus: u32,
    /// Approximate JSON size of one order, in bytes (at least one item).
    pub size_bytes: usize,
    /// `created_ms` of the first order.
    pub start_ms: u64,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            seed: 1,
            users: 10_000,
            merchants: 1_000,
            categories: 12,
            skus: 5_000,
            size_bytes: 300,
            start_ms: 1_764_000_000_000,
        }
    }
}

/// One order, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub user_id: String,
    pub merchant_id: String,
    pub items: Vec<Item>,
    /// Sum of `price_cents * quantity` over the items.
    pub total_cents: u64,
    pub currency: String,
    pub created_ms: u64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub category: String,
    pub price_cents: u64,
    pub quantity: u32,
}

/// What producers send: `{"key": user_id, "payload": order}`.
#[derive(Serialize)]
struct Envelope<'a> {
    key: &'a str,
    payload: &'a Order,
}

/// Generates orders; an iterator that never ends.
#[derive(Debug, Clone)]
pub struct Generator {
    shape: Shape,
    rng: fastrand::Rng,
    /// The sequence number of the next order (its `order_id`).
    next: u64,
}

impl Generator {
    pub fn new(shape: Shape) -> Generator {
        let shape = Shape {
            users: shape.users.max(1),
            merchants: shape.merchants.max(1),
            categories: shape.categories.max(1),
            skus: shape.skus.max(1),
            ..shape
        };
        Generator {
            rng: fastrand::Rng::with_seed(shape.seed),
            shape,
            next: 0,
        }
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// How many orders were generated so far.
    pub fn generated(&self) -> u64 {
        self.next
    }

    /// The next order.
    pub fn next_order(&mut self) -> Order {
        let seq = self.next;
        self.next += 1;
        let mut order = Order {
            order_id: format!("o-{seq:08}"),
            user_id: format!("u-{:05}", self.rng.u32(0..self.shape.users)),
            merchant_id: format!("m-{:04}", self.rng.u32(0..self.shape.merchants)),
            items: Vec::new(),
            total_cents: 0,
            currency: "EUR".to_owned(),
            created_ms: self.shape.start_ms + seq * ORDER_INTERVAL_MS,
        };
        self.add_items(&mut order);
        order
    }

    /// Adds items while one more brings the JSON closer to the target size.
    fn add_items(&mut self, order: &mut Order) {
        loop {
            let item = self.item();
            let len = order.json_len();
            let grows_by = item.json_len() + usize::from(!order.items.is_empty());
            let closer = len + grows_by / 2 < self.shape.size_bytes;
            if !order.items.is_empty() && (!closer || order.items.len() >= MAX_ITEMS) {
                return;
            }
            order.total_cents += item.price_cents * u64::from(item.quantity);
            order.items.push(item);
        }
    }

    /// A random item; a sku always has the same category and price.
    fn item(&mut self) -> Item {
        let sku = self.rng.u32(0..self.shape.skus);
        let category = sku % self.shape.categories;
        let category = match CATEGORY_NAMES.get(category as usize) {
            Some(name) if self.shape.categories as usize <= CATEGORY_NAMES.len() => {
                (*name).to_owned()
            }
            _ => format!("category-{category}"),
        };
        // 1.99 to 199.98: a spread of prices, fixed per sku.
        let price_cents = 199 + u64::from(sku.wrapping_mul(7_919) % 19_800);
        Item {
            sku: format!("sku-{sku:06}"),
            category,
            price_cents,
            quantity: self.rng.u32(1..=MAX_QUANTITY),
        }
    }

    /// The next `count` orders.
    pub fn orders(&mut self, count: usize) -> Vec<Order> {
        (0..count).map(|_| self.next_order()).collect()
    }
}

impl Iterator for Generator {
    type Item = Order;

    fn next(&mut self) -> Option<Order> {
        Some(self.next_order())
    }
}

impl Order {
    /// The points membership awards for this order.
    pub fn points(&self) -> i64 {
        i64::try_from(self.total_cents / CENTS_PER_POINT).unwrap_or(i64::MAX)
    }

    /// The length of [`Order::to_json`], computed without serializing.
    pub fn json_len(&self) -> usize {
        let items: usize = self.items.iter().map(Item::json_len).sum::<usize>()
            + self.items.len().saturating_sub(1);
        let fixed = r#"{"order_id":"","user_id":"","merchant_id":"","items":[],"total_cents":,"currency":"","created_ms":}"#.len();
        fixed
            + self.order_id.len()
            + self.user_id.len()
            + self.merchant_id.len()
            + items
            + digits(self.total_cents)
            + self.currency.len()
            + digits(self.created_ms)
    }

    /// The order's JSON, as its message payload.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }

    /// Appends the envelope `{"key": user_id, "payload": order}` and a
    /// newline: one NDJSON line of a publish body.
    pub fn write_envelope(&self, out: &mut impl Write) -> serde_json::Result<()> {
        let envelope = Envelope {
            key: &self.user_id,
            payload: self,
        };
        serde_json::to_writer(&mut *out, &envelope)?;
        out.write_all(b"\n").map_err(serde_json::Error::io)
    }
}

impl Item {
    fn json_len(&self) -> usize {
        let fixed = r#"{"sku":"","category":"","price_cents":,"quantity":}"#.len();
        fixed
            + self.sku.len()
            + self.category.len()
            + digits(self.price_cents)
            + digits(u64::from(self.quantity))
    }
}

fn digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The NDJSON body of `POST /v1/topics/orders/messages` for `orders`
/// (also what `courier publish --envelope` reads).
pub fn envelope_ndjson(orders: &[Order]) -> serde_json::Result<Vec<u8>> {
    let size: usize = orders
        .iter()
        .map(|o| o.json_len() + o.user_id.len() + 24)
        .sum();
    let mut body = Vec::with_capacity(size);
    for order in orders {
        order.write_envelope(&mut body)?;
    }
    Ok(body)
}

/// What the order fan-out plugins must end up with after handling a set
/// of orders exactly once: the one oracle of the demo, the end-to-end tests
/// and anyone checking a run. It is computed from the orders themselves
/// (the tests parse back what they published), never from the plugins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub orders: u64,
    /// Every order id counted, once.
    pub order_ids: BTreeSet<String>,
    /// Sum of `total_cents`.
    pub total_cents: u64,
    /// membership `points/<user>`: `total_cents / 100` per order, summed.
    pub points_by_user: BTreeMap<String, i64>,
    /// recommendation `profile/<user>`'s `orders`.
    pub orders_by_user: BTreeMap<String, u64>,
    /// notification `notices/<merchant>` and analytics `orders/<merchant>`.
    pub orders_by_merchant: BTreeMap<String, u64>,
    /// analytics `revenue/<category>`: `price_cents * quantity` summed.
    pub revenue_by_category: BTreeMap<String, u64>,
}

impl Expected {
    /// The figures of `orders`; panics if one order id comes twice (a set
    /// of orders to expect holds each order once).
    pub fn from_orders<'a>(orders: impl IntoIterator<Item = &'a Order>) -> Expected {
        let mut expected = Expected::default();
        for order in orders {
            assert!(
                expected.add(order),
                "order {} counted twice",
                order.order_id
            );
        }
        expected
    }

    /// Counts one more order; false (and nothing counted) if an order with
    /// its id was counted already.
    pub fn add(&mut self, order: &Order) -> bool {
        if !self.order_ids.insert(order.order_id.clone()) {
            return false;
        }
        self.orders += 1;
        self.total_cents += order.total_cents;
        *self
            .points_by_user
            .entry(order.user_id.clone())
            .or_default() += order.points();
        *self
            .orders_by_user
            .entry(order.user_id.clone())
            .or_default() += 1;
        *self
            .orders_by_merchant
            .entry(order.merchant_id.clone())
            .or_default() += 1;
        for item in &order.items {
            let revenue = item.price_cents * u64::from(item.quantity);
            *self
                .revenue_by_category
                .entry(item.category.clone())
                .or_default() += revenue;
        }
        true
    }

    /// Sum of every user's points (membership `points/<user>`).
    pub fn total_points(&self) -> i64 {
        self.points_by_user.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(seed: u64, size_bytes: usize) -> Shape {
        Shape {
            seed,
            size_bytes,
            ..Shape::default()
        }
    }

    #[test]
    fn same_seed_same_orders_other_seed_other_orders() {
        let a = Generator::new(shape(7, 300)).orders(500);
        let b: Vec<Order> = Generator::new(shape(7, 300)).take(500).collect();
        let c = Generator::new(shape(8, 300)).orders(500);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(envelope_ndjson(&a).unwrap(), envelope_ndjson(&b).unwrap());
    }

    #[test]
    fn orders_are_valid_per_the_order_model() {
        let mut generator = Generator::new(shape(3, 300));
        for order in generator.orders(2_000) {
            for field in [
                &order.order_id,
                &order.user_id,
                &order.merchant_id,
                &order.currency,
            ] {
                assert!(!field.is_empty());
            }
            assert!(!order.items.is_empty() && order.items.len() <= MAX_ITEMS);
            let sum: u64 = order
                .items
                .iter()
                .map(|i| i.price_cents * u64::from(i.quantity))
                .sum();
            assert_eq!(order.total_cents, sum);
            for item in &order.items {
                assert!(!item.sku.is_empty() && !item.category.is_empty());
                assert!((1..=MAX_QUANTITY).contains(&item.quantity));
            }
        }
        assert_eq!(generator.generated(), 2_000);
    }

    #[test]
    fn json_matches_the_documented_shape_and_length() {
        let order = Generator::new(shape(1, 300)).next_order();
        let json = order.to_json().unwrap();
        assert_eq!(json.len(), order.json_len());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "order_id",
            "user_id",
            "merchant_id",
            "items",
            "total_cents",
            "currency",
            "created_ms",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let item = value["items"][0].as_object().unwrap();
        let mut item_keys: Vec<&str> = item.keys().map(String::as_str).collect();
        item_keys.sort_unstable();
        assert_eq!(item_keys, ["category", "price_cents", "quantity", "sku"]);
    }

    #[test]
    fn orders_are_about_the_requested_size() {
        for target in [300usize, 1_000, 4_000] {
            let orders = Generator::new(shape(5, target)).orders(1_000);
            let lengths: Vec<usize> = orders.iter().map(|o| o.to_json().unwrap().len()).collect();
            let mean = lengths.iter().sum::<usize>() as f64 / lengths.len() as f64;
            let error = (mean - target as f64).abs() / target as f64;
            assert!(error < 0.1, "mean {mean} for target {target}");
        }
        // Smaller than one item: still one item.
        let tiny = Generator::new(shape(5, 10)).next_order();
        assert_eq!(tiny.items.len(), 1);
    }

    #[test]
    fn envelopes_are_keyed_by_user_and_carry_the_order() {
        let orders = Generator::new(shape(2, 300)).orders(20);
        let body = envelope_ndjson(&orders).unwrap();
        let lines: Vec<&[u8]> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), orders.len());
        for (line, order) in lines.iter().zip(&orders) {
            let value: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(value["key"], order.user_id.as_str());
            let payload: Order = serde_json::from_value(value["payload"].clone()).unwrap();
            assert_eq!(&payload, order);
        }
    }

    #[test]
    fn expected_adds_up() {
        let orders = Generator::new(Shape {
            users: 10,
            merchants: 3,
            ..shape(4, 300)
        })
        .orders(1_000);
        let expected = Expected::from_orders(&orders);
        assert_eq!(expected.orders, 1_000);
        assert!(expected.points_by_user.len() <= 10 && expected.orders_by_merchant.len() <= 3);
        assert_eq!(expected.orders_by_merchant.values().sum::<u64>(), 1_000);
        let points: i64 = orders.iter().map(|o| (o.total_cents / 100) as i64).sum();
        assert_eq!(expected.total_points(), points);
        assert_eq!(
            expected.revenue_by_category.values().sum::<u64>(),
            expected.total_cents
        );
        assert_eq!(expected.orders_by_user.values().sum::<u64>(), 1_000);
        let mut again = expected.clone();
        assert!(!again.add(&orders[0]), "an order counts once");
        assert_eq!(again, expected);
    }

    #[test]
    fn many_categories_get_generated_names() {
        let mut generator = Generator::new(Shape {
            categories: 40,
            ..shape(6, 300)
        });
        let order = generator.next_order();
        assert!(
            order
                .items
                .iter()
                .all(|i| i.category.starts_with("category-"))
        );
    }
}
