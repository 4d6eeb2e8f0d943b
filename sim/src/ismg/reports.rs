//! Status reports between an accepted SUBMIT and the DELIVER that carries them.
//!
//! A report is first *scheduled*: `report_delay_ms` is the same for every report, so the
//! schedule is a FIFO ordered by due time and one task ([`run`]) serves it by sleeping
//! until the front is due. A due report is handed to a logged-in connection of its account
//! (preferably the one its SUBMIT came on). When none can take it (no connection, or the
//! connection's queue is full), or its connection closed before the DELIVER was
//! acknowledged, it *waits* per account and is retried when a connection logs in and at a
//! short interval. Both queues together hold at most [`REPORTS_CAP`] reports; beyond, the
//! oldest waiting one is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use umsd_cmpp::{MsgId, OctetString};

use super::session::Out;
use super::state::{lock, Ismg};

/// Reports held at once, scheduled and waiting together.
pub(crate) const REPORTS_CAP: usize = 200_000;
/// How often waiting reports are offered to connections again.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Due reports handed out per lock, so SUBMITs are not held up behind a long batch.
const BATCH: usize = 1024;

/// A report to send, with what its DELIVER needs.
#[derive(Debug, Clone)]
pub(crate) struct PendingReport {
    pub account: String,
    /// The connection the SUBMIT came on.
    pub connection: u64,
    /// The SUBMIT_RESP Msg_Id of this recipient: the correlation key.
    pub msg_id: MsgId,
    /// The recipient.
    pub dest: OctetString,
    /// The SUBMIT's Src_Id, the DELIVER's Dest_Id.
    pub src_id: OctetString,
    pub service_id: OctetString,
    pub stat: OctetString,
    /// YYMMDDHHMM of the SUBMIT.
    pub submit_time: OctetString,
}

#[derive(Default)]
struct Queues {
    scheduled: VecDeque<(Instant, PendingReport)>,
    waiting: HashMap<String, VecDeque<PendingReport>>,
    waiting_len: usize,
}

#[derive(Default)]
pub(crate) struct Reports {
    queues: Mutex<Queues>,
    wake: Notify,
}

impl Queues {
    fn len(&self) -> usize {
        self.scheduled.len() + self.waiting_len
    }

    /// Makes room for one more report; returns whether one had to be dropped.
    fn make_room(&mut self) -> bool {
        if self.len() < REPORTS_CAP {
            return false;
        }
        // The account holding the most waiting reports gives up its oldest; with nothing
        // waiting, the earliest scheduled one goes.
        let fullest = self
            .waiting
            .iter_mut()
            .max_by_key(|(_, q)| q.len())
            .and_then(|(_, q)| q.pop_front());
        if fullest.is_some() {
            self.waiting_len -= 1;
            self.waiting.retain(|_, q| !q.is_empty());
        } else {
            self.scheduled.pop_front();
        }
        true
    }

    fn park(&mut self, report: PendingReport) -> bool {
        let dropped = self.make_room();
        self.waiting
            .entry(report.account.clone())
            .or_default()
            .push_back(report);
        self.waiting_len += 1;
        dropped
    }
}

impl Reports {
    /// Reports held, scheduled or waiting.
    pub fn len(&self) -> usize {
        lock(&self.queues).len()
    }

    /// Reports past their due time waiting for a connection to take them.
    pub fn waiting(&self) -> usize {
        lock(&self.queues).waiting_len
    }

    /// Schedules a report for `due`. Returns whether an older report was dropped for it.
    pub fn schedule(&self, due: Instant, report: PendingReport) -> bool {
        let (dropped, was_empty) = {
            let mut q = lock(&self.queues);
            let dropped = q.make_room();
            let was_empty = q.scheduled.is_empty();
            q.scheduled.push_back((due, report));
            (dropped, was_empty)
        };
        if was_empty {
            // The scheduler may be asleep with nothing to wait for.
            self.wake.notify_one();
        }
        dropped
    }

    /// Puts reports back to wait for a connection (their connection closed). Returns how
    /// many older reports were dropped for them.
    pub fn requeue(&self, reports: Vec<PendingReport>) -> usize {
        if reports.is_empty() {
            return 0;
        }
        let dropped = {
            let mut q = lock(&self.queues);
            let mut dropped = 0;
            for r in reports {
                dropped += usize::from(q.park(r));
            }
            dropped
        };
        self.wake.notify_one();
        dropped
    }

    /// Something changed for waiting reports (a login): retry them now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Due scheduled reports (up to a batch) and the time the next one is due.
    fn take_due(&self, now: Instant) -> (Vec<PendingReport>, Option<Instant>) {
        let mut q = lock(&self.queues);
        let mut due = Vec::new();
        while due.len() < BATCH {
            match q.scheduled.front() {
                Some((at, _)) if *at <= now => {
                    if let Some((_, r)) = q.scheduled.pop_front() {
                        due.push(r);
                    }
                }
                _ => break,
            }
        }
        let next = q.scheduled.front().map(|(at, _)| *at);
        (due, next)
    }

    /// The accounts with waiting reports.
    fn waiting_accounts(&self) -> Vec<String> {
        lock(&self.queues).waiting.keys().cloned().collect()
    }

    fn pop_waiting(&self, account: &str) -> Option<PendingReport> {
        let mut q = lock(&self.queues);
        let queue = q.waiting.get_mut(account)?;
        let r = queue.pop_front();
        if queue.is_empty() {
            q.waiting.remove(account);
        }
        if r.is_some() {
            q.waiting_len -= 1;
        }
        r
    }

    fn unpop_waiting(&self, report: PendingReport) {
        let mut q = lock(&self.queues);
        q.waiting
            .entry(report.account.clone())
            .or_default()
            .push_front(report);
        q.waiting_len += 1;
    }

    fn park(&self, report: PendingReport) -> bool {
        lock(&self.queues).park(report)
    }
}

/// Hands a report to a connection of its account; gives it back when none takes it.
fn offer(ismg: &Ismg, report: PendingReport) -> Option<PendingReport> {
    let Some(tx) = ismg.route(&report.account, Some(report.connection)) else {
        return Some(report);
    };
    let left = match tx.try_reserve() {
        Ok(permit) => {
            permit.send(Out::Report(report));
            None
        }
        Err(_) => Some(report),
    };
    left
}

/// The report scheduler: runs until the simulator's runtime shuts down.
pub(crate) async fn run(ismg: Arc<Ismg>) {
    let reports = &ismg.reports;
    loop {
        let now = Instant::now();
        let (due, mut next) = reports.take_due(now);
        let batch_full = due.len() == BATCH;
        for r in due {
            if let Some(r) = offer(&ismg, r) {
                if reports.park(r) {
                    ismg.counters.reports_dropped.inc();
                }
            }
        }
        let mut still_waiting = false;
        for account in reports.waiting_accounts() {
            if !ismg.has_connection(&account) {
                // A login wakes the scheduler.
                continue;
            }
            while let Some(r) = reports.pop_waiting(&account) {
                if let Some(r) = offer(&ismg, r) {
                    // The connections' queues are full (or it just closed): later.
                    reports.unpop_waiting(r);
                    still_waiting = true;
                    break;
                }
            }
        }
        if batch_full {
            tokio::task::yield_now().await;
            continue;
        }
        if still_waiting {
            let retry = now + RETRY_INTERVAL;
            next = Some(next.map_or(retry, |n| n.min(retry)));
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = reports.wake.notified() => {}
                }
            }
            None => reports.wake.notified().await,
        }
    }
}
