//! The system under test: either a umsd the harness starts itself (fresh data directory,
//! config written by the harness, readiness wait on `/readyz` with a deadline, SIGTERM and
//! wait at the end) or one that is already running. Either way the target must be on
//! loopback: anything that is not 127.0.0.0/8, ::1 or `localhost` is refused.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::openloop::Endpoint;

/// The config the harness writes for a daemon it starts: the demo app, one inbox channel,
/// and the null route.
pub const DEFAULT_CONFIG: &str = r#"# Written by umsd-loadtest.
admin_token = "demo-admin"

[bench]
null_route = true

[[apps]]
key = "demo"
name = "Demo"
secret = "demo-secret"
grants = ["inbox"]

[[channels]]
code = "inbox"
type = "inbox"
"#;

/// Checks that `url` is plain HTTP on a loopback host and resolves it to an endpoint.
pub async fn loopback_endpoint(url: &str) -> Result<(reqwest::Url, Endpoint)> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad --target {url}"))?;
    if parsed.scheme() != "http" {
        bail!("--target must be an http:// URL (got {})", parsed.scheme());
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| anyhow!("--target has no port"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow!("--target has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match bare.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) if bare.eq_ignore_ascii_case("localhost") => {
            // Resolve, but accept only loopback answers (IPv4 preferred).
            let addrs = tokio::net::lookup_host(("localhost", port))
                .await
                .context("resolving localhost")?;
            let mut found = None;
            for a in addrs {
                if a.ip().is_loopback() {
                    found = Some(a.ip());
                    if a.is_ipv4() {
                        break;
                    }
                }
            }
            found.ok_or_else(|| anyhow!("localhost does not resolve to a loopback address"))?
        }
        Err(_) => bail!("refusing --target host `{host}`: only 127.0.0.0/8, ::1 and localhost"),
    };
    if !is_loopback(ip) {
        bail!("refusing --target host {ip}: only 127.0.0.0/8, ::1 and localhost");
    }
    let host_header = format!("{host}:{port}");
    Ok((
        parsed,
        Endpoint {
            addr: SocketAddr::new(ip, port),
            host: host_header,
        },
    ))
}

/// 127.0.0.0/8 or ::1.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A free loopback port (bound and released; the daemon binds it right after).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub bin: PathBuf,
    /// Use this config file instead of writing [`DEFAULT_CONFIG`].
    pub config: Option<PathBuf>,
    /// Write this config instead of [`DEFAULT_CONFIG`] (when `config` is not given).
    pub config_text: Option<String>,
    /// Use this data directory (kept); otherwise a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Keep a temporary data directory afterwards.
    pub keep: bool,
    pub port: Option<u16>,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    /// Where the written config and the daemon's log go.
    pub out_dir: PathBuf,
}

