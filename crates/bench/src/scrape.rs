//! Reads histograms and counters back out of the engine's `/metrics`
//! text, so `courier bench` can say how the store's own waits (fsyncs,
//! commits into fjall, write stalls) behaved while it measured end-to-end
//! latency (a slow tail either shows there or is not the store's), and how
//! much CPU the plugins' batches took during the drain.
//!
//! Only the sample lines the engine writes are read: a histogram's
//! `NAME_bucket{le=..}`, `NAME_sum` and `NAME_count`, a counter's
//! `NAME_total`, with or without labels such as `{plugin="membership"}`;
//! one series is picked by its labels and everything else in the text is
//! skipped.

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
    /// The unlabelled histogram `name` in `text`, or `None` if `text` has
    /// none by that name (or a line of it does not parse).
    pub fn parse(text: &str, name: &str) -> Option<Histogram> {
        Histogram::parse_series(text, name, &[])
    }

    /// The series of histogram `name` whose labels (other than `le`) are
    /// exactly `labels`, e.g. `[("plugin", "membership")]`, in any order.
    pub fn parse_series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let mut histogram = Histogram::default();
        let mut found = false;
        for sample in samples(text, name) {
            let mut sample = sample?;
            let bound = sample.take_label("le");
            if !sample.has_labels(labels) {
                continue;
            }
            match (sample.suffix, bound) {
                ("_sum", None) => histogram.sum = sample.value.parse().ok()?,
                ("_count", None) => histogram.count = sample.value.parse().ok()?,
                ("_bucket", Some(bound)) => {
                    let bound = if bound == "+Inf" {
                        f64::INFINITY
                    } else {
                        bound.parse().ok()?
                    };
                    histogram.buckets.push((bound, sample.value.parse().ok()?));
                }
                _ => continue,
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

/// The value of counter `name` (`NAME_total`) in the series whose labels
/// are exactly `labels`, or `None` if there is none (or it does not parse).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name)
        .filter_map(|sample| sample.filter(|s| s.suffix == "_total" && s.has_labels(labels)))
        .find_map(|sample| sample.value.parse().ok())
}

/// One sample line of a metric: what follows its name (`_sum`, `_total`,
/// ...), its labels and its value, as written.
struct Sample<'a> {
    suffix: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

impl<'a> Sample<'a> {
    /// Removes label `name` and returns its value.
    fn take_label(&mut self, name: &str) -> Option<&'a str> {
        let index = self.labels.iter().position(|(label, _)| *label == name)?;
        Some(self.labels.swap_remove(index).1)
    }

    /// Whether the labels are exactly `wanted`, in any order.
    fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        self.labels.len() == wanted.len()
            && wanted
                .iter()
                .all(|&(name, value)| self.labels.contains(&(name, value)))
    }
}

/// The sample lines of metric `name` in `text` (`None` for a line of it
/// that does not parse); comments and other metrics are skipped. Label
/// values are taken as written: the engine's contain no escapes.
fn samples<'a>(text: &'a str, name: &str) -> impl Iterator<Item = Option<Sample<'a>>> {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        // Another metric whose name starts with this one's has a longer name.
        if !rest.starts_with(['_', '{', ' ']) {
            return None;
        }
        Some(parse_sample(rest))
    })
}

fn parse_sample(rest: &str) -> Option<Sample<'_>> {
    let (series, value) = rest.rsplit_once(' ')?;
    let (suffix, labels) = match series.split_once('{') {
        Some((suffix, labels)) => (suffix, labels.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (label, quoted) = pair.split_once('=')?;
            Some((label, quoted.strip_prefix('"')?.strip_suffix('"')?))
        })
        .collect::<Option<_>>()?;
    Some(Sample {
        suffix,
        labels,
        value,
    })
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

    #[test]
    fn a_labelled_series_is_picked_by_its_labels() {
        let text = "# TYPE courier_handler_seconds histogram\n\
             courier_handler_seconds_sum{plugin=\"membership\"} 0.5\n\
             courier_handler_seconds_count{plugin=\"membership\"} 100\n\
             courier_handler_seconds_bucket{le=\"0.001\",plugin=\"membership\"} 99\n\
             courier_handler_seconds_bucket{le=\"+Inf\",plugin=\"membership\"} 100\n\
             courier_handler_seconds_sum{plugin=\"member\"} 9.0\n\
             courier_handler_seconds_count{plugin=\"member\"} 7\n\
             courier_handler_seconds_bucket{le=\"+Inf\",plugin=\"member\"} 7\n\
             courier_handler_seconds_total{plugin=\"membership\"} 3\n";
        let name = "courier_handler_seconds";
        let h = Histogram::parse_series(text, name, &[("plugin", "membership")]).expect("parses");
        assert_eq!((h.sum, h.count), (0.5, 100));
        assert_eq!(h.buckets, vec![(0.001, 99), (f64::INFINITY, 100)]);
        let other = Histogram::parse_series(text, name, &[("plugin", "member")]).expect("parses");
        assert_eq!((other.sum, other.count), (9.0, 7));
        // No unlabelled series, and no series of an unknown plugin.
        assert_eq!(Histogram::parse(text, name), None);
        assert_eq!(
            Histogram::parse_series(text, name, &[("plugin", "fraud")]),
            None
        );
    }

    #[test]
    fn a_counter_is_read_from_its_total_line() {
        let text = "# TYPE courier_handler_cpu_seconds counter\n\
             courier_handler_cpu_seconds_total{plugin=\"membership\"} 1.25\n\
             courier_handler_cpu_seconds_total{plugin=\"notification\"} 2.5\n\
             courier_handler_cpu_seconds_created{plugin=\"membership\"} 1700000000.0\n";
        let name = "courier_handler_cpu_seconds";
        assert_eq!(counter(text, name, &[("plugin", "membership")]), Some(1.25));
        assert_eq!(
            counter(text, name, &[("plugin", "notification")]),
            Some(2.5)
        );
        assert_eq!(counter(text, name, &[("plugin", "fraud")]), None);
        assert_eq!(counter(text, name, &[]), None);
        let garbled = "courier_handler_cpu_seconds_total{plugin=\"membership\"} many\n";
        assert_eq!(counter(garbled, name, &[("plugin", "membership")]), None);
    }
}
