//! Reads a process's resident memory and CPU time from `/proc`.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat`, which counts every thread of the
//! process, exited ones included, in clock ticks.

use anyhow::{anyhow, Context, Result};

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
}

/// Reads process `pid` now.
pub fn sample(pid: u32) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for process {pid}"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
    };
    let cpu_s = (ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND;
    Ok(Sample { rss_kib, cpu_s })
}

/// Reads this process (the generator).
pub fn own() -> Result<Sample> {
    sample(std::process::id())
}

/// Readings of the server (when its PID is known) and of the generator, taken together.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub server: Option<Sample>,
    pub client: Sample,
}

impl Pair {
    pub fn now(server_pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            server: server_pid.map(sample).transpose()?,
            client: own()?,
        })
    }

    /// Server CPU seconds spent since `earlier` (0 without a server PID).
    pub fn server_cpu_since(&self, earlier: &Pair) -> f64 {
        match (self.server, earlier.server) {
            (Some(a), Some(b)) => a.cpu_s - b.cpu_s,
            _ => 0.0,
        }
    }

    /// Generator CPU seconds spent since `earlier`.
    pub fn client_cpu_since(&self, earlier: &Pair) -> f64 {
        self.client.cpu_s - earlier.client.cpu_s
    }

    pub fn server_rss_kib(&self) -> f64 {
        self.server.map_or(0.0, |s| s.rss_kib as f64)
    }
}
