//! CPU and memory accounting from `/proc`: user + system time of the umsd process and of
//! the PostgreSQL processes, read before and after a phase to give CPU-µs per accepted
//! message (or per delivery), and the resident set size of a process (`VmRSS`).
//!
//! For umsd only its own `utime + stime` counts (its children, if any, are PostgreSQL and
//! are counted there). For PostgreSQL every process whose `/proc/<pid>/comm` is `postgres`
//! counts — restricted to one cluster (the postmaster and its children) when the
//! postmaster's pid is known — with `utime + stime + cutime + cstime`, so that backends
//! which exited during the phase are still counted through the postmaster's reaped-children
//! times.
//!
//! The harness's own CPU time comes from `getrusage` ([`own_cpu_time`]): it tells a
//! saturated client or simulator apart from a slow daemon.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

/// Clock ticks per second of the times in `/proc/<pid>/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time (user + system) this process has used so far.
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The fields of `/proc/<pid>/stat` this module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after the *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<i64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(num(4)?).ok()?,
        utime: u64::try_from(num(14)?).ok()?,
        stime: u64::try_from(num(15)?).ok()?,
        cutime: u64::try_from(num(16)?.max(0)).ok()?,
        cstime: u64::try_from(num(17)?.max(0)).ok()?,
    })
}

pub fn read_stat(pid: u32) -> Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&text).ok_or_else(|| anyhow!("cannot parse {path}"))
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// Pids of `postgres` processes: all of them, or only `postmaster` and its children.
pub fn postgres_pids(postmaster: Option<u32>) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if comm(pid).as_deref() != Some("postgres") {
            continue;
        }
        if let Some(pm) = postmaster {
            let Ok(st) = read_stat(pid) else { continue };
            if pid != pm && st.ppid != pm {
                continue;
            }
        }
        pids.push(pid);
    }
    pids.sort_unstable();
    pids
}

/// The postmaster pid of the cluster in `pgdata` (first line of `postmaster.pid`).
pub fn postmaster_pid(pgdata: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// CPU ticks at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub umsd: Option<u64>,
    /// Per postgres pid: utime + stime + cutime + cstime.
    pub postgres: BTreeMap<u32, u64>,
}

/// What to measure.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub umsd_pid: Option<u32>,
    pub postmaster_pid: Option<u32>,
}

impl Probe {
    pub fn snapshot(&self) -> Snapshot {
        let umsd = self
            .umsd_pid
            .and_then(|p| read_stat(p).ok())
            .map(|s| s.utime + s.stime);
        let postgres = postgres_pids(self.postmaster_pid)
            .into_iter()
            .filter_map(|p| {
                read_stat(p)
                    .ok()
                    .map(|s| (p, s.utime + s.stime + s.cutime + s.cstime))
            })
            .collect();
        Snapshot { umsd, postgres }
    }

    pub fn postgres_scope(&self) -> String {
        match self.postmaster_pid {
            Some(pm) => format!("postmaster {pm} and its children"),
            None => "all processes named postgres".to_owned(),
        }
    }
}

/// Ticks used by PostgreSQL between two snapshots: a pid seen in both counts its growth, a
/// pid that appeared counts in full (it started during the window). A pid that vanished
/// had its whole life added to its parent's `cutime/cstime` when it was reaped, so what it
/// had used before the window is taken off again.
pub fn postgres_delta(before: &Snapshot, after: &Snapshot) -> u64 {
    let grown: u64 = after
        .postgres
        .iter()
        .map(|(pid, t)| match before.postgres.get(pid) {
            Some(b) => t.saturating_sub(*b),
            None => *t,
        })
        .sum();
    let vanished: u64 = before
        .postgres
        .iter()
        .filter(|(pid, _)| !after.postgres.contains_key(pid))
        .map(|(_, t)| *t)
        .sum();
    grown.saturating_sub(vanished)
}

/// CPU used during a window, per accepted message.
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub clock_ticks_per_second: u64,
    pub window_s: f64,
    pub accepted: u64,
    pub umsd_pid: Option<u32>,
    pub postgres_scope: String,
    pub postgres_processes: usize,
    pub umsd_cpu_s: Option<f64>,
    pub postgres_cpu_s: f64,
    pub umsd_us_per_msg: Option<f64>,
    pub umsd_plus_postgres_us_per_msg: Option<f64>,
    /// Average cores busy during the window.
    pub umsd_cores: Option<f64>,
    pub postgres_cores: f64,
}

