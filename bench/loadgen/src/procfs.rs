//! What the benchmark reads about the server under test: resident memory and CPU time, from /proc.

use std::time::Instant;

use anyhow::{Context, bail};

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid}"))?;
    parse_vmrss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid}"))?;
    match parse_stat_ticks(&stat) {
        Some(t) => Ok(t),
        None => bail!("cannot parse /proc/{pid}/stat"),
    }
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Measures a process's CPU use between `new()` and `finish()`, in percent of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    ticks: u64,
    at: Instant,
}

impl CpuMeter {
    pub fn new(pid: Option<u32>) -> CpuMeter {
        let ticks = pid.and_then(|p| cpu_ticks(p).ok()).unwrap_or(0);
        CpuMeter {
            pid,
            ticks,
            at: Instant::now(),
        }
    }

    /// CPU percent of one core used since `new()`; `None` without a PID.
    pub fn finish(&self) -> Option<f64> {
        let pid = self.pid?;
        let now = cpu_ticks(pid).ok()?;
        let secs = self.at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        Some((now.saturating_sub(self.ticks)) as f64 / ticks_per_second() / secs * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "1234 (we ird) (name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 10";
        assert_eq!(parse_stat_ticks(stat), Some(300));
    }

    #[test]
    fn parses_vmrss() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t  5120 kB\n"),
            Some(5120)
        );
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("own status") > 0);
        cpu_ticks(pid).expect("own stat");
        let m = CpuMeter::new(Some(pid));
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(m.finish().expect("pid given") >= 0.0);
        assert_eq!(CpuMeter::new(None).finish(), None);
    }
}
