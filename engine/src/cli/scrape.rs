//! Reads latency histograms back out of the engine's `/metrics` text, so
//! `courier bench` can say how the store's own waits (fsyncs, commits into
//! fjall, write stalls) behaved while it measured end-to-end latency: a
//! slow tail either shows there or is not the store's.
//!
//! Only the histogram lines the engine writes are read (`NAME_bucket{le=..}`,
//! `NAME_sum`, `NAME_count`, one unlabelled series per name); everything
//! else in the text is skipped.

use serde_json::{Value, json};

/// One histogram at one scrape: cumulative counts by upper bound (seconds,
/// ascending, `+Inf` last), the sum of the observations and their count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// The histogram `name` in `text`, or `None` if `text` has none by that
    /// name (or a line of it does not parse).
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        let mut histogram = Histogram::default();
        let mut found = false;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let (series, value) = rest.rsplit_once(' ')?;
            if series == "_sum" {
                histogram.sum = value.parse().ok()?;
            } else if series == "_count" {
                histogram.count = value.parse().ok()?;
            } else if let Some(bound) = series
                .strip_prefix("_bucket{le=\"")
                .and_then(|bound| bound.strip_suffix("\"}"))
            {
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                histogram.buckets.push((bound, value.parse().ok()?));
            } else {
                // Another metric whose name starts with this one's.
                continue;
            }
            found = true;
        }
        let ascending = histogram.buckets.windows(2).all(|w| w[0].0 < w[1].0);
        (found && ascending).then_some(histogram)
    }

    /// What was observed after `earlier` (a scrape of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |bound: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0, |(_, count)| *count)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(bound, count)| (bound, count.saturating_sub(before(bound))))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// Observations above `seconds` (exact when `seconds` is a bucket bound).
    pub fn over(&self, seconds: f64) -> u64 {
        let at_most = self
            .buckets
            .iter()
            .rev()
            .find(|(bound, _)| *bound <= seconds)
            .map_or(0, |(_, count)| *count);
        self.count.saturating_sub(at_most)
    }

    /// The upper bound of the bucket holding the slowest observation:
    /// `None` without observations, infinite when it is above every finite
    /// bound.
    pub fn slowest_at_most(&self) -> Option<f64> {
        self.buckets
            .iter()
            .find(|(_, count)| *count == self.count)
            .filter(|_| self.count > 0)
            .map(|(bound, _)| *bound)
    }

    /// The report's view: count, mean, how many took over 1, 10 and 100
    /// ms, and the slowest one's bucket: `slowest_at_most_ms`, or
    /// `slowest_over_ms` (the largest finite bound) when it is above them
    /// all.
    pub fn json(&self) -> Value {
        let slowest = self.slowest_at_most();
        let largest_finite = self
            .buckets
            .iter()
            .map(|(bound, _)| *bound)
            .rfind(|bound| bound.is_finite());
        json!({
            "count": self.count,
            "mean_ms": (self.count > 0).then(|| self.sum * 1000.0 / self.count as f64),
            "over_1ms": self.over(0.001),
            "over_10ms": self.over(0.01),
            "over_100ms": self.over(0.1),
            "slowest_at_most_ms": slowest.filter(|s| s.is_finite()).map(|s| s * 1000.0),
            "slowest_over_ms": largest_finite
                .filter(|_| slowest.is_some_and(f64::is_infinite))
                .map(|bound| bound * 1000.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the engine's `/metrics` writes (trimmed to three buckets).
    fn text(sum: &str, counts: [u64; 4]) -> String {
        format!(
            "# HELP courier_storage_fsync_seconds Latency of the writer's fsyncs\n\
             # TYPE courier_storage_fsync_seconds histogram\n\
             courier_storage_fsync_seconds_sum {sum}\n\
             courier_storage_fsync_seconds_count {}\n\
             courier_storage_fsync_seconds_bucket{{le=\"0.001\"}} {}\n\
             courier_storage_fsync_seconds_bucket{{le=\"0.01\"}} {}\n\
             courier_storage_fsync_seconds_bucket{{le=\"0.1\"}} {}\n\
             courier_storage_fsync_seconds_bucket{{le=\"+Inf\"}} {}\n\
             courier_storage_fsync_seconds_total_like_name 7\n\
             courier_storage_commit_seconds_count 99\n",
            counts[3], counts[0], counts[1], counts[2], counts[3]
        )
    }

    const FSYNC: &str = "courier_storage_fsync_seconds";

    #[test]
    fn parses_the_engines_histogram_lines_and_nothing_else() {
        let h = Histogram::parse(&text("0.25", [10, 12, 13, 14]), FSYNC).expect("parses");
        assert_eq!(h.count, 14);
        assert_eq!(h.sum, 0.25);
        assert_eq!(
            h.buckets,
            vec![(0.001, 10), (0.01, 12), (0.1, 13), (f64::INFINITY, 14)]
        );
        assert_eq!(h.over(0.001), 4);
        assert_eq!(h.over(0.01), 2);
        assert_eq!(h.over(0.1), 1);
        assert_eq!(h.slowest_at_most(), Some(f64::INFINITY));
        assert_eq!(h.json()["slowest_over_ms"], 100.0);
        assert_eq!(h.json()["slowest_at_most_ms"], Value::Null);
    }

    #[test]
    fn a_missing_or_garbled_histogram_is_none() {
        assert_eq!(Histogram::parse("up 1\n", FSYNC), None);
        let garbled = text("x", [1, 1, 1, 1]);
        assert_eq!(Histogram::parse(&garbled, FSYNC), None);
    }

    #[test]
    fn the_difference_of_two_scrapes_is_what_happened_between_them() {
        let before = Histogram::parse(&text("0.5", [100, 100, 101, 101]), FSYNC).expect("parses");
        let after = Histogram::parse(&text("0.75", [150, 153, 154, 154]), FSYNC).expect("parses");
        let between = after.since(&before);
        assert_eq!(between.count, 53);
        assert!((between.sum - 0.25).abs() < 1e-12);
        assert_eq!(
            between.buckets,
            vec![(0.001, 50), (0.01, 53), (0.1, 53), (f64::INFINITY, 53)]
        );
        assert_eq!(between.over(0.001), 3);
        assert_eq!(between.over(0.01), 0);
        assert_eq!(between.slowest_at_most(), Some(0.01));
        let json = between.json();
        assert_eq!(json["slowest_at_most_ms"], 10.0);
        assert_eq!(json["slowest_over_ms"], Value::Null);
        assert_eq!(json["over_1ms"], 3);
        assert!((json["mean_ms"].as_f64().expect("a number") - 250.0 / 53.0).abs() < 1e-9);
    }

    #[test]
    fn nothing_observed_has_no_mean_and_no_slowest() {
        let h = Histogram::parse(&text("0", [0, 0, 0, 0]), FSYNC).expect("parses");
        assert_eq!(h.slowest_at_most(), None);
        assert_eq!(h.json()["mean_ms"], Value::Null);
        assert_eq!(h.json()["slowest_at_most_ms"], Value::Null);
        assert_eq!(h.json()["slowest_over_ms"], Value::Null);
    }
}
