//! The embedded default: a private PostgreSQL cluster under `<data_dir>/pg`, run with the
//! machine's own PostgreSQL binaries.
//!
//! * first start: `initdb` (as an unprivileged user when umsd runs as root, since initdb
//!   refuses root), then start;
//! * later starts: reuse the cluster, whether it is still running (umsd was SIGKILLed and
//!   the postmaster lived on) or stopped, including after a crash that left a stale
//!   `postmaster.pid`;
//! * it listens only on a Unix socket inside its data directory: no TCP port to collide;
//! * shutdown: `pg_ctl stop -m fast`.
//!
//! Everything here is blocking process work, done before the actor system starts or at
//! the very end; it never runs on an async worker.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The superuser initdb creates and umsd connects as (trust auth over the socket only).
pub const DB_USER: &str = "umsd";
pub const DB_NAME: &str = "umsd";
const PORT: u16 = 5432;
/// Written once initdb has finished, so a half-made cluster is recognised and redone.
const INIT_MARKER: &str = "umsd-initialized";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or \
         under /usr/lib/postgresql/*/bin. Install PostgreSQL (e.g. `apt-get install \
         postgresql`) or set database.url (UMSD_DATABASE__URL) to use an existing server"
    )]
    NoBinaries,
    #[error(
        "database.embedded.bin_dir {0} does not hold initdb, pg_ctl and postgres. Install \
         PostgreSQL, fix bin_dir, or set database.url to use an existing server"
    )]
    NoBinariesIn(PathBuf),
    #[error(
        "umsd runs as root and initdb refuses to: no unprivileged `postgres` user exists to \
         own the cluster. Create one (`useradd -r postgres`), run umsd as another user, or \
         set database.url"
    )]
    NoUnprivilegedUser,
    #[error("the socket path {0} is longer than the 107 bytes Unix sockets allow; choose a shorter data_dir")]
    SocketPathTooLong(PathBuf),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub shared_buffers: String,
    pub max_connections: u32,
    /// Off only for throwaway test clusters.
    pub fsync: bool,
    /// Where initdb, pg_ctl and postgres are; `None` searches PATH, then
    /// /usr/lib/postgresql/*/bin (highest version).
    pub bin_dir: Option<PathBuf>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            shared_buffers: "256MB".into(),
            max_connections: 100,
            fsync: true,
            bin_dir: None,
        }
    }
}

/// A running private cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedPg {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    owner: Option<(u32, u32)>,
    /// True when this process found the cluster already running and adopted it.
    pub adopted: bool,
}

