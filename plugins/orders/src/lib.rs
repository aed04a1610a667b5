//! The order record shared by the order fan-out plugins.
//!
//! Producers publish one JSON order per message, keyed by user id:
//!
//! ```json
//! {"order_id":"o-000001","user_id":"u-0042","merchant_id":"m-007",
//!  "items":[{"sku":"sku-123","category":"books","price_cents":1299,"quantity":2}],
//!  "total_cents":2598,"currency":"EUR","created_ms":1764000000000}
//! ```
//!
//! [`parse`] is the one way in: it deserializes (borrowing strings from the
//! payload where it can) and [`Order::validate`]s. An order is valid when
//! every field is present and non-empty, `items` is not empty, every
//! `quantity` is at least 1, and `total_cents` equals the sum of
//! `price_cents * quantity` and fits a signed 64-bit counter. Unknown fields
//! are ignored so producers can add some. [`levels`] holds the membership
//! level table, kept here so it is unit-tested natively.

pub mod levels;

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

/// One order, borrowing its strings from the payload it was parsed from
/// (they are copied only if the JSON escapes characters in them).
#[derive(Debug, Deserialize)]
pub struct Order<'a> {
    /// The producer's order id, e.g. `o-000001`.
    #[serde(borrow)]
    pub order_id: Cow<'a, str>,
    /// The buyer, e.g. `u-0042`; producers key orders by it.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// The seller, e.g. `m-007`.
    #[serde(borrow)]
    pub merchant_id: Cow<'a, str>,
    /// What was bought; never empty once validated.
    #[serde(borrow)]
    pub items: Vec<Item<'a>>,
    /// Sum of `price_cents * quantity` over `items`, in cents.
    pub total_cents: u64,
    /// ISO 4217 code, e.g. `EUR`.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// When the order was placed (milliseconds since the Unix epoch).
    pub created_ms: u64,
}

/// One line of an order.
#[derive(Debug, Deserialize)]
pub struct Item<'a> {
    /// The product, e.g. `sku-123`.
    #[serde(borrow)]
    pub sku: Cow<'a, str>,
    /// The product's category, e.g. `books`.
    #[serde(borrow)]
    pub category: Cow<'a, str>,
    /// Unit price in cents.
    pub price_cents: u64,
    /// How many units; at least 1 once validated.
    pub quantity: u32,
}

/// Why a payload is not a valid order. Its text starts with
/// `invalid order: ` so it can serve as a dead-letter reason as is.
#[derive(Debug)]
pub enum InvalidOrder {
    /// Not JSON, or not shaped like an order (missing field, wrong type).
    Json(serde_json::Error),
    /// A required text field is empty.
    EmptyField(&'static str),
    /// `items` is empty.
    NoItems,
    /// An item has quantity 0.
    ZeroQuantity {
        /// The item's sku.
        sku: String,
    },
    /// The items' sum overflows, or exceeds `i64::MAX` cents.
    TooLarge,
    /// `total_cents` differs from the sum of the items.
    TotalMismatch {
        /// The `total_cents` field.
        total_cents: u64,
        /// The sum of `price_cents * quantity`.
        items_cents: u64,
    },
}

impl fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid order: ")?;
        match self {
            InvalidOrder::Json(e) => write!(f, "{e}"),
            InvalidOrder::EmptyField(field) => write!(f, "field `{field}` is empty"),
            InvalidOrder::NoItems => f.write_str("`items` is empty"),
            InvalidOrder::ZeroQuantity { sku } => write!(f, "item `{sku}` has quantity 0"),
            InvalidOrder::TooLarge => f.write_str("amounts are too large"),
            InvalidOrder::TotalMismatch {
                total_cents,
                items_cents,
            } => write!(
                f,
                "`total_cents` is {total_cents} but the items sum to {items_cents}"
            ),
        }
    }
}

impl std::error::Error for InvalidOrder {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvalidOrder::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// Parses and validates one order from a message payload.
pub fn parse(payload: &[u8]) -> Result<Order<'_>, InvalidOrder> {
    let order: Order = courier_plugin::from_json(payload).map_err(InvalidOrder::Json)?;
    order.validate()?;
    Ok(order)
}

impl Order<'_> {
    /// Checks the rules in the crate doc. On success every amount derived
    /// from the order (each item's subtotal, the total) fits an `i64`.
    pub fn validate(&self) -> Result<(), InvalidOrder> {
        let fields = [
            ("order_id", &self.order_id),
            ("user_id", &self.user_id),
            ("merchant_id", &self.merchant_id),
            ("currency", &self.currency),
        ];
        for (name, value) in fields {
            if value.is_empty() {
                return Err(InvalidOrder::EmptyField(name));
            }
        }
        if self.items.is_empty() {
            return Err(InvalidOrder::NoItems);
        }
        let mut items_cents: u64 = 0;
        for item in &self.items {
            item.validate()?;
            items_cents = item
                .price_cents
                .checked_mul(u64::from(item.quantity))
                .and_then(|subtotal| items_cents.checked_add(subtotal))
                .ok_or(InvalidOrder::TooLarge)?;
        }
        if i64::try_from(items_cents).is_err() {
            return Err(InvalidOrder::TooLarge);
        }
        if items_cents != self.total_cents {
            return Err(InvalidOrder::TotalMismatch {
                total_cents: self.total_cents,
                items_cents,
            });
        }
        Ok(())
    }

    /// How many units the order holds (the sum of the quantities).
    pub fn unit_count(&self) -> u64 {
        self.items.iter().map(|item| u64::from(item.quantity)).sum()
    }

    /// `total_cents` as a signed counter delta (validated orders always fit).
    pub fn total_cents_i64(&self) -> i64 {
        i64::try_from(self.total_cents).unwrap_or(i64::MAX)
    }
}

