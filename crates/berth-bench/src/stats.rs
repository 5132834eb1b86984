//! Latency percentiles over the acknowledged writes of a run. Pure: the
//! callers time the writes, this only ranks them.

/// Nearest-rank percentiles of a run's write latencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Shows whether a p99 is a plateau (e.g. a timer firing) or one outlier.
    pub max_ms: f64,
}

/// Summarises latencies given in microseconds; `None` when nothing was
/// acknowledged.
pub fn summarize(mut latencies_us: Vec<u64>) -> Option<LatencySummary> {
    if latencies_us.is_empty() {
        return None;
    }
    latencies_us.sort_unstable();
    Some(LatencySummary {
        p50_ms: micros_to_ms(percentile(&latencies_us, 50)),
        p90_ms: micros_to_ms(percentile(&latencies_us, 90)),
        p99_ms: micros_to_ms(percentile(&latencies_us, 99)),
        max_ms: micros_to_ms(percentile(&latencies_us, 100)),
    })
}

/// Nearest-rank percentile of a sorted, non-empty slice: the smallest value
/// that at least `pct` percent of the samples do not exceed.
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[allow(clippy::cast_precision_loss)] // latencies stay far below 2^52 µs
fn micros_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples: Vec<u64> = (1..=100).rev().map(|ms| ms * 1_000).collect();
        let summary = summarize(samples);
        assert_eq!(summary, Some(LatencySummary { p50_ms: 50.0, p90_ms: 90.0, p99_ms: 99.0, max_ms: 100.0 }));
    }

    #[test]
    fn single_sample_is_every_percentile() {
        assert_eq!(summarize(vec![1_500]), Some(LatencySummary { p50_ms: 1.5, p90_ms: 1.5, p99_ms: 1.5, max_ms: 1.5 }));
    }

    #[test]
    fn p99_of_a_small_run_is_its_maximum() {
        assert_eq!(summarize(vec![1, 2, 3]).map(|s| s.p99_ms), Some(0.003));
    }

    #[test]
    fn no_acknowledged_write_has_no_summary() {
        assert_eq!(summarize(Vec::new()), None);
    }
}
