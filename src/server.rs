//! Wiring: database (embedded or configured), migrations, bootstrap, the actor tree and
//! the HTTP server — started in that order, stopped in reverse.
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (each of
//! them waits for its commit), drain the ingest, stop the actors, stop the private
//! PostgreSQL.

use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::ServerHandle;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use umsd_actors::directory::Directory;
use umsd_actors::domain::ids::IdGenerator;
use umsd_actors::scheduler::ScheduleChanged;
use umsd_actors::store::{migrate, PoolSettings, Store};
use umsd_actors::supervisor::{GetIngest, GetReceipts, Shutdown, Supervisor, SupervisorConfig};

use crate::config::Config;
use crate::embedded_pg::{self, EmbeddedOptions, EmbeddedPg};
use crate::http::{self, AppState};
use crate::telemetry;

/// The database umsd talks to, and the private cluster behind it if there is one.
pub struct Database {
    pub pg: tokio_postgres::Config,
    pub embedded: Option<EmbeddedPg>,
}

/// Starts the embedded cluster when no `database.url` is configured, else parses the URL.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let (mut pg, embedded) = if config.database.url.trim().is_empty() {
        let root = config.data_dir.clone();
        let options = EmbeddedOptions {
            shared_buffers: config.database.embedded.shared_buffers.clone(),
            max_connections: config.database.embedded.max_connections,
            fsync: true,
            bin_dir: Some(config.database.embedded.bin_dir.clone())
                .filter(|d| !d.as_os_str().is_empty()),
        };
        let cluster = tokio::task::spawn_blocking(move || EmbeddedPg::start(&root, &options))
            .await
            .context("embedded PostgreSQL start-up panicked")??;
        embedded_pg::ensure_database(&cluster, embedded_pg::DB_NAME)
            .await
            .context("cannot create the umsd database in the embedded cluster")?;
        (cluster.pg_config(embedded_pg::DB_NAME), Some(cluster))
    } else {
        let pg = tokio_postgres::Config::from_str(config.database.url.trim())
            .context("database.url is not a valid PostgreSQL URL or key=value string")?;
        (pg, None)
    };
    pg.options(format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout=60000",
        config.database.statement_timeout_ms
    ));
    Ok(Database { pg, embedded })
}

impl Database {
    /// Stops the private cluster if there is one and the config says so.
    pub async fn close(self, config: &Config) {
        if let Some(cluster) = self.embedded {
            if config.database.embedded.stop_on_exit {
                tracing::info!("stopping the embedded PostgreSQL");
                match tokio::task::spawn_blocking(move || cluster.stop()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot stop the embedded PostgreSQL")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "stopping the embedded PostgreSQL panicked")
                    }
                }
            }
        }
    }
}

pub fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        max_size: config.database.pool_size,
        wait_timeout: Duration::from_millis(config.database.wait_timeout_ms),
        connect_timeout: Duration::from_millis(config.database.connect_timeout_ms),
    }
}

/// Applies pending migrations; returns how many ran.
pub async fn migrate(store: &Store) -> anyhow::Result<usize> {
    let mut client = store
        .client()
        .await
        .context("cannot connect to PostgreSQL")?;
    let client: &mut tokio_postgres::Client = &mut client;
    Ok(migrate::run(client).await?)
}

/// A running umsd: the HTTP server, the actor tree and the database behind them.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    server: ServerHandle,
    server_task: tokio::task::JoinHandle<std::io::Result<()>>,
    supervisor: Addr<Supervisor>,
    database: Option<Database>,
    simulators: Simulators,
    config: Config,
}

/// The bundled provider simulators a demo configuration asks for.
#[derive(Default)]
pub struct Simulators {
    http: Vec<umsd_sim::SimHandle>,
    smtp: Option<umsd_sim::smtp::SmtpHandle>,
    ismg: Option<umsd_sim::ismg::IsmgHandle>,
}

impl Simulators {
    /// Starts every configured simulator (each on its own thread and runtime).
    pub fn start(config: &Config) -> anyhow::Result<Self> {
        let mut sims = Simulators::default();
        for sim in &config.simulators {
            let handle = umsd_sim::start(sim.clone()).with_context(|| {
                format!("cannot start the {} simulator on {}", sim.kind, sim.listen)
            })?;
            tracing::info!(kind = %sim.kind, url = %handle.url(), "simulator started");
            sims.http.push(handle);
        }
        if let Some(smtp) = &config.smtp_simulator {
            let handle = umsd_sim::smtp::start(smtp.clone())
                .with_context(|| format!("cannot start the SMTP simulator on {}", smtp.listen))?;
            tracing::info!(addr = %handle.addr(), "SMTP simulator started");
            sims.smtp = Some(handle);
        }
        if let Some(ismg) = &config.ismg_simulator {
            let handle = umsd_sim::ismg::start(ismg.clone())
                .with_context(|| format!("cannot start the CMPP simulator on {}", ismg.listen))?;
            tracing::info!(addr = %handle.addr(), "CMPP gateway simulator started");
            sims.ismg = Some(handle);
        }
        Ok(sims)
    }