impl Item<'_> {
    fn validate(&self) -> Result<(), InvalidOrder> {
        if self.sku.is_empty() {
            return Err(InvalidOrder::EmptyField("sku"));
        }
        if self.category.is_empty() {
            return Err(InvalidOrder::EmptyField("category"));
        }
        if self.quantity == 0 {
            return Err(InvalidOrder::ZeroQuantity {
                sku: self.sku.clone().into_owned(),
            });
        }
        Ok(())
    }

    /// `price_cents * quantity` as a signed counter delta (fits once the
    /// order is validated).
    pub fn subtotal_cents(&self) -> i64 {
        let subtotal = self.price_cents.saturating_mul(u64::from(self.quantity));
        i64::try_from(subtotal).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"order_id":"o-000001","user_id":"u-0042","merchant_id":"m-007","items":[{"sku":"sku-123","category":"books","price_cents":1299,"quantity":2}],"total_cents":2598,"currency":"EUR","created_ms":1764000000000}"#;

    fn reason(payload: &str) -> String {
        match parse(payload.as_bytes()) {
            Ok(order) => panic!("accepted an invalid order: {order:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn valid_order_parses_and_borrows() {
        let order = parse(VALID.as_bytes()).expect("valid order");
        assert_eq!(order.user_id, "u-0042");
        assert!(matches!(order.user_id, Cow::Borrowed(_)));
        assert_eq!(order.unit_count(), 2);
        assert_eq!(order.items[0].subtotal_cents(), 2598);
        assert_eq!(order.total_cents_i64(), 2598);
    }

    #[test]
    fn escaped_strings_are_accepted() {
        let payload = VALID.replace("u-0042", r"u-\u00e9");
        let order = parse(payload.as_bytes()).expect("valid order");
        assert_eq!(order.user_id, "u-é");
    }

    #[test]
    fn missing_field_names_the_field() {
        let payload = VALID.replace(r#""user_id":"u-0042","#, "");
        let reason = reason(&payload);
        assert!(
            reason.starts_with("invalid order: missing field `user_id`"),
            "{reason}"
        );
    }

    #[test]
    fn missing_currency_is_invalid() {
        let payload = VALID.replace(r#","currency":"EUR""#, "");
        assert!(reason(&payload).contains("missing field `currency`"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_invalid_json() {
        let mut payload = VALID.as_bytes().to_vec();
        let at = VALID.find("u-0042").expect("user id") + 2;
        payload[at] = 0xff;
        let reason = match parse(&payload) {
            Ok(order) => panic!("accepted {order:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            reason.starts_with("invalid order: invalid unicode"),
            "{reason}"
        );
    }

    #[test]
    fn not_json_is_invalid() {
        assert!(reason("not json").starts_with("invalid order: expected"));
    }

    #[test]
    fn inconsistent_total_is_invalid() {
        let payload = VALID.replace("2598", "2599");
        assert_eq!(
            reason(&payload),
            "invalid order: `total_cents` is 2599 but the items sum to 2598"
        );
    }

    #[test]
    fn empty_items_are_invalid() {
        let payload = r#"{"order_id":"o","user_id":"u","merchant_id":"m","items":[],"total_cents":0,"currency":"EUR","created_ms":1}"#;
        assert_eq!(reason(payload), "invalid order: `items` is empty");
    }

    #[test]
    fn zero_quantity_is_invalid() {
        let payload = VALID.replace(r#""quantity":2"#, r#""quantity":0"#);
        assert_eq!(
            reason(&payload),
            "invalid order: item `sku-123` has quantity 0"
        );
    }

    #[test]
    fn negative_amounts_are_invalid() {
        let payload = VALID.replace(r#""quantity":2"#, r#""quantity":-2"#);
        assert!(reason(&payload).contains("invalid value: integer `-2`"));
    }

    #[test]
    fn empty_ids_are_invalid() {
        let payload = VALID.replace("m-007", "");
        assert_eq!(
            reason(&payload),
            "invalid order: field `merchant_id` is empty"
        );
    }

    #[test]
    fn overflowing_amounts_are_invalid() {
        let payload = VALID
            .replace("1299", &u64::MAX.to_string())
            .replace("2598", "0");
        assert_eq!(reason(&payload), "invalid order: amounts are too large");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let payload = VALID.replace(r#""currency""#, r#""coupon":"X","currency""#);
        assert!(parse(payload.as_bytes()).is_ok());
    }
}
