//! Membership levels: a table of `name:threshold` pairs such as
//! `silver:1000,gold:5000,platinum:20000`. A member's level is the one with
//! the highest threshold at or below their points; below every threshold it
//! is [`BASIC`].

use std::fmt;

/// The level of a member below every threshold.
pub const BASIC: &str = "basic";

/// The default table, used when the manifest sets no `levels`.
pub const DEFAULT_LEVELS: &str = "silver:1000,gold:5000,platinum:20000";

/// A parsed level table, sorted by threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    /// `(threshold, name)`, ascending by threshold.
    table: Vec<(i64, String)>,
}

/// Why a level table does not parse; the text names the bad entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLevels(String);

impl fmt::Display for InvalidLevels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidLevels {}

impl Levels {
    /// Parses `name:threshold` pairs separated by commas (spaces allowed).
    /// Thresholds are non-negative integers and must be distinct; names are
    /// non-empty. An empty text means everyone is [`BASIC`].
    pub fn parse(text: &str) -> Result<Self, InvalidLevels> {
        let mut table = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| InvalidLevels(format!("level `{entry}`: {why}"));
            let (name, threshold) = entry
                .split_once(':')
                .ok_or_else(|| bad("expected `name:threshold`"))?;
            let name = name.trim();
            if name.is_empty() {
                return Err(bad("the name is empty"));
            }
            let threshold: i64 = threshold
                .trim()
                .parse()
                .map_err(|e| bad(&format!("threshold: {e}")))?;
            if threshold < 0 {
                return Err(bad("the threshold is negative"));
            }
            table.push((threshold, name.to_owned()));
        }
        table.sort_unstable_by_key(|&(threshold, _)| threshold);
        if let Some(pair) = table.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(InvalidLevels(format!(
                "levels `{}` and `{}` share the threshold {}",
                pair[0].1, pair[1].1, pair[0].0
            )));
        }
        Ok(Levels { table })
    }

    /// The level of a member with `points` points.
    pub fn level_for(&self, points: i64) -> &str {
        self.table
            .iter()
            .rev()
            .find(|(threshold, _)| points >= *threshold)
            .map_or(BASIC, |(_, name)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_maps_points_to_levels() {
        let levels = Levels::parse(DEFAULT_LEVELS).expect("default parses");
        assert_eq!(levels.level_for(0), "basic");
        assert_eq!(levels.level_for(999), "basic");
        assert_eq!(levels.level_for(1000), "silver");
        assert_eq!(levels.level_for(4999), "silver");
        assert_eq!(levels.level_for(5000), "gold");
        assert_eq!(levels.level_for(20_000), "platinum");
        assert_eq!(levels.level_for(i64::MAX), "platinum");
        assert_eq!(levels.level_for(-5), "basic");
    }

    #[test]
    fn order_of_entries_and_spaces_do_not_matter() {
        let levels = Levels::parse(" gold : 50 , silver:10 ").expect("parses");
        assert_eq!(levels.level_for(10), "silver");
        assert_eq!(levels.level_for(60), "gold");
    }

    #[test]
    fn empty_table_means_basic() {
        let levels = Levels::parse("").expect("parses");
        assert_eq!(levels.level_for(1_000_000), BASIC);
    }

    #[test]
    fn malformed_tables_are_rejected() {
        for text in ["silver", "silver:x", ":10", "silver:-1", "a:1,b:1"] {
            assert!(Levels::parse(text).is_err(), "{text} should not parse");
        }
        let e = Levels::parse("silver:ten").expect_err("bad threshold");
        assert_eq!(
            e.to_string(),
            "level `silver:ten`: threshold: invalid digit found in string"
        );
    }
}
