//! The embedded PostgreSQL: first start, restart, restart after SIGKILL (the cluster
//! still running), restart after the cluster itself was killed (stale postmaster.pid),
//! a postmaster.pid naming a pid that now belongs to another process, and the error when
//! no PostgreSQL binaries can be found.

use std::fs;
use std::time::Duration;

use reqwest::StatusCode;

use super::{cleanup, eventually, free_port, inbox_message, test_dir, Daemon};

async fn send(d: &Daemon, key: &str) -> StatusCode {
    crate::http()
        .post(format!("{}/v1/messages", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .json(&inbox_message(key))
        .send()
        .await
        .unwrap()
        .status()
}

async fn stored(d: &Daemon, key: &str) -> bool {
    let res = crate::http()
        .get(format!("{}/v1/messages/{key}", d.base()))
        .basic_auth("demo", Some("demo-secret"))
        .send()
        .await
        .unwrap();
    res.status() == StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_cluster_survives_every_kind_of_restart() {
    let dir = test_dir("embedded");
    let port = free_port();

    // First start: initdb, start, migrate.
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(90)).await;
    assert!(d.pg_dir().join("PG_VERSION").exists());
    assert!(d
        .log()
        .contains("initialising the embedded PostgreSQL cluster"));
    assert_eq!(send(&d, "m-1").await, StatusCode::ACCEPTED);

    // Graceful stop stops the cluster too.
    assert!(d.terminate(Duration::from_secs(60)), "clean exit");
    assert_eq!(d.postmaster(), None, "the cluster was stopped");

    // Restart: the same cluster, the same data, no second initdb.
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    assert!(stored(&d, "m-1").await);
    assert_eq!(d.log().matches("initialising the embedded").count(), 1);

    // SIGKILL: the postmaster lives on; the next start adopts it.
    d.kill9();
    let pid = d
        .postmaster()
        .expect("the cluster outlives a SIGKILLed umsd");
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    assert!(d.log().contains("adopting the running embedded PostgreSQL"));
    assert_eq!(d.postmaster(), Some(pid));
    assert!(stored(&d, "m-1").await);
    assert_eq!(send(&d, "m-2").await, StatusCode::ACCEPTED);

    // SIGKILL umsd and the postmaster: a stale postmaster.pid is left behind.
    d.kill9();
    // SAFETY: killing the test's own cluster.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    eventually(
        Duration::from_secs(5),
        || "the postmaster to die".into(),
        || std::future::ready(d.postmaster().map_or(Ok(()), Err)),
    )
    .await;
    // The processes it leaves behind notice it is gone and exit; the next start removes
    // the pid file, and with it postgres's own check that none is still attached.
    eventually(
        Duration::from_secs(10),
        || "the killed cluster's processes to exit".into(),
        || {
            std::future::ready(match d.shm_attached() {
                Ok(Some(0) | None) => Ok(()),
                Ok(Some(n)) => Err(format!("{n} attached")),
                Err(e) => panic!("{e}"),
            })
        },
    )
    .await;
    assert!(
        d.pg_dir().join("postmaster.pid").exists(),
        "stale pid file left"
    );
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(90)).await;
    assert!(stored(&d, "m-1").await && stored(&d, "m-2").await);

    // A postmaster.pid naming a live process that is not postgres (pid reuse).
    assert!(d.terminate(Duration::from_secs(60)));
    let pidfile = d.pg_dir().join("postmaster.pid");
    let fake = format!("{}\n{}\n", std::process::id(), d.pg_dir().display());
    fs::write(&pidfile, fake).unwrap();
    let mut d = Daemon::start(&dir, port);
    d.wait_ready(Duration::from_secs(60)).await;
    assert!(stored(&d, "m-2").await);
    assert!(d.terminate(Duration::from_secs(60)));
    assert_eq!(d.postmaster(), None);
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_postgres_binaries_are_one_clear_error() {
    let dir = test_dir("nobin");
    // The binaries' directory comes from the environment, as an operator would set it.
    let config = dir.join("umsd.toml");
    fs::write(
        &config,
        "[[apps]]\nkey = \"demo\"\nsecret = \"demo-secret\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_umsd"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("UMSD_DATABASE__EMBEDDED__BIN_DIR", "/nonexistent/pg/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not hold initdb, pg_ctl and postgres") && err.contains("database.url"),
        "{err}"
    );
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_and_migrate_commands() {
    let dir = test_dir("commands");
    let umsd = env!("CARGO_BIN_EXE_umsd");
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/demo.toml");
    let out = std::process::Command::new(umsd)
        .arg("check-config")
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.join("bad.toml");
    fs::write(&bad, "[http]\nlisten = \"127.0.0.1:1\"\nworkerz = 3\n").unwrap();
    let out = std::process::Command::new(umsd)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workerz"));

    // An environment override is checked like the file.
    let out = std::process::Command::new(umsd)
        .arg("check-config")
        .arg(&demo)
        .env("UMSD_RETENTION__DAYS", "61")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.days"));

    // migrate: starts the embedded cluster, applies the schema, stops the cluster.
    let out = std::process::Command::new(umsd)
        .args(["migrate", "--config"])
        .arg(&demo)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = format!(
        "migrations applied: {}",
        umsd_actors::store::migrate::MIGRATIONS.len()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&applied));
    assert!(
        !dir.join("data/pg/postmaster.pid").exists(),
        "the cluster was stopped"
    );
    let again = std::process::Command::new(umsd)
        .args(["migrate", "--config"])
        .arg(&demo)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("migrations applied: 0"));
    cleanup(&dir);
}
