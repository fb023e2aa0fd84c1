//! The soak's parameters, and the duration syntax its flags take.

use std::time::Duration;

/// Soak parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the load runs.
    pub duration: Duration,
    /// Interval between progress lines.
    pub report_every: Duration,
    /// Time after the load stops (and the queues are drained) before the end sample.
    pub settle: Duration,
    /// A probe round trip longer than this is a stall.
    pub stall: Duration,
    /// The broker's process, sampled in /proc.
    pub broker_pid: Option<u32>,
    /// Messages per second offered by all publishers together.
    pub rate: u64,
    /// Publishers per kind (topic, queue).
    pub publishers: usize,
    /// Steady topic subscribers that read promptly.
    pub subscribers: usize,
    /// Consumer cohorts, each on a queue of its own.
    pub cohorts: usize,
    /// Consumers in one cohort; they all leave at the same moment.
    pub cohort_size: usize,
    /// Topic subscribers that read a little now and then.
    pub slow_readers: usize,
    /// Clients that send receipted frames and never read.
    pub floods: usize,
    /// Connections in one reconnect storm.
    pub storm_size: usize,
    /// Interval between reconnect storms.
    pub storm_every: Duration,
    /// Interval between bad-frame connections.
    pub bad_every: Duration,
}

/// Parses `30m`, `10s`, `500ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 30m, 10s, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit is one of ms, s, m, h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