pub fn report(
    probe: &Probe,
    before: &Snapshot,
    after: &Snapshot,
    window_s: f64,
    accepted: u64,
) -> CpuReport {
    let hz = clock_ticks_per_second();
    let secs = |ticks: u64| ticks as f64 / hz as f64;
    let umsd_s = match (before.umsd, after.umsd) {
        (Some(b), Some(a)) => Some(secs(a.saturating_sub(b))),
        _ => None,
    };
    let pg_s = secs(postgres_delta(before, after));
    let per = |s: f64| (accepted > 0).then(|| s * 1e6 / accepted as f64);
    let cores = |s: f64| if window_s > 0.0 { s / window_s } else { 0.0 };
    CpuReport {
        clock_ticks_per_second: hz,
        window_s,
        accepted,
        umsd_pid: probe.umsd_pid,
        postgres_scope: probe.postgres_scope(),
        postgres_processes: after.postgres.len(),
        umsd_cpu_s: umsd_s,
        postgres_cpu_s: pg_s,
        umsd_us_per_msg: umsd_s.and_then(per),
        umsd_plus_postgres_us_per_msg: umsd_s.and_then(|u| per(u + pg_s)),
        umsd_cores: umsd_s.map(cores),
        postgres_cores: cores(pg_s),
    }
}

/// Busy and total clock ticks of the whole machine from the first (`cpu`) line of
/// `/proc/stat`: busy is everything but `idle` and `iowait`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy and total ticks of the machine now.
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Cores the whole machine kept busy between two [`machine_ticks`] readings, out of
/// `cores`.
pub fn machine_busy_cores(
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    cores: usize,
) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let dt = t1.checked_sub(t0)?;
    (dt > 0).then(|| b1.saturating_sub(b0) as f64 / dt as f64 * cores as f64)
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let factor = match parts.next().unwrap_or("kB") {
        "kB" | "KB" | "kb" => 1024,
        "mB" | "MB" | "mb" => 1024 * 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(factor)
}

/// The resident set size of a process, in bytes.
pub fn read_rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "4242 (post gres) (x)) S 17 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 3 4 20 0 1 0 123456 1000000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.ppid, 17);
        assert_eq!(s.utime, 250);
        assert_eq!(s.stime, 75);
        assert_eq!(s.cutime, 3);
        assert_eq!(s.cstime, 4);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = read_stat(std::process::id()).unwrap();
        assert!(me.ppid > 0);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn delta_counts_new_processes_in_full() {
        let before = Snapshot {
            umsd: Some(100),
            postgres: [(1, 50), (2, 10), (3, 7)].into_iter().collect(),
        };
        let after = Snapshot {
            umsd: Some(300),
            // pid 3 exited (its time went into pid 1's cutime); pid 4 is new
            postgres: [(1, 80), (2, 15), (4, 5)].into_iter().collect(),
        };
        // pid 1 grew by 30, of which 7 is pid 3's time before the window
        assert_eq!(postgres_delta(&before, &after), 30 + 5 + 5 - 7);
        let probe = Probe {
            umsd_pid: Some(9),
            postmaster_pid: Some(1),
        };
        let r = report(&probe, &before, &after, 2.0, 1000);
        let hz = clock_ticks_per_second() as f64;
        let umsd_us = 200.0 / hz * 1e6 / 1000.0;
        assert!((r.umsd_us_per_msg.unwrap() - umsd_us).abs() < 1e-6);
        let both = (200.0 + 33.0) / hz * 1e6 / 1000.0;
        assert!((r.umsd_plus_postgres_us_per_msg.unwrap() - both).abs() < 1e-6);
        let none = report(&probe, &before, &after, 2.0, 0);
        assert_eq!(none.umsd_us_per_msg, None);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tumsd\nVmPeak:\t  900000 kB\nVmRSS:\t   81234 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(81_234 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12"), Some(12 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t1 GB"), None);
        let me = read_rss_bytes(std::process::id()).unwrap();
        assert!(me > 1024 * 1024, "{me}");
    }

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((160, 980)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        let (busy, total) = machine_ticks().unwrap();
        assert!(total >= busy);
        let b = machine_busy_cores(Some((100, 1000)), Some((600, 2000)), 2).unwrap();
        assert!((b - 1.0).abs() < 1e-9);
        assert_eq!(machine_busy_cores(None, Some((1, 2)), 2), None);
    }
}
