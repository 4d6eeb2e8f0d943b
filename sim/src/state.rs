//! Shared state of one running simulator: counters, the ring of accepted recipients,
//! issued tokens, the rate bucket, fault switches, pull-receipt records and idempotency
//! keys. Everything here is bounded; nothing here does I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::{Rng, RngCore};
use tokio::sync::mpsc;

use crate::recalls::Recalls;
use crate::receipts::{Pending, Push};
use crate::{Faults, Received, SimConfig, Stats};

/// Entries kept by the received ring.
pub(crate) const RECEIVED_CAP: usize = 100_000;
/// Pull-receipt records kept (messages / tasks) and recipients across them.
const RECORDS_CAP: usize = 100_000;
const RECORD_RECIPIENTS_CAP: usize = 1_000_000;
/// Idempotency keys kept (Feishu uuid, JPush cid), each for at most an hour.
const IDEM_CAP: usize = 100_000;
const IDEM_TTL: Duration = Duration::from_secs(3600);
/// Tokens remembered, so an old one answers "expired" rather than "unknown".
const TOKENS_CAP: usize = 64;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

pub(crate) fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// A stored body as JSON: parsed if it is JSON, else the text as a string.
fn parse_body(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub requests: Counter,
    pub send_requests: Counter,
    pub recipients_accepted: Counter,
    pub rate_limited: Counter,
    pub token_issued: Counter,
    pub token_rejected: Counter,
    pub faults_injected: Counter,
    pub receipts_pushed: Counter,
    pub receipts_push_failed: Counter,
    pub receipts_dropped: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.get(),
            send_requests: self.send_requests.get(),
            recipients_accepted: self.recipients_accepted.get(),
            rate_limited: self.rate_limited.get(),
            token_issued: self.token_issued.get(),
            token_rejected: self.token_rejected.get(),
            faults_injected: self.faults_injected.get(),
            receipts_pushed: self.receipts_pushed.get(),
            receipts_push_failed: self.receipts_push_failed.get(),
            receipts_dropped: self.receipts_dropped.get(),
        }
    }
}

/// A fault answered instead of a send request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Drop,
    Timeout,
    Fail,
    Busy,
    RateLimit,
    Permanent,
}

#[derive(Default)]
pub(crate) struct FaultSwitches {
    pub latency_ms: AtomicU64,
    fail: AtomicU32,
    busy: AtomicU32,
    rate_limit: AtomicU32,
    timeout: AtomicU32,
    drop: AtomicU32,
    permanent: AtomicU32,
}

impl FaultSwitches {
    fn set(&self, f: &Faults) {
        self.latency_ms.store(f.latency_ms, Ordering::Relaxed);
        self.fail.store(f.fail_next, Ordering::Relaxed);
        self.busy.store(f.busy_next, Ordering::Relaxed);
        self.rate_limit.store(f.rate_limit_next, Ordering::Relaxed);
        self.timeout.store(f.timeout_next, Ordering::Relaxed);
        self.drop.store(f.drop_next, Ordering::Relaxed);
        self.permanent.store(f.permanent_next, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Faults {
        Faults {
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            fail_next: self.fail.load(Ordering::Relaxed),
            busy_next: self.busy.load(Ordering::Relaxed),
            rate_limit_next: self.rate_limit.load(Ordering::Relaxed),
            timeout_next: self.timeout.load(Ordering::Relaxed),
            drop_next: self.drop.load(Ordering::Relaxed),
            expire_tokens: false,
            permanent_next: self.permanent.load(Ordering::Relaxed),
        }
    }

    /// Consume one pending fault, in a fixed order of precedence.
    pub(crate) fn next(&self) -> Option<Fault> {
        let take = |c: &AtomicU32| {
            c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        };
        [
            (&self.drop, Fault::Drop),
            (&self.timeout, Fault::Timeout),
            (&self.fail, Fault::Fail),
            (&self.busy, Fault::Busy),
            (&self.rate_limit, Fault::RateLimit),
            (&self.permanent, Fault::Permanent),
        ]
        .into_iter()
        .find(|(c, _)| c.load(Ordering::Relaxed) > 0 && take(c))
        .map(|(_, f)| f)
    }
}

/// What happened to one recipient at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    Undelivered,
    Clicked,
    /// Unknown at the provider (ids starting with `invalid`).
    Invalid,
}

/// Recipients of one message or task, for the pull status APIs.
pub(crate) struct Record {
    /// When the outcomes become visible.
    pub due: Instant,
    pub accepted: Instant,
    pub items: Vec<(String, Outcome)>,
}

#[derive(Default)]
struct RecordStore {
    map: HashMap<u64, Arc<Record>>,
    order: VecDeque<(u64, usize)>,
    recipients: usize,
}

#[derive(Default)]
struct IdemStore {
    map: HashMap<String, (Instant, Bytes)>,
    order: VecDeque<(String, Instant)>,
}

/// Why a presented token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    Missing,
    Unknown,
    Expired,
    /// Replaced by a newer fetch and past the overlap (WeChat).
    Superseded,
}

