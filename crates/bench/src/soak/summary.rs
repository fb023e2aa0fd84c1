//! The final report: totals, the probe's latencies, how the broker's process changed,
//! what each kind of fault came to, and the verdict.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::consumers::Exit;
use super::flood::FLOOD_LIMIT;
use super::options::Options;
use super::probe::Probe;
use super::process::{Sample, sample};
use super::slow::SLOW_PHASE;
use super::stats::Stats;
use super::units::{clock, mib, millis};

/// The report printed at the end, from the counters, the probe and the process samples
/// taken before the load and after it settled.
pub(super) fn summary(
    options: &Options,
    stats: &Stats,
    probe: &Probe,
    start: &Sample,
    end: &Sample,
    loaded_for: Duration,
) -> String {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let total = probe.total.lock().expect("probe lock");
    let (p50, p99, max) = if total.is_empty() {
        (0, 0, 0)
    } else {
        (
            total.value_at_quantile(0.5),
            total.value_at_quantile(0.99),
            total.max(),
        )
    };
    let (worst, worst_at) = *probe.worst.lock().expect("probe lock");
    let stalls = get(&probe.stalls);
    let mut out = String::new();
    let _ = writeln!(out, "soak summary ({} of load)", clock(loaded_for));
    let _ = writeln!(
        out,
        "  delivered   {} messages ({:.0}/s), {} published",
        get(&stats.delivered),
        get(&stats.delivered) as f64 / loaded_for.as_secs_f64().max(1e-3),
        get(&stats.published),
    );
    let _ = writeln!(
        out,
        "  probe       {} round trips: p50 {} p99 {} max {}; worst {} at {}; stalls (> {} ms) {}",
        total.len(),
        millis(p50),
        millis(p99),
        millis(max),
        millis(worst),
        clock(worst_at),
        options.stall.as_millis(),
        stalls,
    );
    let change =
        |label: &str, a: Option<u64>, b: Option<u64>, unit: &dyn Fn(u64) -> String| match (a, b) {
            (Some(a), Some(b)) => {
                let delta = b as i128 - a as i128;
                let sign = if delta < 0 { "-" } else { "+" };
                let percent = if a == 0 {
                    0.0
                } else {
                    delta as f64 * 100.0 / a as f64
                };
                format!(
                    "  {label:<11} start {} end {}: {sign}{} ({percent:+.1}%)\n",
                    unit(a),
                    unit(b),
                    unit(delta.unsigned_abs() as u64)
                )
            }
            _ => format!("  {label:<11} unknown (give --broker-pid)\n"),
        };
    out.push_str(&change("rss", start.rss, end.rss, &mib));
    out.push_str(&change("threads", start.threads, end.threads, &|t| {
        t.to_string()
    }));
    out.push_str(&change("fds", start.fds, end.fds, &|f| f.to_string()));
    let _ = writeln!(
        out,
        "  connections {} opened, {} failed to connect, {} publisher reconnects",
        get(&stats.connects),
        get(&stats.connect_failures),
        get(&stats.publisher_reconnects),
    );
    let _ = writeln!(
        out,
        "  consumers   {} left: {} reset, {} FIN, {} DISCONNECT, {} stopped reading; {} drained at the end",
        get(&stats.consumers),
        get(&stats.exits[Exit::Reset as usize]),
        get(&stats.exits[Exit::Fin as usize]),
        get(&stats.exits[Exit::Disconnect as usize]),
        get(&stats.exits[Exit::StopReading as usize]),
        get(&stats.drained),
    );
    let _ = writeln!(
        out,
        "  slow        {} sessions: {} cut off by the broker, {} still connected after {} s",
        get(&stats.slow_sessions),
        get(&stats.slow_closed),
        get(&stats.slow_kept),
        SLOW_PHASE.as_secs(),
    );
    let _ = writeln!(
        out,
        "  floods      {} sessions, {} closed by the broker, {} still open after {} s",
        get(&stats.flood_sessions),
        get(&stats.flood_closed),
        get(&stats.flood_outlived),
        FLOOD_LIMIT.as_secs(),
    );
    let _ = writeln!(
        out,
        "  bad frames  {} sent: {} ERROR and close, {} closed without ERROR, {} left open",
        get(&stats.bad_sent),
        get(&stats.bad_answered),
        get(&stats.bad_closed_silently),
        get(&stats.bad_left_open),
    );
    let _ = writeln!(
        out,
        "  storms      {} waves of {}: {} connected, {} failed, slowest CONNECT {}",
        get(&stats.storms),
        options.storm_size,
        get(&stats.storm_connects),
        get(&stats.storm_failures),
        millis(get(&stats.storm_slowest_us)),
    );
    let own = sample(Some(std::process::id()));
    let _ = writeln!(
        out,
        "  generator   rss {}",
        own.rss.map_or("?".to_owned(), mib)
    );
    let anomalies = stats.anomalies.lock().expect("anomalies lock");
    let _ = writeln!(out, "  anomalies   {}", get(&stats.anomaly_count));
    for line in anomalies.iter() {
        let _ = writeln!(out, "    {line}");
    }
    let gone_reason = probe.gone_reason.lock().expect("probe lock").clone();
    let verdict = match (gone_reason, stalls) {
        (Some(reason), _) => format!("FAIL: the broker stopped answering: {reason}"),
        (None, 0) => "OK: no stall, the broker answered throughout".to_owned(),
        (None, n) => format!("FAIL: {n} probe stall(s)"),
    };
    let _ = writeln!(out, "{verdict}");
    out
}