    pub fn stop(self) {
        for s in self.http {
            s.shutdown();
        }
        if let Some(s) = self.smtp {
            s.shutdown();
        }
        if let Some(s) = self.ismg {
            s.shutdown();
        }
    }
}

/// Starts everything. Must run inside an actix `System`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let simulators = Simulators::start(&config)?;
    let database = open_database(&config).await?;
    match start_on(config.clone(), &database).await {
        Ok((addr, store, server, server_task, supervisor)) => Ok(Running {
            addr,
            store,
            server,
            server_task,
            supervisor,
            database: Some(database),
            simulators,
            config,
        }),
        Err(e) => {
            simulators.stop();
            database.close(&config).await;
            Err(e)
        }
    }
}

type Started = (
    SocketAddr,
    Store,
    ServerHandle,
    tokio::task::JoinHandle<std::io::Result<()>>,
    Addr<Supervisor>,
);

async fn start_on(config: Config, database: &Database) -> anyhow::Result<Started> {
    let metrics = telemetry::metrics()?;
    let store = Store::new(database.pg.clone(), &pool_settings(&config))?;
    let applied = migrate(&store).await?;
    tracing::info!(
        applied,
        version = migrate::latest_version(),
        "schema is current"
    );
    store
        .ensure_partitions()
        .await
        .context("cannot create day partitions")?;
    store
        .bootstrap(&config.channel_specs(), &config.app_specs())
        .await
        .context("cannot apply the configured apps and channels")?;
    let directory = Arc::new(Directory::load(&store).await?);

    let schedule_changed = ScheduleChanged::default();
    let supervisor = Supervisor::new(
        store.clone(),
        directory.clone(),
        SupervisorConfig {
            ingest: config.ingest_config(),
            retention_days: config.retention.days,
            directory_refresh: Duration::from_secs(10),
            partition_upkeep: Duration::from_secs(3600),
            channel_arbiters: config.delivery.channel_arbiters,
            receipt_grace: Duration::from_secs(config.delivery.receipt_grace_seconds),
            schedule_changed: schedule_changed.clone(),
        },
    )
    .start();
    let ingest = supervisor
        .send(GetIngest)
        .await
        .context("the supervisor did not start")?
        .context("the ingest did not start")?;
    let receipts = supervisor
        .send(GetReceipts)
        .await
        .context("the supervisor did not start")?
        .context("the status writer did not start")?;

    let ready = Arc::new(AtomicBool::new(false));
    let state = web::Data::new(AppState {
        store: store.clone(),
        directory,
        ingest,
        supervisor: supervisor.clone(),
        receipts,
        admin_token: config.admin_token.clone(),
        ready: ready.clone(),
        metrics,
        bench_ids: IdGenerator::new(config.node_id),
        retention_days: config.retention.days,
        recall_window: chrono::Duration::seconds(
            i64::try_from(config.delivery.recall_window_seconds).unwrap_or(i64::MAX),
        ),
        schedule_changed,
    });
    let listener = TcpListener::bind(config.http.listen)
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let bench = config.bench.null_route;
    let workers = if config.http.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.http.workers
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(http::track))
            .configure(|cfg| http::configure(cfg, bench))
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .max_connections(config.http.max_connections)
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(config.http.shutdown_timeout_seconds)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    ready.store(true, Ordering::Release);
    if bench {
        tracing::warn!("the benchmark null route POST /bench/messages is enabled");
    }
    tracing::info!(%addr, "umsd is listening");
    if config.hints {
        print_hints(&config, addr);
    }
    Ok((addr, store, handle, server_task, supervisor))
}

impl Running {
    /// The root of the actor tree, to reach the actors behind the front door.
    pub fn supervisor(&self) -> Addr<Supervisor> {
        self.supervisor.clone()
    }

