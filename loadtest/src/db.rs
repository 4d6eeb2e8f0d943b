//! Database access for the harness: connecting (to the embedded cluster's Unix socket or
//! to a given URL), the app id of the load-test app, and the count checks that compare
//! 2xx answers with stored rows.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

/// How to reach the daemon's database.
#[derive(Debug, Clone)]
pub enum DbTarget {
    /// A libpq-style URL or key=value string.
    Url(String),
    /// The embedded cluster: Unix socket directory, user and database `umsd`, port 5432.
    Embedded { socket_dir: PathBuf },
}

impl DbTarget {
    pub fn config(&self) -> Result<tokio_postgres::Config> {
        match self {
            DbTarget::Url(url) => {
                tokio_postgres::Config::from_str(url).context("parsing --database-url")
            }
            DbTarget::Embedded { socket_dir } => {
                let mut c = tokio_postgres::Config::new();
                c.host_path(socket_dir)
                    .port(5432)
                    .user("umsd")
                    .dbname("umsd")
                    .application_name("umsd-loadtest");
                Ok(c)
            }
        }
    }

    /// A description without credentials, for the report.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Url(_) => "--database-url (as given)".to_owned(),
            DbTarget::Embedded { socket_dir } => {
                format!("embedded cluster, socket {}", socket_dir.display())
            }
        }
    }
}

/// Connects and drives the connection on its own task.
pub async fn connect(target: &DbTarget) -> Result<Client> {
    let (client, conn) = target
        .config()?
        .connect(NoTls)
        .await
        .with_context(|| format!("connecting to the database ({})", target.describe()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// The id of the app with this key.
pub async fn app_id(client: &Client, app_key: &str) -> Result<i32> {
    let row = client
        .query_opt("SELECT id FROM apps WHERE app_key = $1", &[&app_key])
        .await?
        .with_context(|| format!("no app `{app_key}` in the database"))?;
    Ok(row.get(0))
}

/// Rows stored under one `message_id` prefix, compared with the 2xx answers that claimed
/// them.
#[derive(Debug, Clone, Serialize)]
pub struct CountCheck {
    pub what: String,
    pub prefix: String,
    pub answered_2xx: u64,
    pub rows_in_messages: u64,
    pub rows_in_message_keys: u64,
    /// Requests that timed out or broke: they may or may not have been stored.
    pub unknown_fate: u64,
    pub ok: bool,
}

/// Counts rows of `app_id` whose `message_id` starts with `prefix`.
pub async fn count_check(
    client: &Client,
    what: &str,
    app_id: i32,
    prefix: &str,
    answered_2xx: u64,
    unknown_fate: u64,
) -> Result<CountCheck> {
    let messages: i64 = client
        .query_one(
            "SELECT count(*) FROM messages WHERE app_id = $1 AND starts_with(message_id, $2)",
            &[&app_id, &prefix],
        )
        .await
        .context("counting messages")?
        .get(0);
    let keys: i64 = client
        .query_one(
            "SELECT count(*) FROM message_keys WHERE app_id = $1 AND starts_with(message_id, $2)",
            &[&app_id, &prefix],
        )
        .await
        .context("counting message_keys")?
        .get(0);
    let messages = u64::try_from(messages)?;
    let keys = u64::try_from(keys)?;
    Ok(CountCheck {
        what: what.to_owned(),
        prefix: prefix.to_owned(),
        answered_2xx,
        rows_in_messages: messages,
        rows_in_message_keys: keys,
        unknown_fate,
        ok: messages == answered_2xx && keys == answered_2xx,
    })
}
