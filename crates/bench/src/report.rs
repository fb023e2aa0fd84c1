//! Collecting and printing results.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, up to one minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Throughput and latency of one run.
#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    pub measured: Duration,
    pub published: u64,
    pub delivered: u64,
    pub latency: Histogram<u64>,
    pub extra: Vec<(String, serde_json::Value)>,
}

impl Report {
    pub fn publish_rate(&self) -> f64 {
        self.published as f64 / self.measured.as_secs_f64()
    }

    pub fn delivery_rate(&self) -> f64 {
        self.delivered as f64 / self.measured.as_secs_f64()
    }

    fn quantile_us(&self, q: f64) -> u64 {
        if self.latency.is_empty() {
            0
        } else {
            self.latency.value_at_quantile(q)
        }
    }

    /// One human-readable block.
    pub fn human(&self) -> String {
        let mut out = format!(
            "{}\n  published  {:>12.0} msg/s\n  delivered  {:>12.0} msg/s\n  latency    p50 {} p99 {} p99.9 {} max {} ({} samples)\n",
            self.scenario,
            self.publish_rate(),
            self.delivery_rate(),
            micros(self.quantile_us(0.5)),
            micros(self.quantile_us(0.99)),
            micros(self.quantile_us(0.999)),
            micros(if self.latency.is_empty() {
                0
            } else {
                self.latency.max()
            }),
            self.latency.len(),
        );
        for (name, value) in &self.extra {
            out.push_str(&format!("  {name:<10} {value}\n"));
        }
        out
    }

    /// One JSON object.
    pub fn json(&self) -> serde_json::Value {
        let mut object = serde_json::json!({
            "scenario": self.scenario,
            "seconds": self.measured.as_secs_f64(),
            "published_per_sec": self.publish_rate(),
            "delivered_per_sec": self.delivery_rate(),
            "latency_us": {
                "p50": self.quantile_us(0.5),
                "p99": self.quantile_us(0.99),
                "p999": self.quantile_us(0.999),
                "max": if self.latency.is_empty() { 0 } else { self.latency.max() },
                "samples": self.latency.len(),
            },
        });
        for (name, value) in &self.extra {
            object[name] = value.clone();
        }
        object
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}us")
    }
}