impl EmbeddedPg {
    /// Initialises (first time) and starts the cluster in `<root>/pg`, or adopts it if it
    /// is already running.
    pub fn start(root: &Path, options: &EmbeddedOptions) -> Result<Self, EmbeddedPgError> {
        let bin_dir = match &options.bin_dir {
            Some(dir)
                if ["initdb", "pg_ctl", "postgres"]
                    .iter()
                    .all(|b| dir.join(b).is_file()) =>
            {
                dir.clone()
            }
            Some(dir) => return Err(EmbeddedPgError::NoBinariesIn(dir.clone())),
            None => find_binaries()?,
        };
        fs::create_dir_all(root).map_err(|e| io(format!("create {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| io(format!("resolve {}", root.display()), e))?;
        let data_dir = root.join("pg");
        let socket = data_dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > 107 {
            return Err(EmbeddedPgError::SocketPathTooLong(socket));
        }
        let owner = unprivileged_owner()?;
        let mut pg = Self {
            bin_dir,
            data_dir,
            owner,
            adopted: false,
        };
        if !pg.data_dir.join(INIT_MARKER).exists() {
            pg.initdb(&root)?;
        }
        if pg.running_postmaster().is_some() {
            tracing::info!(dir = %pg.data_dir.display(), "adopting the running embedded PostgreSQL");
            pg.adopted = true;
        } else {
            pg.remove_stale_lock_files();
            pg.pg_ctl_start(options)?;
        }
        pg.wait_for_socket(Duration::from_secs(60))?;
        Ok(pg)
    }

    /// Connection settings for the cluster (the socket directory as host).
    pub fn pg_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.data_dir)
            .port(PORT)
            .user(DB_USER)
            .dbname(dbname);
        c
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `pg_ctl stop -m fast`: waits for the cluster to shut down.
    pub fn stop(&self) -> Result<(), EmbeddedPgError> {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )?;
        if !out.status.success() && self.running_postmaster().is_some() {
            return Err(command_error("pg_ctl stop", &out));
        }
        Ok(())
    }

    /// `pg_ctl stop -m immediate`, for throwaway clusters.
    pub fn stop_immediately(&self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    fn initdb(&self, root: &Path) -> Result<(), EmbeddedPgError> {
        if self.data_dir.exists() {
            // An earlier initdb did not finish: nothing in it is worth keeping.
            tracing::warn!(dir = %self.data_dir.display(), "removing an unfinished cluster");
            fs::remove_dir_all(&self.data_dir)
                .map_err(|e| io(format!("remove {}", self.data_dir.display()), e))?;
        }
        fs::create_dir_all(&self.data_dir)
            .map_err(|e| io(format!("create {}", self.data_dir.display()), e))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io(format!("chmod {}", self.data_dir.display()), e))?;
        if let Some((uid, gid)) = self.owner {
            chown(&self.data_dir, uid, gid)?;
            // The unprivileged owner must be able to reach its directory.
            make_traversable(root)?;
        }
        tracing::info!(dir = %self.data_dir.display(), "initialising the embedded PostgreSQL cluster");
        let out = self.run(
            "initdb",
            &[
                "-D",
                &self.data_dir.to_string_lossy(),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        if !out.status.success() {
            return Err(command_error("initdb", &out));
        }
        fs::write(self.data_dir.join(INIT_MARKER), b"")
            .map_err(|e| io("write the init marker".into(), e))?;
        Ok(())
    }

    fn pg_ctl_start(&self, options: &EmbeddedOptions) -> Result<(), EmbeddedPgError> {
        let dir = self.data_dir.to_string_lossy().into_owned();
        let mut settings = format!(
            "-c listen_addresses='' -c unix_socket_directories='{dir}' -c port={PORT} \
             -c shared_buffers={} -c max_connections={}",
            options.shared_buffers, options.max_connections
        );
        if !options.fsync {
            settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = self.data_dir.join("server.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &dir,
                "-l",
                &log.to_string_lossy(),
                "-o",
                &settings,
                "-w",
                "-t",
                "120",
                "start",
            ],
        )?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log)
                .map(|s| {
                    let lines: Vec<&str> = s.lines().collect();
                    lines[lines.len().saturating_sub(10)..].join("\n")
                })
                .unwrap_or_default();
            let mut err = command_error("pg_ctl start", &out);
            if let EmbeddedPgError::Command { detail, .. } = &mut err {
                detail.push_str("\nserver.log:\n");
                detail.push_str(&tail);
            }
            return Err(err);
        }
        Ok(())
    }

    /// The postmaster's pid if `postmaster.pid` names a live postgres process.
    fn running_postmaster(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(pid)
    }

    /// After a crash, `postmaster.pid` may name a pid that now belongs to something else;
    /// postgres would then refuse to start. Only called when no postmaster of ours runs.
    fn remove_stale_lock_files(&self) {
        for name in ["postmaster.pid".to_owned(), format!(".s.PGSQL.{PORT}.lock")] {
            let path = self.data_dir.join(name);
            if path.exists() {
                tracing::warn!(file = %path.display(), "removing a stale lock file");
                let _ = fs::remove_file(path);
            }
        }
    }

    fn wait_for_socket(&self, limit: Duration) -> Result<(), EmbeddedPgError> {
        let socket = self.data_dir.join(format!(".s.PGSQL.{PORT}"));
        let deadline = Instant::now() + limit;
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedPgError::Command {
                    what: "waiting for the embedded PostgreSQL".into(),
                    detail: format!("no server on {} after {limit:?}", socket.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, EmbeddedPgError> {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.args(args)
            .current_dir(&self.data_dir)
            // A process group of its own: a Ctrl-C aimed at umsd must not reach the
            // postmaster before umsd has flushed.
            .process_group(0)
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid).env_remove("HOME");
        }
        cmd.output()
            .map_err(|e| io(format!("run {}", self.bin_dir.join(program).display()), e))
    }
}

/// The directory holding initdb, pg_ctl and postgres: from PATH first, then the highest
/// version under /usr/lib/postgresql.
pub fn find_binaries() -> Result<PathBuf, EmbeddedPgError> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or(EmbeddedPgError::NoBinaries)
}

/// When running as root: the uid/gid of the `postgres` user, who will own the cluster.
fn unprivileged_owner() -> Result<Option<(u32, u32)>, EmbeddedPgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").map_err(|_| EmbeddedPgError::NoUnprivilegedUser)?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two
    // integers out immediately and use nothing else from it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(EmbeddedPgError::NoUnprivilegedUser);
    }
    // SAFETY: pw is non-null and points at a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), EmbeddedPgError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| io(format!("chown {}", path.display()), e))
}

/// Adds o+x to `dir` and its ancestors that lack it, so the cluster's owner can reach
/// `<dir>/pg`. Only search permission is granted, never read or write.
fn make_traversable(dir: &Path) -> Result<(), EmbeddedPgError> {
    for d in dir.ancestors() {
        let Ok(meta) = fs::metadata(d) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o001))
                .map_err(|e| io(format!("chmod o+x {}", d.display()), e))?;
        }
    }
    Ok(())
}

fn io(what: String, e: std::io::Error) -> EmbeddedPgError {
    EmbeddedPgError::Io(what, e)
}

fn command_error(what: &str, out: &Output) -> EmbeddedPgError {
    let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if detail.is_empty() {
        detail = stdout.trim().to_owned();
    }
    EmbeddedPgError::Command {
        what: what.into(),
        detail: format!("{} ({})", detail, out.status),
    }
}

/// Creates database `name` on the cluster if it does not exist yet.
pub async fn ensure_database(pg: &EmbeddedPg, name: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = pg
        .pg_config("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    let task = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // The name is ours (a constant or a test's generated name), never user input.
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
    }
    drop(client);
    let _ = task.await;
    Ok(())
}
