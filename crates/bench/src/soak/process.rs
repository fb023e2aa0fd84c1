//! Samples of a process from /proc (resident memory, threads, open descriptors): the
//! broker's, to see whether the faults leave anything behind, and the generator's own.

use super::units::mib;

/// A /proc sample of a process; `None` where it could not be read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    /// Resident memory in bytes.
    pub(super) rss: Option<u64>,
    /// Threads.
    pub(super) threads: Option<u64>,
    /// Open file descriptors.
    pub(super) fds: Option<u64>,
}

/// Reads VmRSS, Threads and the number of open descriptors of `pid`.
pub(super) fn sample(pid: Option<u32>) -> Sample {
    let Some(pid) = pid else {
        return Sample::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Sample {
        rss: field("VmRSS:").map(|kib| kib * 1024),
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|dir| dir.count() as u64),
    }
}

/// One line for a progress report: `rss ..  threads ..  fds ..`, `?` where unknown.
pub(super) fn describe(s: &Sample) -> String {
    let or = |v: Option<u64>, f: &dyn Fn(u64) -> String| v.map_or("?".to_owned(), f);
    format!(
        "rss {}  threads {}  fds {}",
        or(s.rss, &mib),
        or(s.threads, &|t| t.to_string()),
        or(s.fds, &|f| f.to_string()),
    )
}