struct TokenEntry {
    token: String,
    expires: Instant,
    superseded_at: Option<Instant>,
}

/// Issued access tokens, newest last.
#[derive(Default)]
pub(crate) struct TokenStore {
    entries: VecDeque<TokenEntry>,
}

/// How long a superseded WeChat token keeps working.
pub(crate) const SUPERSEDE_OVERLAP: Duration = Duration::from_secs(5);

impl TokenStore {
    /// The newest token if it is still usable, with its remaining lifetime.
    pub(crate) fn current(&self, now: Instant) -> Option<(&str, Duration)> {
        self.entries
            .back()
            .filter(|e| e.expires > now && e.superseded_at.is_none())
            .map(|e| (e.token.as_str(), e.expires - now))
    }

    /// Extend the newest token's lifetime (DingTalk hands the same one back, renewed).
    pub(crate) fn extend_current(&mut self, now: Instant, ttl: Duration) {
        if let Some(e) = self.entries.back_mut() {
            e.expires = now + ttl;
        }
    }

    pub(crate) fn issue(&mut self, token: String, now: Instant, ttl: Duration, supersede: bool) {
        if supersede {
            for e in self.entries.iter_mut() {
                e.superseded_at.get_or_insert(now);
            }
        }
        if self.entries.len() >= TOKENS_CAP {
            self.entries.pop_front();
        }
        self.entries.push_back(TokenEntry {
            token,
            expires: now + ttl,
            superseded_at: None,
        });
    }

    pub(crate) fn expire_all(&mut self, now: Instant) {
        for e in self.entries.iter_mut() {
            e.expires = e.expires.min(now);
        }
    }

    pub(crate) fn check(&self, token: Option<&str>, now: Instant) -> TokenCheck {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return TokenCheck::Missing;
        };
        match self.entries.iter().rev().find(|e| e.token == token) {
            None => TokenCheck::Unknown,
            Some(e) if e.expires <= now => TokenCheck::Expired,
            Some(e)
                if e.superseded_at
                    .is_some_and(|t| t + SUPERSEDE_OVERLAP <= now) =>
            {
                TokenCheck::Superseded
            }
            Some(_) => TokenCheck::Valid,
        }
    }
}

struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

/// The state one simulator's request handlers share.
pub(crate) struct Sim {
    pub cfg: SimConfig,
    pub counters: Counters,
    pub faults: FaultSwitches,
    pub delay: Duration,
    pub token_ttl: Duration,
    /// How old a message may be and still be recalled.
    pub recall_window: Duration,
    /// Sent ids that can be recalled, and the recalls answered.
    pub recalls: Recalls,
    received: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    tokens: Mutex<TokenStore>,
    bucket: Option<Mutex<Bucket>>,
    records: Mutex<RecordStore>,
    idem: Mutex<IdemStore>,
    pushes: Option<mpsc::Sender<Pending>>,
}

struct Entry {
    recipient: String,
    provider_id: String,
    body: Bytes,
    at_ms: u64,
}