    /// Graceful stop: no new connections, in-flight requests finish (and are committed),
    /// the ingest drains, the actors stop, the private cluster stops.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down: no new requests");
        self.server.stop(true).await;
        let _ = (&mut self.server_task).await;
        tracing::info!("draining the ingest");
        let _ = self.supervisor.send(Shutdown).await;
        std::mem::take(&mut self.simulators).stop();
        self.store.close();
        if let Some(db) = self.database.take() {
            db.close(&self.config).await;
        }
        tracing::info!("umsd stopped");
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        self.shutdown().await;
        Ok(())
    }
}

/// Content for a channel type in the printed examples.
fn example_content(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "inbox" => r#"{"title":"Hello","body":"Your order has shipped"}"#,
        "email" => r#"{"subject":"Hello","text":"Your order has shipped"}"#,
        "dingtalk" | "wecom" | "feishu" => r#"{"text":"Your order has shipped"}"#,
        "jpush" => r#"{"title":"Hello","alert":"Your order has shipped"}"#,
        "jsms" => r#"{"template_id":1,"params":{"order":"1234"}}"#,
        "sms_cmpp" => r#"{"text":"Your order 1234 has shipped."}"#,
        "wechat_oa" => r#"{"template_id":"order-shipped","data":{"order":{"value":"1234"}}}"#,
        "webhook" => r#"{"body":{"order":1234,"status":"shipped"}}"#,
        _ => return None,
    })
}

/// A demo address for user `u1` on a channel type (the webhook one names its simulator).
fn example_binding(config: &Config, ty: &str) -> Option<String> {
    let value = match ty {
        "email" => "u1@example.com".to_owned(),
        "jsms" | "sms_cmpp" => "+8613800138000".to_owned(),
        "dingtalk" | "wecom" | "feishu" | "jpush" => format!("{ty}-u1"),
        "wechat_oa" => "o-u1".to_owned(),
        "webhook" => {
            let sim = config
                .simulators
                .iter()
                .find(|s| s.kind == umsd_sim::Kind::Webhook)?;
            format!("http://{}/hooks/u1", sim.listen)
        }
        _ => return None,
    };
    let binding_type = match ty {
        "jsms" | "sms_cmpp" => "phone",
        "wechat_oa" => "wechat_openid",
        other => other,
    };
    Some(format!(r#"{{"type":"{binding_type}","value":"{value}"}}"#))
}

/// Example commands for a first try (`hints = true`, as in config/demo.toml).
fn print_hints(config: &Config, addr: SocketAddr) {
    let Some(app) = config.apps.first() else {
        return;
    };
    let channels: Vec<(&str, &str)> = app
        .grants
        .iter()
        .filter_map(|code| {
            let c = config.channels.iter().find(|c| &c.code == code)?;
            Some((c.code.as_str(), c.channel_type.as_str()))
        })
        .filter(|(_, ty)| example_content(ty).is_some())
        .collect();
    if channels.is_empty() {
        return;
    }
    let mut bindings: Vec<String> = channels
        .iter()
        .filter_map(|(_, ty)| example_binding(config, ty))
        .collect();
    // Both SMS channels use the same phone binding.
    bindings.sort();
    bindings.dedup();
    let codes: Vec<String> = channels.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let content: Vec<String> = channels
        .iter()
        .filter_map(|(c, ty)| Some(format!("\"{c}\":{}", example_content(ty)?)))
        .collect();
    println!(
        "\numsd is ready on http://{addr}\n\n\
         Create a user with an address on every channel:\n  curl -s -u {key}:{secret} -X PUT \\\n    \
         -H 'content-type: application/json' http://{addr}/v1/users/u1 \\\n    \
         -d '{{\"bindings\":[{bindings}]}}'\n\n\
         Send a message:\n  curl -s -u {key}:{secret} \\\n    \
         -H 'content-type: application/json' http://{addr}/v1/messages \\\n    \
         -d '{{\"message_id\":\"hello-1\",\"audience\":{{\"user_ids\":[\"u1\"]}},\
         \"channels\":[{codes}],\"content\":{{{content}}}}}'\n\n\
         Watch it being delivered (the funnel, then each delivery's life cycle):\n  \
         curl -s -u {key}:{secret} http://{addr}/v1/messages/hello-1\n  \
         curl -s -u {key}:{secret} http://{addr}/v1/messages/hello-1/deliveries\n\n\
         Metrics: curl -s http://{addr}/metrics | grep ^umsd_\nStop with Ctrl-C.\n",
        key = app.key,
        secret = app.secret,
        bindings = bindings.join(","),
        codes = codes.join(","),
        content = content.join(","),
    );
}
