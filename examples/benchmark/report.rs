//! Results: etcd's summary (same lines, same 4-decimal seconds, same histogram and
//! percentile rules, so the two tools' outputs can be read side by side), then what etcd
//! lacks: HdrHistogram percentiles in µs, the error count, and a one-line JSON form.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// The percentiles etcd prints under "Latency distribution".
const ETCD_PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// The tail etcd's list stops short of, from the HdrHistogram.
const HDR_PERCENTILES: [(&str, f64); 5] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("p99.99", 99.99)];

/// Collects one benchmark's results as they come.
pub struct Recorder {
    /// Every successful request's latency in seconds: etcd's statistics are exact, over all.
    lats: Vec<f64>,
    /// The same latencies in µs, 3 significant digits (0.1 % error), up to an hour.
    hdr: Histogram<u64>,
    /// Failures by message.
    errors: BTreeMap<String, usize>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            lats: Vec::new(),
            hdr: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }

    pub fn ok(&mut self, latency: Duration) {
        self.lats.push(latency.as_secs_f64());
        self.hdr.saturating_record((latency.as_micros() as u64).max(1));
    }

    pub fn err(&mut self, message: impl Into<String>) {
        *self.errors.entry(message.into()).or_default() += 1;
    }

    pub fn err_n(&mut self, message: impl Into<String>, n: usize) {
        if n > 0 {
            *self.errors.entry(message.into()).or_default() += n;
        }
    }

    /// The statistics, `total` being the wall time of the run.
    pub fn finish(mut self, total: Duration) -> Summary {
        self.lats.sort_by(f64::total_cmp);
        let n = self.lats.len();
        let average = if n == 0 { 0.0 } else { self.lats.iter().sum::<f64>() / n as f64 };
        let variance = if n == 0 {
            0.0
        } else {
            self.lats.iter().map(|l| (l - average) * (l - average)).sum::<f64>() / n as f64
        };
        Summary {
            total,
            average,
            stddev: variance.sqrt(),
            lats: self.lats,
            hdr: self.hdr,
            errors: self.errors,
        }
    }
}

/// One benchmark's results, ready to print.
pub struct Summary {
    pub total: Duration,
    average: f64,
    stddev: f64,
    /// Sorted.
    lats: Vec<f64>,
    hdr: Histogram<u64>,
    errors: BTreeMap<String, usize>,
}

impl Summary {
    pub fn ok(&self) -> usize {
        self.lats.len()
    }

    pub fn errors(&self) -> usize {
        self.errors.values().sum()
    }

    fn rps(&self) -> f64 {
        self.ok() as f64 / self.total.as_secs_f64().max(1e-9)
    }

    fn fastest(&self) -> f64 {
        self.lats.first().copied().unwrap_or(0.0)
    }

    fn slowest(&self) -> f64 {
        self.lats.last().copied().unwrap_or(0.0)
    }

    /// etcd's rule: the first latency whose rank, in percent of the count, reaches `p`.
    fn etcd_percentile(&self, p: f64) -> f64 {
        let n = self.lats.len();
        (0..n).find(|&i| i as f64 * 100.0 / n as f64 >= p).map_or(0.0, |i| self.lats[i])
    }

    /// etcd's histogram: 10 equal buckets from the fastest, one more ending at the slowest;
    /// each count is of the latencies above the previous bound, up to its own.
    pub fn histogram(&self) -> Vec<(f64, usize)> {
        let (fastest, slowest) = (self.fastest(), self.slowest());
        let step = (slowest - fastest) / 10.0;
        let mut buckets: Vec<(f64, usize)> =
            (0..10).map(|i| (fastest + step * i as f64, 0)).collect();
        buckets.push((slowest, 0));
        let mut b = 0;
        for &lat in &self.lats {
            while lat > buckets[b].0 && b < buckets.len() - 1 {
                b += 1;
            }
            buckets[b].1 += 1;
        }
        buckets
    }

