//! An app's fallback strategies (`strategies`): steps as JSON, checked before they are
//! stored (`domain/strategy`).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::strategy::StrategySpec;

/// A stored strategy.
#[derive(Debug, Clone)]
pub struct StrategyRecord {
    pub id: String,
    pub spec: StrategySpec,
    pub updated_at: DateTime<Utc>,
}

fn record(r: &tokio_postgres::Row) -> Result<StrategyRecord, StoreError> {
    let id: String = r.get(0);
    let steps: serde_json::Value = r.get(1);
    let spec = serde_json::from_value(serde_json::json!({ "steps": steps }))
        .map_err(|e| StoreError::Data(format!("strategy `{id}`: {e}")))?;
    Ok(StrategyRecord {
        id,
        spec,
        updated_at: r.get(2),
    })
}

impl Store {
    /// Stores a strategy; answers whether it is new.
    pub async fn put_strategy(
        &self,
        app_id: i32,
        id: &str,
        spec: &StrategySpec,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let steps = serde_json::to_value(&spec.steps)
            .map_err(|e| StoreError::Data(format!("strategy `{id}`: {e}")))?;
        let row = client
            .query_one(
                "INSERT INTO strategies (app_id, strategy_id, steps) VALUES ($1, $2, $3)
                 ON CONFLICT (app_id, strategy_id)
                 DO UPDATE SET steps = EXCLUDED.steps, updated_at = now()
                 RETURNING xmax = 0",
                &[&app_id, &id, &steps],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn get_strategy(
        &self,
        app_id: i32,
        id: &str,
    ) -> Result<Option<StrategyRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT strategy_id, steps, updated_at FROM strategies
                 WHERE app_id = $1 AND strategy_id = $2",
                &[&app_id, &id],
            )
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Deletes a strategy; answers whether there was one.
    pub async fn delete_strategy(&self, app_id: i32, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM strategies WHERE app_id = $1 AND strategy_id = $2",
                &[&app_id, &id],
            )
            .await?;
        Ok(n > 0)
    }

    /// An app's strategies in id order, after `after`, at most `limit`.
    pub async fn list_strategies(
        &self,
        app_id: i32,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StrategyRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT strategy_id, steps, updated_at FROM strategies
                 WHERE app_id = $1 AND ($2::text IS NULL OR strategy_id > $2)
                 ORDER BY strategy_id LIMIT $3",
                &[&app_id, &after, &limit],
            )
            .await?;
        rows.iter().map(record).collect()
    }
}
