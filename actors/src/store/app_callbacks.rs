//! The apps' callback endpoints and the outbox of events waiting to be posted to them.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;

use super::{Store, StoreError};

/// One callback endpoint of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub is_default: bool,
    pub events: Vec<String>,
    /// `whsec_…`: the Standard Webhooks signing key.
    pub secret: String,
}

/// An event claimed for posting.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub url: String,
    /// `None` when the endpoint is gone (the event is dropped).
    pub secret: Option<String>,
    pub event_id: String,
    pub body: String,
    pub attempts: i16,
}

fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

impl Store {
    /// Replaces an app's callback endpoints; an endpoint that stays (same URL) keeps its
    /// secret, a new one gets a fresh secret. Answers the endpoints with their secrets.
    pub async fn put_callbacks(
        &self,
        app_id: i32,
        endpoints: &[(String, bool, Vec<String>)],
    ) -> Result<Vec<Endpoint>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let old: HashMap<String, String> = tx
            .query(
                "SELECT url, secret FROM callback_endpoints WHERE app_id = $1 FOR UPDATE",
                &[&app_id],
            )
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let urls: Vec<&str> = endpoints.iter().map(|e| e.0.as_str()).collect();
        tx.execute(
            "DELETE FROM callback_endpoints WHERE app_id = $1 AND NOT (url = ANY($2))",
            &[&app_id, &urls],
        )
        .await?;
        let mut out = Vec::with_capacity(endpoints.len());
        for (url, is_default, events) in endpoints {
            let secret = old.get(url).cloned().unwrap_or_else(new_secret);
            tx.execute(
                "INSERT INTO callback_endpoints (app_id, url, is_default, events, secret)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (app_id, url) DO UPDATE SET is_default = EXCLUDED.is_default,
                     events = EXCLUDED.events, updated_at = now()",
                &[&app_id, url, is_default, events, &secret],
            )
            .await?;
            out.push(Endpoint {
                url: url.clone(),
                is_default: *is_default,
                events: events.clone(),
                secret,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// An app's callback endpoints (with their secrets: callers decide what to show).
    pub async fn list_callbacks(&self, app_id: i32) -> Result<Vec<Endpoint>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT url, is_default, events, secret FROM callback_endpoints
                 WHERE app_id = $1 ORDER BY url",
                &[&app_id],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Endpoint {
                url: r.get(0),
                is_default: r.get(1),
                events: r.get(2),
                secret: r.get(3),
            })
            .collect())
    }

    /// The apps with an endpoint that asks for a delivery event.
    pub async fn delivery_callback_apps(
        &self,
    ) -> Result<std::collections::HashSet<i32>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT app_id FROM callback_endpoints
                 WHERE events && ARRAY['sent', 'delivered', 'failed', 'clicked']",
                &[],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Claims up to `limit` due events for `lease` (another node, or this one after a
    /// crash, takes them again once it ends).
    pub async fn claim_callbacks(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Due>, StoreError> {
        let client = self.client().await?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "WITH due AS (
                     SELECT id FROM callback_outbox WHERE next_at <= now()
                     ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                 UPDATE callback_outbox o
                 SET next_at = now() + make_interval(secs => $2::bigint / 1000.0)
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.url, o.event_id, o.body, o.attempts,
                     (SELECT e.secret FROM callback_endpoints e
                      WHERE e.app_id = o.app_id AND e.url = o.url)",
                &[&limit, &lease_ms],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Due {
                id: r.get(0),
                url: r.get(1),
                event_id: r.get(2),
                body: r.get(3),
                attempts: r.get(4),
                secret: r.get(5),
            })
            .collect())
    }

    /// Removes posted (or given up) events.
    pub async fn delete_callbacks(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute("DELETE FROM callback_outbox WHERE id = ANY($1)", &[&ids])
            .await?;
        Ok(())
    }

    /// Schedules failed events again: (id, attempts so far, wait).
    pub async fn retry_callbacks(
        &self,
        retries: &[(i64, i16, Duration)],
    ) -> Result<(), StoreError> {
        if retries.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let ids: Vec<i64> = retries.iter().map(|r| r.0).collect();
        let attempts: Vec<i16> = retries.iter().map(|r| r.1).collect();
        let waits: Vec<i64> = retries
            .iter()
            .map(|r| i64::try_from(r.2.as_millis()).unwrap_or(i64::MAX))
            .collect();
        client
            .execute(
                "UPDATE callback_outbox o SET attempts = u.attempts,
                     next_at = now() + make_interval(secs => u.wait / 1000.0)
                 FROM unnest($1::int8[], $2::int2[], $3::int8[]) AS u(id, attempts, wait)
                 WHERE o.id = u.id",
                &[&ids, &attempts, &waits],
            )
            .await?;
        Ok(())
    }
}