    /// etcd's text (pkg/report), then the HdrHistogram percentiles and the error count.
    pub fn text(&self, precise: bool) -> String {
        let num = |v: f64| if precise { format!("{v}") } else { format!("{v:.4}") };
        let secs = |v: f64| format!("{} secs", num(v));
        let mut s = String::new();
        if !self.lats.is_empty() {
            s += "\nSummary:\n";
            let _ = writeln!(s, "  Total:\t{}.", secs(self.total.as_secs_f64()));
            let _ = writeln!(s, "  Slowest:\t{}.", secs(self.slowest()));
            let _ = writeln!(s, "  Fastest:\t{}.", secs(self.fastest()));
            let _ = writeln!(s, "  Average:\t{}.", secs(self.average));
            let _ = writeln!(s, "  Stddev:\t{}.", secs(self.stddev));
            let _ = writeln!(s, "  Requests/sec:\t{}", num(self.rps()));
            s += "\nResponse time histogram:\n";
            let buckets = self.histogram();
            let max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1);
            for (bound, count) in buckets {
                let bar = "∎".repeat(count * 40 / max);
                let _ = writeln!(s, "  {} [{count}]\t|{bar}", num(bound));
            }
            s += "\nLatency distribution:\n";
            for p in ETCD_PERCENTILES {
                let v = self.etcd_percentile(p);
                if v > 0.0 {
                    let _ = writeln!(s, "  {p}% in {}.", secs(v));
                }
            }
        }
        if !self.errors.is_empty() {
            s += "\nError distribution:\n";
            let mut errors: Vec<_> = self.errors.iter().collect();
            errors.sort_by(|a, b| b.1.cmp(a.1));
            for (message, count) in errors {
                let _ = writeln!(s, "  [{count}]\t{message}");
            }
        }
        if !self.lats.is_empty() {
            s += "\nHdrHistogram latency (µs, 3 significant digits):\n";
            for (name, p) in HDR_PERCENTILES {
                let _ = writeln!(s, "  {name}\t{}", self.hdr.value_at_percentile(p));
            }
            let _ = writeln!(s, "  max\t{}", self.hdr.max());
        }
        let requests = self.ok() + self.errors();
        let _ = writeln!(s, "\nErrors: {} of {requests} requests.", self.errors());
        s
    }

    /// The JSON fields of this summary, after `{"op":...,` (no braces).
    pub fn json_fields(&self, prefix: &str) -> String {
        let us = |p: f64| if self.lats.is_empty() { 0 } else { self.hdr.value_at_percentile(p) };
        format!(
            "\"{prefix}ops\":{},\"{prefix}errors\":{},\"{prefix}total_s\":{:.6},\"{prefix}ops_per_s\":{:.1},\
             \"{prefix}mean_us\":{:.1},\"{prefix}p50_us\":{},\"{prefix}p90_us\":{},\"{prefix}p99_us\":{},\
             \"{prefix}p999_us\":{},\"{prefix}p9999_us\":{},\"{prefix}max_us\":{}",
            self.ok(),
            self.errors(),
            self.total.as_secs_f64(),
            self.rps(),
            self.average * 1e6,
            us(50.0),
            us(90.0),
            us(99.0),
            us(99.9),
            us(99.99),
            if self.lats.is_empty() { 0 } else { self.hdr.max() },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_holds_every_latency_once() {
        let mut r = Recorder::new();
        for ms in [1, 1, 2, 3, 5, 8, 13, 21, 34, 55] {
            r.ok(Duration::from_millis(ms));
        }
        r.err("boom");
        let s = r.finish(Duration::from_secs(1));
        assert_eq!(s.histogram().iter().map(|b| b.1).sum::<usize>(), 10);
        assert_eq!(s.histogram()[0], (0.001, 2));
        assert_eq!((s.ok(), s.errors()), (10, 1));
        assert_eq!(s.etcd_percentile(50.0), 0.008);
        assert!(s.text(false).contains("  Requests/sec:\t10.0000\n"));
    }
}
