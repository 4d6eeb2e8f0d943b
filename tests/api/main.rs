//! Black-box tests of the HTTP API: each test starts the real application (HTTP server,
//! actors, store) on a free port against a fresh database on a real PostgreSQL cluster.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

#[path = "../support/pg.rs"]
mod common;

mod admin_ops;
mod batch;
mod channels;
mod delivery;
mod failures;
mod fallback;
mod hooks;
mod recall;
mod schedule;
mod send;
mod sms;
mod strategies;
mod users;
mod windows;
mod withdraw;

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use umsd::config::{AppConfig, ChannelSection, Config};
use umsd::server::{self, Running};
use umsd_actors::domain::{ChannelCode, ChannelType};

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub pg: tokio_postgres::Config,
    pub running: Option<Running>,
}

pub const ADMIN: &str = "test-admin";
pub const DEMO: (&str, &str) = ("demo", "demo-secret");

fn channel(code: &str, ty: &str, enabled: bool) -> ChannelSection {
    ChannelSection {
        code: ChannelCode::parse(code).unwrap(),
        channel_type: ChannelType::parse(ty).unwrap(),
        enabled,
        rate_per_second: None,
        burst: None,
        pool_size: None,
        settings: json!({}),
    }
}

/// The configuration every test starts from: apps `demo` and `other`, channels `inbox`,
/// `sms`, `email` and a switched-off `off`.
pub fn base_config(pg: &tokio_postgres::Config) -> Config {
    let mut c = Config::default();
    c.admin_token = ADMIN.into();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.workers = 1;
    c.database.url = common::url_of(pg);
    c.database.pool_size = 8;
    c.database.wait_timeout_ms = 1000;
    // Generous: with every test of this binary starting its own daemon on two cores, a new
    // connection can take over a second; a refused connection still fails at once.
    c.database.connect_timeout_ms = 5000;
    c.log.filter = "warn".into();
    c.bench.null_route = true;
    c.channels = vec![
        channel("inbox", "inbox", true),
        // A gateway that is never there: its deliveries stay queued.
        ChannelSection {
            settings: json!({"host": "127.0.0.1", "port": 9, "account": "900001",
                             "password": "888888", "src_id": "10690001"}),
            ..channel("sms", "sms_cmpp", true)
        },
        ChannelSection {
            settings: json!({"host": "127.0.0.1", "port": 9, "tls": "none",
                             "from": "UMS <noreply@example.com>"}),
            ..channel("email", "email", true)
        },
        channel("off", "inbox", false),
    ];
    c.apps = vec![
        AppConfig {
            key: "demo".into(),
            name: None,
            secret: "demo-secret".into(),
            enabled: true,
            grants: vec!["inbox".into(), "sms".into(), "email".into(), "off".into()],
        },
        AppConfig {
            key: "other".into(),
            name: None,
            secret: "other-secret".into(),
            enabled: true,
            grants: vec!["inbox".into()],
        },
    ];
    c
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let pg = common::fresh_database().await;
        let mut config = base_config(&pg);
        tweak(&mut config);
        config.validate().expect("valid test config");
        let running = server::start(config).await.expect("start umsd");
        umsd_actors::providers::support::tls::init();
        Self {
            base: format!("http://{}", running.addr),
            http: reqwest::Client::new(),
            pg,
            running: Some(running),
        }
    }

    /// The root of the running actor tree.
    pub fn supervisor(&self) -> actix::Addr<umsd_actors::supervisor::Supervisor> {
        self.running.as_ref().expect("running").supervisor()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_as(
        &self,
        app: (&str, &str),
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let res = self
            .http
            .post(self.url(path))
            .basic_auth(app.0, Some(app.1))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn send(&self, body: &Value) -> (StatusCode, Value) {
        self.post_as(("demo", "demo-secret"), "/v1/messages", body)
            .await
    }

    pub async fn get_as(&self, app: (&str, &str), path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(self.url(path))
            .basic_auth(app.0, Some(app.1))
            .send()
            .await
            .expect("request");
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }

    pub async fn put_as(&self, app: (&str, &str), path: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .put(self.url(path))
            .basic_auth(app.0, Some(app.1))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = res.status();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(DEMO, path).await
    }

    /// `DELETE path` as `demo`.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .delete(self.url(path))
            .basic_auth(DEMO.0, Some(DEMO.1))
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` (as `demo`) until `done` holds for the body, for at most `secs`.
    pub async fn wait_for(&self, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let done = &done;
        eventually(secs, path, || async move {
            let (_, body) = self.get(path).await;
            if done(&body) {
                Ok(body)
            } else {
                Err(body)
            }
        })
        .await
    }

    /// Waits until `done` holds for what `sql` (one count) answers; returns that count.
    pub async fn wait_count(&self, sql: &str, secs: u64, done: impl Fn(i64) -> bool) -> i64 {
        let db = &self.db().await;
        let done = &done;
        eventually(secs, sql, || async move {
            let got: i64 = db.query_one(sql, &[]).await.unwrap().get(0);
            if done(got) {
                Ok(got)
            } else {
                Err(got)
            }
        })
        .await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        common::connect(&self.pg).await
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Messages stored in all.
    pub async fn stored(&self) -> i64 {
        self.count("SELECT count(*) FROM messages").await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// How often [`poll`] looks again.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Looks at `check` every [`POLL_EVERY`] until it answers `Ok`, for at most `limit`; after
/// that, its last `Err`. The tests wait for what they expect to happen through this (or
/// [`eventually`]), never for a fixed time.
pub async fn poll<T, E, F, Fut>(limit: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// [`poll`] for at most `secs`, failing the test with `what` and the last answer after.
pub async fn eventually<T, E, F, Fut>(secs: u64, what: &str, check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match poll(Duration::from_secs(secs), check).await {
        Ok(v) => v,
        Err(last) => panic!("timed out after {secs} s waiting for {what}: last answer {last}"),
    }
}

/// A valid single-recipient inbox send.
pub fn inbox_message(key: Option<&str>, user: &str) -> Value {
    let mut v = json!({
        "audience": {"user_ids": [user]},
        "channels": ["inbox"],
        "content": {"inbox": {"title": "Order shipped", "body": "Your order has shipped"}},
    });
    if let Some(k) = key {
        v["message_id"] = json!(k);
    }
    v
}

/// Asserts the fixed error shape and returns (code, field).
pub fn error_of(body: &Value) -> (String, Option<String>) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "error without message: {body}");
    (
        e["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no code: {body}"))
            .to_owned(),
        e["field"].as_str().map(str::to_owned),
    )
}
