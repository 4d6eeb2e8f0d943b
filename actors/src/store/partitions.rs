//! Day partitions of the history tables: created ahead of time, dropped after retention.
//!
//! Retention is `DROP TABLE` of whole days, never `DELETE`, so the big tables stay
//! append-mostly and vacuum has nothing to chase. Partitions are UTC days named
//! `<table>_pYYYYMMDD`.

use chrono::{Duration, NaiveDate, Utc};

use super::{Store, StoreError};

/// Partitioned tables and their partition column.
pub const PARTITIONED: &[&str] = &["messages", "deliveries", "delivery_events", "provider_refs"];

/// How many days ahead partitions exist; a day's partition is there before the day starts.
pub const DAYS_AHEAD: i64 = 3;

impl Store {
    /// Creates the partitions for yesterday through `DAYS_AHEAD` days from now.
    pub async fn ensure_partitions(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let today = Utc::now().date_naive();
        let mut sql = String::new();
        for offset in -1..=DAYS_AHEAD {
            let day = today + Duration::days(offset);
            let next = day + Duration::days(1);
            for table in PARTITIONED {
                // Deliveries are updated a few times each (submitted, delivered, read):
                // free room on each page keeps those updates HOT (no new index entries).
                // Every row of a page is updated once soon after the page is written, in
                // the same few transactions, so the page needs room for a second version
                // of every row (a little wider: the first outcome's columns): at 60 only
                // about two thirds of the first updates stayed HOT, at 40 all do.
                let with = if *table == "deliveries" {
                    " WITH (fillfactor = 40)"
                } else {
                    ""
                };
                sql.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {table}_p{} PARTITION OF {table} \
                     FOR VALUES FROM ('{day}') TO ('{next}'){with};\n",
                    day.format("%Y%m%d")
                ));
            }
        }
        client.batch_execute(&sql).await?;
        Ok(())
    }

    /// Drops every day partition that ended more than `keep_days` days ago, and prunes
    /// idempotency keys of the same age. Returns the dropped partitions.
    pub async fn drop_expired_partitions(&self, keep_days: u32) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let cutoff = Utc::now().date_naive() - Duration::days(i64::from(keep_days));
        let rows = client
            .query(
                "SELECT c.relname, p.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = ANY($1)",
                &[&PARTITIONED],
            )
            .await?;
        let mut dropped = Vec::new();
        for row in rows {
            let child: String = row.get(0);
            let Some(day) = child
                .rsplit_once("_p")
                .and_then(|(_, d)| NaiveDate::parse_from_str(d, "%Y%m%d").ok())
            else {
                continue;
            };
            if day + Duration::days(1) <= cutoff {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {child}"))
                    .await?;
                dropped.push(child);
            }
        }
        let cutoff_ts = cutoff
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or_else(Utc::now);
        // Narrow table, indexed by time: deleted in bounded batches.
        loop {
            let n = client
                .execute(
                    "DELETE FROM message_keys WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM message_keys WHERE created_at < $1 LIMIT 10000))",
                    &[&cutoff_ts],
                )
                .await?;
            if n == 0 {
                break;
            }
        }
        Ok(dropped)
    }
}
