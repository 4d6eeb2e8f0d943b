//! Shared test support: a throwaway PostgreSQL cluster per test process (started on first
//! use with the machine's binaries, stopped when the process exits) and a fresh database
//! per test.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use umsd::embedded_pg::{ensure_database, EmbeddedOptions, EmbeddedPg};

struct Cluster {
    pg: EmbeddedPg,
    root: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

extern "C" fn stop_cluster() {
    if let Some(c) = CLUSTER.get() {
        c.pg.stop_immediately();
        let _ = std::fs::remove_dir_all(&c.root);
    }
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("testpg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pg = EmbeddedPg::start(
            &root,
            &EmbeddedOptions {
                shared_buffers: "128MB".into(),
                max_connections: 300,
                fsync: false,
                bin_dir: None,
            },
        )
        .expect("start the test PostgreSQL cluster");
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(stop_cluster);
        }
        Cluster { pg, root }
    })
}

/// A new empty database on the shared test cluster; returns its connection settings.
pub async fn fresh_database() -> tokio_postgres::Config {
    let c = cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    ensure_database(&c.pg, &name)
        .await
        .expect("create test database");
    c.pg.pg_config(&name)
}

/// The same settings as a key=value string for `database.url`.
pub fn url_of(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        None => String::new(),
    };
    format!(
        "host={} port={} user={} dbname={}",
        host,
        pg.get_ports().first().copied().unwrap_or(5432),
        pg.get_user().unwrap_or("umsd"),
        pg.get_dbname().unwrap_or("umsd"),
    )
}

/// A plain client on a test database.
pub async fn connect(pg: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = pg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}