impl Sim {
    pub(crate) fn new(cfg: SimConfig, pushes: Option<mpsc::Sender<Pending>>) -> Self {
        let bucket = cfg.rate_per_second.map(|r| {
            let rate = f64::from(r.max(1));
            Mutex::new(Bucket {
                rate,
                tokens: rate,
                last: Instant::now(),
            })
        });
        Self {
            delay: Duration::from_millis(cfg.receipt_delay_ms),
            token_ttl: Duration::from_secs(cfg.token_ttl_seconds),
            recall_window: Duration::from_secs(cfg.recall_window_seconds),
            recalls: Recalls::default(),
            counters: Counters::default(),
            faults: FaultSwitches::default(),
            received: Mutex::new(VecDeque::new()),
            // Ids start from the clock so a restarted simulator never repeats one the
            // daemon may still hold; 1000 ids per millisecond of headroom.
            next_id: AtomicU64::new(now_ms().saturating_mul(1000)),
            tokens: Mutex::new(TokenStore::default()),
            bucket,
            records: Mutex::new(RecordStore::default()),
            idem: Mutex::new(IdemStore::default()),
            pushes,
            cfg,
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn set_faults(&self, f: &Faults) {
        self.faults.set(f);
        if f.expire_tokens {
            lock(&self.tokens).expire_all(Instant::now());
        }
    }

    pub(crate) fn tokens(&self) -> MutexGuard<'_, TokenStore> {
        lock(&self.tokens)
    }

    /// Check a presented token; counts refusals.
    pub(crate) fn check_token(&self, token: Option<&str>) -> TokenCheck {
        let c = lock(&self.tokens).check(token, Instant::now());
        if c != TokenCheck::Valid {
            self.counters.token_rejected.inc();
        }
        c
    }

    /// Take one send from the rate bucket; false when over the configured rate.
    pub(crate) fn take_rate(&self) -> bool {
        let Some(b) = &self.bucket else {
            return true;
        };
        let mut b = lock(b);
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
        b.tokens = (b.tokens + refill).min(b.rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Quota, remaining and reset seconds, for providers that advertise them.
    pub(crate) fn rate_window(&self) -> (u32, u32, u32) {
        match &self.bucket {
            None => (u32::MAX, u32::MAX, 0),
            Some(b) => {
                let b = lock(b);
                (b.rate as u32, b.tokens.max(0.0) as u32, 1)
            }
        }
    }

    pub(crate) fn draw_outcome(&self) -> Outcome {
        let m = self.cfg.outcomes;
        let total = u64::from(m.delivered) + u64::from(m.undelivered) + u64::from(m.clicked);
        if total == 0 {
            return Outcome::Delivered;
        }
        let r = rand::rng().random_range(0..total);
        if r < u64::from(m.delivered) {
            Outcome::Delivered
        } else if r < u64::from(m.delivered) + u64::from(m.undelivered) {
            Outcome::Undelivered
        } else {
            Outcome::Clicked
        }
    }

    /// Record accepted recipients in the ring and the counters. The raw body is kept
    /// (one copy shared by the request's recipients) and parsed only when read: far
    /// smaller than a parsed tree, and no reference into the connection's read buffer.
    pub(crate) fn accept<I>(&self, items: I, body: &Bytes)
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let body = Bytes::copy_from_slice(body);
        let at_ms = now_ms();
        let mut n = 0u64;
        let mut ring = lock(&self.received);
        for (recipient, provider_id) in items {
            if ring.len() >= RECEIVED_CAP {
                ring.pop_front();
            }
            ring.push_back(Entry {
                recipient,
                provider_id,
                body: body.clone(),
                at_ms,
            });
            n += 1;
        }
        drop(ring);
        self.counters.recipients_accepted.add(n);
    }

    pub(crate) fn received_count(&self) -> usize {
        lock(&self.received).len()
    }

    /// The last `limit` accepted recipients, oldest first.
    pub(crate) fn received(&self, limit: usize) -> Vec<Received> {
        let ring = lock(&self.received);
        let skip = ring.len().saturating_sub(limit);
        ring.iter()
            .skip(skip)
            .map(|e| Received {
                recipient: e.recipient.clone(),
                provider_id: e.provider_id.clone(),
                body: parse_body(&e.body),
                at_ms: e.at_ms,
            })
            .collect()
    }

    pub(crate) fn store_record(&self, id: u64, items: Vec<(String, Outcome)>) {
        let now = Instant::now();
        let n = items.len();
        let rec = Arc::new(Record {
            due: now + self.delay,
            accepted: now,
            items,
        });
        let mut s = lock(&self.records);
        s.map.insert(id, rec);
        s.order.push_back((id, n));
        s.recipients += n;
        while s.order.len() > RECORDS_CAP || s.recipients > RECORD_RECIPIENTS_CAP {
            let Some((old, n)) = s.order.pop_front() else {
                break;
            };
            s.map.remove(&old);
            s.recipients -= n;
        }
    }

    pub(crate) fn record(&self, id: u64) -> Option<Arc<Record>> {
        lock(&self.records).map.get(&id).cloned()
    }

    /// The response saved for an idempotency key within the last hour.
    pub(crate) fn idem_get(&self, key: &str) -> Option<Bytes> {
        let s = lock(&self.idem);
        s.map
            .get(key)
            .filter(|(at, _)| at.elapsed() < IDEM_TTL)
            .map(|(_, b)| b.clone())
    }

    pub(crate) fn idem_put(&self, key: String, body: Bytes) {
        let now = Instant::now();
        let mut s = lock(&self.idem);
        while let Some((k, at)) = s.order.front() {
            if s.order.len() < IDEM_CAP && at.elapsed() < IDEM_TTL {
                break;
            }
            let k = k.clone();
            let at = *at;
            s.order.pop_front();
            // Only drop the map entry if it was not refreshed since.
            if s.map.get(&k).is_some_and(|(t, _)| *t == at) {
                s.map.remove(&k);
            }
        }
        s.order.push_back((key.clone(), now));
        s.map.insert(key, (now, body));
    }

    /// Queue a receipt for pushing after the receipt delay.
    pub(crate) fn push_receipt(&self, push: Push) {
        let Some(tx) = &self.pushes else {
            return;
        };
        let pending = Pending {
            due: Instant::now() + self.delay,
            push,
        };
        if tx.try_send(pending).is_err() {
            self.counters.receipts_dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_tokens_work_through_the_overlap_only() {
        let mut s = TokenStore::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(7200);
        s.issue("a".into(), t0, ttl, true);
        s.issue("b".into(), t0, ttl, true);
        assert_eq!(
            s.check(Some("a"), t0 + Duration::from_secs(4)),
            TokenCheck::Valid
        );
        assert_eq!(
            s.check(Some("a"), t0 + SUPERSEDE_OVERLAP),
            TokenCheck::Superseded
        );
        assert_eq!(
            s.check(Some("b"), t0 + SUPERSEDE_OVERLAP),
            TokenCheck::Valid
        );
        assert_eq!(s.check(Some("b"), t0 + ttl), TokenCheck::Expired);
        assert_eq!(s.check(Some("c"), t0), TokenCheck::Unknown);
        assert_eq!(s.check(None, t0), TokenCheck::Missing);
        assert_eq!(s.current(t0).map(|(t, _)| t), Some("b"));
        s.expire_all(t0);
        assert_eq!(s.check(Some("b"), t0), TokenCheck::Expired);
        assert!(s.current(t0).is_none());
    }

    #[test]
    fn faults_count_down_in_order() {
        let f = FaultSwitches::default();
        f.set(&Faults {
            permanent_next: 1,
            busy_next: 2,
            drop_next: 1,
            ..Faults::default()
        });
        let seen: Vec<_> = std::iter::from_fn(|| f.next()).collect();
        assert_eq!(
            seen,
            [Fault::Drop, Fault::Busy, Fault::Busy, Fault::Permanent]
        );
        assert_eq!(f.snapshot(), Faults::default());
    }

    #[test]
    fn bucket_allows_a_burst_of_rate_then_refuses() {
        let sim = Sim::new(
            SimConfig {
                rate_per_second: Some(3),
                ..SimConfig::default()
            },
            None,
        );
        assert!((0..3).all(|_| sim.take_rate()));
        assert!(!sim.take_rate());
    }

    #[test]
    fn handles_cross_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<crate::SimHandle>();
        is_send_sync::<crate::smtp::SmtpHandle>();
    }
}
