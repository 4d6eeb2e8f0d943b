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

/// How rows under one `message_id` prefix are found: by a range of the `message_keys`
/// primary key when the database compares text bytewise (collation `C`, as the embedded
/// cluster is set up), else by `starts_with` over the app's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix {
    pub prefix: String,
    /// The smallest string above every string with the prefix, when ranges are bytewise.
    pub upper: Option<String>,
}

impl KeyPrefix {
    /// The condition on `{col}` (a `message_keys.message_id`), its parameters numbered
    /// from `$first`, and the values to bind to them.
    pub fn condition(&self, col: &str, first: usize) -> (String, Vec<String>) {
        match &self.upper {
            Some(upper) => (
                format!("{col} >= ${first} AND {col} < ${}", first + 1),
                vec![self.prefix.clone(), upper.clone()],
            ),
            None => (
                format!("starts_with({col}, ${first})"),
                vec![self.prefix.clone()],
            ),
        }
    }
}

/// The smallest string above every string that starts with `prefix` (its last character
/// incremented), if there is one.
pub fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let next = char::from_u32(u32::from(last) + 1)?;
    chars.push(next);
    Some(chars.into_iter().collect())
}

/// Whether the database compares text bytewise (collation `C` or `POSIX`).
pub async fn bytewise_collation(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .context("reading the database's collation")?;
    let collate: String = row.get(0);
    Ok(matches!(collate.as_str(), "C" | "POSIX"))
}

/// A [`KeyPrefix`] for `prefix` on this database.
pub fn key_prefix(prefix: &str, bytewise: bool) -> KeyPrefix {
    KeyPrefix {
        prefix: prefix.to_owned(),
        upper: if bytewise { prefix_upper(prefix) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_upper("lt-x-e1-").as_deref(), Some("lt-x-e1."));
        assert_eq!(prefix_upper("a9").as_deref(), Some("a:"));
        assert_eq!(prefix_upper(""), None);
        let p = key_prefix("lt-1-", true);
        let (sql, args) = p.condition("k.message_id", 2);
        assert_eq!(sql, "k.message_id >= $2 AND k.message_id < $3");
        assert_eq!(args, vec!["lt-1-".to_owned(), "lt-1.".to_owned()]);
        // every id under the prefix lies in the range, bytewise
        for id in ["lt-1-0", "lt-1-99999999", "lt-1-~"] {
            assert!(id >= args[0].as_str() && id < args[1].as_str(), "{id}");
        }
        assert!("lt-10-1" >= args[1].as_str());
        let p = key_prefix("lt-1-", false);
        let (sql, args) = p.condition("message_id", 1);
        assert_eq!(sql, "starts_with(message_id, $1)");
        assert_eq!(args.len(), 1);
    }
}
