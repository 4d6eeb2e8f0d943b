//! The internal inbox: a delivery is a row in the `inbox` table, read through
//! `GET /v1/inbox/{user_id}`. Storing is the delivery; marking read is the `read` receipt.
//! The row is keyed by the delivery id, so a re-send after a crash stores nothing twice.
//!
//! Calls share writes: a call's rows join those of the calls waiting, and one of them
//! writes them all in one statement while the rest wait for its answer. A stream of
//! one-user messages (a call each) then costs a write per group of calls, not per call.

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::context::ProviderContext;
use super::contract::{all, Attempt, Batch, Provider, ProviderError, RecallOutcome, RecallTarget};
use crate::store::inbox::NewInboxItem;
use crate::store::Store;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

pub struct Inbox {
    writes: Rc<Writes>,
}

/// Rows waiting to be written, and whether a call is writing.
struct Writes {
    store: Store,
    state: RefCell<WriteState>,
}

#[derive(Default)]
struct WriteState {
    waiting: Vec<NewInboxItem>,
    /// Per waiting call, in order: how many of `waiting` are its rows, and where to tell
    /// the outcome of the write that takes them.
    waiters: Vec<(usize, oneshot::Sender<Result<(), String>>)>,
    writing: bool,
}

/// Most rows in one write.
const MAX_WRITE: usize = 5000;

impl Writes {
    /// Stores `items`: waits for the write that takes them, or writes them (and whatever
    /// joined meanwhile) itself when no write is running.
    async fn put(self: Rc<Self>, items: Vec<NewInboxItem>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut st = self.state.borrow_mut();
            st.waiters.push((items.len(), tx));
            st.waiting.extend(items);
            !std::mem::replace(&mut st.writing, true)
        };
        if lead {
            // Should this call be dropped mid-write, the calls waiting on it are told
            // (their write failed, to be retried) rather than left waiting.
            let guard = LeadGuard(&self.state);
            loop {
                let (rows, waiters) = {
                    let mut st = self.state.borrow_mut();
                    if st.waiters.is_empty() {
                        st.writing = false;
                        break;
                    }
                    // Whole calls, up to MAX_WRITE rows (a larger call goes alone).
                    let (mut calls, mut n) = (0, 0);
                    for (rows, _) in &st.waiters {
                        if calls > 0 && n + rows > MAX_WRITE {
                            break;
                        }
                        calls += 1;
                        n += rows;
                    }
                    let rows: Vec<NewInboxItem> = st.waiting.drain(..n).collect();
                    let waiters: Vec<_> = st.waiters.drain(..calls).map(|w| w.1).collect();
                    (rows, waiters)
                };
                let result = self.store.put_inbox(&rows).await.map_err(|e| e.to_string());
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
            std::mem::forget(guard);
        }
        rx.await
            .unwrap_or_else(|_| Err("the inbox write was dropped".to_owned()))
    }
}

struct LeadGuard<'a>(&'a RefCell<WriteState>);

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.borrow_mut();
        st.writing = false;
        st.waiting.clear();
        st.waiters.clear();
    }
}

impl Inbox {
    pub fn new(ctx: &ProviderContext, _: &Settings) -> Self {
        Self {
            writes: Rc::new(Writes {
                store: ctx.store.clone(),
                state: RefCell::new(WriteState::default()),
            }),
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

    /// Withdrawing from the inbox removes the items: the user no longer sees them.
    fn recall(
        &self,
        targets: Vec<RecallTarget>,
    ) -> LocalBoxFuture<'static, Vec<(i64, RecallOutcome)>> {
        let store = self.writes.store.clone();
        Box::pin(async move {
            let keys: Vec<(i32, &str, i64)> = targets
                .iter()
                .filter_map(|t| Some((t.app_id, t.address.as_deref()?, t.delivery_id)))
                .collect();
            match store.remove_inbox(&keys).await {
                Ok(removed) => targets
                    .into_iter()
                    .map(|t| {
                        let outcome = if removed.contains(&t.delivery_id) {
                            RecallOutcome::Withdrawn
                        } else {
                            RecallOutcome::Kept("not_in_inbox".into())
                        };
                        (t.delivery_id, outcome)
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot withdraw inbox items");
                    targets
                        .into_iter()
                        .map(|t| (t.delivery_id, RecallOutcome::Kept("store_error".into())))
                        .collect()
                }
            }
        })
    }

    fn send(&self, batch: Batch) -> LocalBoxFuture<'static, Vec<(i64, Attempt)>> {
        let writes = self.writes.clone();
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
            match writes.put(items).await {
                Ok(()) => all(&batch, Attempt::delivered(None)),
                Err(e) => all(
                    &batch,
                    Attempt::Failed(ProviderError::retryable("database", e)),
                ),
            }
        })
    }
}
