//! Receipt polling for providers that offer no push (DingTalk `getsendresult`, JPush's
//! report API): each accepted call's recipients are asked about every `interval` until
//! each has a final answer or a day has passed. After a restart, the deliveries still
//! waiting (submitted, with a provider id `task:recipient`) are picked up again from the
//! database, so receipts are not lost with the process.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::LocalBoxFuture;

use crate::domain::DeliveryState;
use crate::providers::context::ProviderContext;
use crate::providers::contract::ProviderError;
use crate::receipts::{Incoming, ReceiptEvent, ReceiptKey};

/// How long a task is asked about before its silent recipients are left as submitted.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Answers for some recipients of one task: (recipient, state, provider code). Recipients
/// with no answer yet are left out.
pub type Answers = Vec<(String, DeliveryState, Option<String>)>;

/// Asks the provider about (task, recipients).
pub type Query =
    Rc<dyn Fn(String, Vec<String>) -> LocalBoxFuture<'static, Result<Answers, ProviderError>>>;

struct Task {
    recipients: Vec<String>,
    since: Instant,
}

type Tasks = Rc<RefCell<HashMap<String, Task>>>;

pub struct Poller {
    tasks: Tasks,
}

/// The provider id recorded for one recipient of a task.
pub fn provider_id(task: &str, recipient: &str) -> String {
    format!("{task}:{recipient}")
}

impl Poller {
    /// Starts polling on the current arbiter; stops when the poller is dropped.
    pub fn start(ctx: &ProviderContext, interval: Duration, query: Query) -> Self {
        let tasks: Tasks = Rc::new(RefCell::new(HashMap::new()));
        let weak = Rc::downgrade(&tasks);
        let ctx = ctx.clone();
        actix::spawn(async move {
            resume(&ctx, &weak).await;
            loop {
                tokio::time::sleep(interval).await;
                let Some(tasks) = weak.upgrade() else { break };
                poll_once(&ctx, &tasks, &query).await;
            }
        });
        Self { tasks }
    }

    pub fn track(&self, task: &str, recipients: Vec<String>) {
        self.tasks.borrow_mut().insert(
            task.to_owned(),
            Task {
                recipients,
                since: Instant::now(),
            },
        );
    }
}

/// Re-tracks what was still waiting for a receipt when the channel last stopped.
async fn resume(ctx: &ProviderContext, tasks: &Weak<RefCell<HashMap<String, Task>>>) {
    let channel = ctx.code.as_str();
    let since = Utc::now() - chrono::Duration::hours(24);
    let waiting = match ctx.store.awaiting_receipts(channel, since, 1_000_000).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(channel, error = %e, "cannot resume receipt polling");
            return;
        }
    };
    let Some(tasks) = tasks.upgrade() else { return };
    let mut map = tasks.borrow_mut();
    let n = waiting.len();
    for pid in waiting {
        if let Some((task, rid)) = pid.split_once(':') {
            map.entry(task.to_owned())
                .or_insert_with(|| Task {
                    recipients: Vec::new(),
                    since: Instant::now(),
                })
                .recipients
                .push(rid.to_owned());
        }
    }
    if n > 0 {
        tracing::info!(channel, deliveries = n, "resumed receipt polling");
    }
}

async fn poll_once(ctx: &ProviderContext, tasks: &Tasks, query: &Query) {
    let channel = ctx.code.as_str();
    let now = Instant::now();
    let due: Vec<(String, Vec<String>)> = {
        let mut map = tasks.borrow_mut();
        map.retain(|_, t| now.duration_since(t.since) < MAX_AGE && !t.recipients.is_empty());
        map.iter()
            .map(|(k, t)| (k.clone(), t.recipients.clone()))
            .collect()
    };
    for (task, recipients) in due {
        let answers = match query(task.clone(), recipients).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(channel, task, code = %e.code, "receipt poll failed; will ask again");
                continue;
            }
        };
        if answers.is_empty() {
            continue;
        }
        let at = Utc::now();
        let events: Vec<ReceiptEvent> = answers
            .iter()
            .map(|(rid, state, code)| ReceiptEvent {
                channel: ctx.code.clone(),
                key: ReceiptKey::Provider(provider_id(&task, rid)),
                state: *state,
                code: code.clone(),
                reason: None,
                at,
            })
            .collect();
        if let Ok(true) = ctx.receipts.send(Incoming(events)).await {
            let mut map = tasks.borrow_mut();
            if let Some(t) = map.get_mut(&task) {
                t.recipients
                    .retain(|r| !answers.iter().any(|(a, _, _)| a == r));
            }
        }
    }
}
