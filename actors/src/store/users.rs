//! Users and bindings: create-or-replace, read, delete — always within one app.

use super::{Store, StoreError};
use crate::domain::user::{Binding, UserSpec};

/// A stored user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    pub enabled: bool,
    pub locale: Option<String>,
    pub tags: Vec<String>,
    pub bindings: Vec<Binding>,
}

const UPSERT_USER: &str = "INSERT INTO users (app_id, user_id, enabled, locale, tags)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (app_id, user_id) DO UPDATE SET
         enabled = EXCLUDED.enabled, locale = EXCLUDED.locale, tags = EXCLUDED.tags,
         updated_at = now()
     RETURNING (xmax = 0) AS created";

const INSERT_BINDINGS: &str = "INSERT INTO bindings (app_id, user_id, type, value, scope)
     SELECT $1, $2, * FROM UNNEST($3::text[], $4::text[], $5::text[])";

impl Store {
    /// Creates or replaces users (their bindings replaced whole) in one transaction;
    /// returns, per user, whether it was created.
    pub async fn put_users(
        &self,
        app_id: i32,
        users: &[UserSpec],
    ) -> Result<Vec<bool>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let upsert = tx.prepare_cached(UPSERT_USER).await?;
        let delete = tx
            .prepare_cached("DELETE FROM bindings WHERE app_id = $1 AND user_id = $2")
            .await?;
        let insert = tx.prepare_cached(INSERT_BINDINGS).await?;
        let mut created = Vec::with_capacity(users.len());
        for u in users {
            let row = tx
                .query_one(
                    &upsert,
                    &[&app_id, &u.user_id, &u.enabled, &u.locale, &u.tags],
                )
                .await?;
            created.push(row.get::<_, bool>(0));
            tx.execute(&delete, &[&app_id, &u.user_id]).await?;
            if !u.bindings.is_empty() {
                let types: Vec<&str> = u.bindings.iter().map(|b| b.binding_type.as_str()).collect();
                let values: Vec<&str> = u.bindings.iter().map(|b| b.value.as_str()).collect();
                let scopes: Vec<&str> = u.bindings.iter().map(|b| b.scope.as_str()).collect();
                tx.execute(&insert, &[&app_id, &u.user_id, &types, &values, &scopes])
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(created)
    }

    pub async fn get_user(
        &self,
        app_id: i32,
        user_id: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT enabled, locale, tags FROM users WHERE app_id = $1 AND user_id = $2",
                &[&app_id, &user_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let bindings = client
            .query(
                "SELECT type, value, scope FROM bindings WHERE app_id = $1 AND user_id = $2
                 ORDER BY type, scope",
                &[&app_id, &user_id],
            )
            .await?
            .iter()
            .map(|b| Binding {
                binding_type: b.get(0),
                value: b.get(1),
                scope: b.get(2),
            })
            .collect();
        Ok(Some(UserRecord {
            user_id: user_id.to_owned(),
            enabled: row.get(0),
            locale: row.get(1),
            tags: row.get(2),
            bindings,
        }))
    }

    /// Deletes a user and its bindings; false when there was none.
    pub async fn delete_user(&self, app_id: i32, user_id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM users WHERE app_id = $1 AND user_id = $2",
                &[&app_id, &user_id],
            )
            .await?;
        Ok(n > 0)
    }
}
