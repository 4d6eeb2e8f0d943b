//! The internal inbox: a delivery is a row in the `inbox` table, read through
//! `GET /v1/inbox/{user_id}`. Storing is the delivery; marking read is the `read` receipt.
//! The row is keyed by the delivery id, so a re-send after a crash stores nothing twice.

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::context::ProviderContext;
use super::contract::{all, Attempt, Batch, Provider, ProviderError};
use crate::store::inbox::NewInboxItem;
use crate::store::Store;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

pub struct Inbox {
    store: Store,
}

impl Inbox {
    pub fn new(ctx: &ProviderContext, _: &Settings) -> Self {
        Self {
            store: ctx.store.clone(),
        }
    }
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    match v.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Provider for Inbox {
    fn max_batch(&self) -> usize {
        500
    }

    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let store = self.store.clone();
        Box::pin(async move {
            let title = text(&batch.content, "title");
            let Some(body) = text(&batch.content, "body").or_else(|| text(&batch.content, "text"))
            else {
                return all(
                    &batch,
                    Attempt::Failed(ProviderError::permanent(
                        "no_body",
                        "inbox content needs `body`",
                    )),
                );
            };
            let items: Vec<_> = batch
                .targets
                .iter()
                .map(|t| NewInboxItem {
                    app_id: t.app_id,
                    user_id: t.address.clone(),
                    delivery_id: t.delivery_id,
                    message_pk: batch.message_pk,
                    title: title.clone(),
                    body: body.clone(),
                })
                .collect();
            match store.put_inbox(&items).await {
                Ok(()) => all(&batch, Attempt::delivered(None)),
                Err(e) => all(
                    &batch,
                    Attempt::Failed(ProviderError::retryable("database", e.to_string())),
                ),
            }
        })
    }
}
