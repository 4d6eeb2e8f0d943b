//! Tests of the real `umsd` binary: the embedded PostgreSQL's life cycle and crash safety
//! under SIGKILL. Each test runs the daemon on its own data directory and port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod demo;
mod embedded;
mod fallback;
mod planning;
mod recovery;
mod schedule;

use std::fmt::Display;
use std::fs;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often [`eventually`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Looks at `check` every [`POLL_EVERY`] until it answers `Ok`, for at most `limit`; then
/// fails the test with `what()` and the last `Err`. The tests wait for what they expect to
/// happen through this, never for a fixed time.
pub async fn eventually<T, E, F, Fut>(
    limit: Duration,
    what: impl FnOnce() -> String,
    mut check: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?}: {} (last: {e})", what())
            }
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// A daemon process started from the built binary.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// Waits (for at most `limit`) until `t` is more than half a second past: a time that
/// must pass while umsd is down.
pub async fn until_past(t: chrono::DateTime<chrono::Utc>, limit: Duration) {
    eventually(
        limit,
        || format!("{t} to pass"),
        || async move {
            let late = chrono::Utc::now() - t;
            if late > chrono::Duration::milliseconds(500) {
                Ok(())
            } else {
                Err(late)
            }
        },
    )
    .await;
}

pub fn test_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("umsd.toml");
    fs::write(
        &path,
        format!(
            r#"admin_token = "t-admin"
[log]
filter = "info"
[database.embedded]
shared_buffers = "64MB"
[[apps]]
key = "demo"
secret = "demo-secret"
grants = ["inbox"]
[[channels]]
code = "inbox"
type = "inbox"
{extra}
"#
        ),
    )
    .unwrap();
    path
}

impl Daemon {
    /// Starts `umsd serve` on `dir/data`, logging to `dir/umsd.log` (appended).
    pub fn start(dir: &Path, port: u16) -> Daemon {
        let config = dir.join("umsd.toml");
        if !config.exists() {
            write_config(dir, "");
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("umsd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_umsd"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `/readyz` answers 200; panics with the log after `limit`.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let client = crate::http();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(res) = client.get(format!("{}/readyz", self.base())).send().await {
                if res.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "umsd exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!("umsd not ready after {limit:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of the first `/metrics` line starting with `name` (0 when there is none).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = http()
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("umsd.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!("umsd did not stop within {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pg_dir(&self) -> PathBuf {
        self.dir.join("data").join("pg")
    }

    /// The postmaster's pid if the embedded cluster is running.
    pub fn postmaster(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pg_dir().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(pid)
    }

    /// How many processes are attached to the shared memory of the cluster named in
    /// `postmaster.pid` (its System V segment; a segment already gone has none). `Ok(None)`
    /// when there is no pid file to name one.
    pub fn shm_attached(&self) -> Result<Option<u64>, String> {
        let Ok(text) = fs::read_to_string(self.pg_dir().join("postmaster.pid")) else {
            return Ok(None);
        };
        // Line 7: the segment's key and id.
        let id = text
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().nth(1))
            .ok_or_else(|| format!("no shared memory id in postmaster.pid: {text:?}"))?;
        let table = fs::read_to_string("/proc/sysvipc/shm").map_err(|e| e.to_string())?;
        // Columns: key shmid perms size cpid lpid nattch …
        let attached = table.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&id)).then(|| cols.get(6).and_then(|n| n.parse().ok()))
        });
        match attached {
            None => Ok(Some(0)),
            Some(Some(n)) => Ok(Some(n)),
            Some(None) => Err(format!("unreadable /proc/sysvipc/shm row for {id}")),
        }
    }

    /// A direct connection to the embedded cluster (while it runs).
    pub async fn db(&self) -> tokio_postgres::Client {
        let mut c = tokio_postgres::Config::new();
        c.host_path(self.pg_dir())
            .port(5432)
            .user("umsd")
            .dbname("umsd");
        let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Stops a cluster left running (after a test failure or a SIGKILL), then removes `dir`.
pub fn cleanup(dir: &Path) {
    let pg = dir.join("data").join("pg");
    if pg.join("postmaster.pid").exists() {
        if let Ok(bin) = umsd::embedded_pg::find_binaries() {
            let mut cmd = Command::new(bin.join("pg_ctl"));
            cmd.args(["-D"])
                .arg(&pg)
                .args(["-m", "immediate", "-w", "stop"]);
            use std::os::unix::process::CommandExt;
            if unsafe { libc::geteuid() } == 0 {
                let meta = fs::metadata(&pg).unwrap();
                use std::os::unix::fs::MetadataExt;
                cmd.uid(meta.uid()).gid(meta.gid());
            }
            let _ = cmd.output();
        }
    }
    let _ = fs::remove_dir_all(dir);
}

pub fn inbox_message(key: &str) -> serde_json::Value {
    serde_json::json!({
        "message_id": key,
        "audience": {"user_ids": ["u1"]},
        "channels": ["inbox"],
        "content": {"inbox": {"title": "t", "body": format!("body of {key}")}},
    })
}

/// An HTTP client for talking to the daemon under test (HTTPS-capable clients need the
/// process's TLS provider installed first).
pub fn http() -> reqwest::Client {
    http_builder().build().expect("HTTP client")
}

pub fn http_builder() -> reqwest::ClientBuilder {
    umsd_actors::providers::support::tls::init();
    reqwest::Client::builder()
}
