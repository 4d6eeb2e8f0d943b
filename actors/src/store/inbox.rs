//! The internal inbox: items stored by the inbox provider, listed and marked read by the
//! inbox API.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::MessagePk;

/// One item to store in a user's inbox.
#[derive(Debug, Clone)]
pub struct NewInboxItem {
    pub app_id: i32,
    pub user_id: String,
    pub delivery_id: i64,
    pub message_pk: MessagePk,
    pub title: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct InboxItem {
    pub delivery_id: i64,
    pub message_pk: MessagePk,
    pub title: Option<String>,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Stores inbox items; a delivery already stored (a re-send after a crash) is skipped.
    pub async fn put_inbox(&self, items: &[NewInboxItem]) -> Result<(), StoreError> {
        let client = self.client().await?;
        let apps: Vec<i32> = items.iter().map(|i| i.app_id).collect();
        let users: Vec<&str> = items.iter().map(|i| i.user_id.as_str()).collect();
        let ids: Vec<i64> = items.iter().map(|i| i.delivery_id).collect();
        let msgs: Vec<MessagePk> = items.iter().map(|i| i.message_pk).collect();
        let titles: Vec<Option<&str>> = items.iter().map(|i| i.title.as_deref()).collect();
        let bodies: Vec<&str> = items.iter().map(|i| i.body.as_str()).collect();
        let stmt = client
            .prepare_cached(
                "INSERT INTO inbox (app_id, user_id, delivery_id, message_pk, title, body)
                 SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[],
                                      $5::text[], $6::text[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        client
            .execute(&stmt, &[&apps, &users, &ids, &msgs, &titles, &bodies])
            .await?;
        Ok(())
    }

    /// Removes inbox items by (app, user, delivery id); answers the delivery ids removed.
    pub async fn remove_inbox(
        &self,
        keys: &[(i32, &str, i64)],
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        let client = self.client().await?;
        let apps: Vec<i32> = keys.iter().map(|k| k.0).collect();
        let users: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let ids: Vec<i64> = keys.iter().map(|k| k.2).collect();
        let rows = client
            .query(
                "DELETE FROM inbox i USING unnest($1::int4[], $2::text[], $3::int8[])
                     AS k(app_id, user_id, delivery_id)
                 WHERE i.app_id = k.app_id AND i.user_id = k.user_id
                   AND i.delivery_id = k.delivery_id
                 RETURNING i.delivery_id",
                &[&apps, &users, &ids],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// A user's inbox, newest first.
    pub async fn list_inbox(
        &self,
        app_id: i32,
        user_id: &str,
        unread_only: bool,
        limit: i64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT delivery_id, message_pk, title, body, created_at, read_at FROM inbox
                 WHERE app_id = $1 AND user_id = $2 AND (NOT $3 OR read_at IS NULL)
                 ORDER BY delivery_id DESC LIMIT $4",
                &[&app_id, &user_id, &unread_only, &limit],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| InboxItem {
                delivery_id: r.get(0),
                message_pk: r.get(1),
                title: r.get(2),
                body: r.get(3),
                created_at: r.get(4),
                read_at: r.get(5),
            })
            .collect())
    }

    /// Marks inbox items read; returns the (delivery id, message) of those that changed (for
    /// `read` receipts).
    pub async fn mark_inbox_read(
        &self,
        app_id: i32,
        user_id: &str,
        ids: &[i64],
    ) -> Result<Vec<(i64, MessagePk)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE inbox SET read_at = now()
                 WHERE app_id = $1 AND user_id = $2 AND delivery_id = ANY($3) AND read_at IS NULL
                 RETURNING delivery_id, message_pk",
                &[&app_id, &user_id, &ids],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