/// A daemon this harness started. Stop it with [`Daemon::stop`]; dropping it without
/// that still sends SIGTERM and waits (blocking), as a last resort.
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    pub base_url: String,
    pub endpoint: Endpoint,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    remove_data_dir: bool,
    stop_timeout: Duration,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The embedded cluster's directory (socket and `postmaster.pid`).
    pub fn pg_dir(&self) -> PathBuf {
        self.data_dir.join("pg")
    }

    /// Starts umsd and waits until `/readyz` answers 200.
    pub async fn start(opts: &StartOptions) -> Result<Daemon> {
        let bin = std::path::absolute(&opts.bin)?;
        if !bin.is_file() {
            bail!(
                "umsd binary {} not found (build it with `cargo build --release`, or pass \
                 --umsd-bin, or use --target for a running daemon)",
                bin.display()
            );
        }
        let (data_dir, remove_data_dir) = match &opts.data_dir {
            Some(d) => (d.clone(), false),
            None => {
                let d = std::env::temp_dir().join(format!(
                    "umsd-loadtest-{}-{}",
                    std::process::id(),
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                (d, !opts.keep)
            }
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = std::path::absolute(&data_dir)?;
        std::fs::create_dir_all(&opts.out_dir)?;
        let config_path = match &opts.config {
            Some(c) => std::path::absolute(c)?,
            None => {
                let p = std::path::absolute(opts.out_dir.join("umsd.toml"))?;
                let text = opts.config_text.as_deref().unwrap_or(DEFAULT_CONFIG);
                std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
                p
            }
        };
        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = std::path::absolute(opts.out_dir.join("umsd.log"))?;
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log2 = log.try_clone()?;

        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(listen.to_string())
            // The log is a file: no colour codes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own process group: a Ctrl-C at the terminal reaches only the harness,
            // which then stops the daemon in order.
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the daemon exited at once"))?;
        let mut daemon = Daemon {
            child: Some(child),
            pid,
            base_url: format!("http://{listen}"),
            endpoint: Endpoint {
                addr: listen,
                host: listen.to_string(),
            },
            data_dir,
            config_path,
            log_path,
            remove_data_dir,
            stop_timeout: opts.stop_timeout,
        };
        if let Err(e) = daemon.wait_ready(opts.ready_timeout).await {
            let tail = log_tail(&daemon.log_path, 30);
            let stopped = daemon.stop().await;
            let mut msg = format!("{e:#}");
            if let Err(s) = stopped {
                msg.push_str(&format!("; stopping it also failed: {s:#}"));
            }
            bail!("umsd did not become ready: {msg}\n--- last lines of its log ---\n{tail}");
        }
        Ok(daemon)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + timeout;
        let client = crate::http_builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("umsd exited during start-up with {status}");
                }
            }
            let last = match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("/readyz answered {}", r.status()),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!("not ready after {:?} ({last})", timeout);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM, then wait up to the stop timeout (SIGKILL after it), then remove a
    /// temporary data directory once its PostgreSQL is gone.
    pub async fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            self.remove_data_dir();
            return Ok(None);
        };
        let status = match child.try_wait()? {
            Some(s) => s,
            None => {
                signal(self.pid, libc::SIGTERM);
                match tokio::time::timeout(self.stop_timeout, child.wait()).await {
                    Ok(s) => s?,
                    Err(_) => {
                        eprintln!(
                            "umsd (pid {}) still running {:?} after SIGTERM: killing it",
                            self.pid, self.stop_timeout
                        );
                        child.kill().await?;
                        child.wait().await?
                    }
                }
            }
        };
        wait_postgres_gone(&self.pg_dir(), Duration::from_secs(30)).await;
        self.remove_data_dir();
        Ok(Some(status))
    }

    fn remove_data_dir(&mut self) {
        if !self.remove_data_dir {
            return;
        }
        self.remove_data_dir = false;
        if crate::cpu::postmaster_pid(&self.pg_dir()).is_some_and(pid_alive) {
            eprintln!(
                "PostgreSQL of {} is still running: keeping the directory",
                self.data_dir.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
            eprintln!("could not remove {}: {e}", self.data_dir.display());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            signal(self.pid, libc::SIGTERM);
            let deadline = std::time::Instant::now() + self.stop_timeout;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain kill(2) on a pid this harness started.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(p, 0) == 0 }
}

/// Waits until the cluster in `pg_dir` has no live postmaster (or the deadline passes).
async fn wait_postgres_gone(pg_dir: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while let Some(pid) = crate::cpu::postmaster_pid(pg_dir) {
        if !pid_alive(pid) || Instant::now() >= deadline {
            if pid_alive(pid) {
                eprintln!("PostgreSQL (pid {pid}) is still running after umsd stopped");
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of a file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        let (_, ep) = loopback_endpoint("http://127.0.0.1:8080").await.unwrap();
        assert_eq!(ep.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(ep.host, "127.0.0.1:8080");
        let (_, ep) = loopback_endpoint("http://127.1.2.3:9/").await.unwrap();
        assert_eq!(ep.addr.port(), 9);
        let (_, ep) = loopback_endpoint("http://[::1]:8080").await.unwrap();
        assert!(ep.addr.ip().is_loopback());
        let (_, ep) = loopback_endpoint("http://localhost:8080").await.unwrap();
        assert!(ep.addr.ip().is_loopback());
        assert_eq!(ep.host, "localhost:8080");
        let (_, ep) = loopback_endpoint("http://127.0.0.1").await.unwrap();
        assert_eq!(ep.addr.port(), 80);

        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.1",
            "http://example.com:8080",
            "http://localhost.example.com",
            "http://[::2]:80",
            "http://0.0.0.0:8080",
            "https://127.0.0.1:8443",
            "not a url",
        ] {
            assert!(loopback_endpoint(bad).await.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn default_config_has_the_null_route_and_the_demo_app() {
        assert!(DEFAULT_CONFIG.contains("null_route = true"));
        assert!(DEFAULT_CONFIG.contains("key = \"demo\""));
        assert!(DEFAULT_CONFIG.contains("secret = \"demo-secret\""));
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let p = std::env::temp_dir().join(format!("umsd-lt-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(log_tail(&p, 2), "c\nd");
        assert_eq!(log_tail(&p, 10), "a\nb\nc\nd");
        std::fs::remove_file(&p).unwrap();
        assert!(log_tail(&p, 2).starts_with("(cannot read"));
    }
}
