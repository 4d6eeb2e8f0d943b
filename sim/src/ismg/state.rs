//! State shared by every connection of one simulator: counters, the connection registry
//! (and with it login admission and report routing), fault switches, the accounts' rate
//! buckets and the Stat mix. Nothing here does I/O; sessions and the report scheduler act
//! on it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::sync::{mpsc, watch, Notify};
use umsd_cmpp::split::{self, SplitOptions};
use umsd_cmpp::{Connect, OctetString, Version};

use super::clock::MsgIdGen;
use super::received::Received;
use super::reports::Reports;
use super::session::{MoMessage, Out};
use super::{ConnectionInfo, IsmgConfig, IsmgFaults, IsmgStats};

/// Width of Src_terminal_Id / Dest_Id in 2.0, the narrower layout an MO may be sent in.
const MO_NUMBER_MAX: usize = 21;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts keyed by a status or result code.
#[derive(Default)]
pub(crate) struct ByCode(Mutex<BTreeMap<u32, u64>>);

impl ByCode {
    pub fn inc(&self, code: u32) {
        *lock(&self.0).entry(code).or_default() += 1;
    }
    fn get(&self) -> BTreeMap<u32, u64> {
        lock(&self.0).clone()
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub connections_open: Counter,
    pub logins_ok: Counter,
    pub logins_refused: ByCode,
    pub submits: Counter,
    pub submit_resp: ByCode,
    pub flow_controlled: Counter,
    pub stalled: Counter,
    pub reports_sent: Counter,
    pub reports_requeued: Counter,
    pub reports_dropped: Counter,
    pub deliver_resps: Counter,
    pub deliver_resp_mismatches: Counter,
    pub mo_sent: Counter,
    pub active_tests_sent: Counter,
    pub active_test_resps: Counter,
    pub active_tests_received: Counter,
    pub terminates_received: Counter,
    pub malformed: Counter,
    pub unexpected: Counter,
    pub connections_dropped: Counter,
}

/// What a session shares with the registry: the handle's way to reach into a connection.
#[derive(Default)]
pub(crate) struct ConnShared {
    /// Close the connection now, without TERMINATE (a stored permit if the session is busy).
    pub close: Notify,
    pub submits: AtomicU64,
    pub in_flight: AtomicUsize,
    /// SUBMITs left before the connection is dropped; 0 = not armed.
    pub drop_after: AtomicU32,
}

/// One open TCP connection in the registry.
struct Conn {
    peer: SocketAddr,
    shared: Arc<ConnShared>,
    login: Option<Login>,
}

struct Login {
    account: String,
    version: Version,
    logged_in_at_ms: u64,
    tx: mpsc::Sender<Out>,
}

/// Token bucket with burst = rate.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if there are that many. A demand above the burst needs a full
    /// bucket, and empties it, so a large group SUBMIT is not refused forever.
    fn take(&mut self, n: u32) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        let need = f64::from(n).min(self.rate);
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

struct Account {
    password: Vec<u8>,
    bucket: Option<Mutex<Bucket>>,
}

/// The faults a session consults; `drop_*` live on the connections.
#[derive(Default)]
struct Faults {
    refuse_logins: Option<u32>,
    stall_next: u32,
    flow_control_next: u32,
    report_before_resp: bool,
    stop_reading: bool,
}

/// The simulator's shared state.
pub(crate) struct Ismg {
    pub cfg: IsmgConfig,
    pub counters: Counters,
    pub ids: MsgIdGen,
    pub reports: Reports,
    pub received: Received,
    accounts: HashMap<String, Account>,
    stat_table: Vec<(OctetString, u32)>,
    stat_total: u64,
    faults: Mutex<Faults>,
    /// Bumped on every fault change so sessions waiting on `stop_reading` re-check.
    fault_changes: watch::Sender<u64>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: AtomicU64,
    /// UDH reference of the next long MO message.
    mo_reference: AtomicU32,
    /// Spreads MO messages over an account's connections.
    round_robin: AtomicUsize,
}

impl Ismg {
    pub fn new(cfg: IsmgConfig) -> Ismg {
        let accounts = cfg
            .accounts
            .iter()
            .map(|a| {
                let account = Account {
                    password: a.password.as_bytes().to_vec(),
                    bucket: cfg.rate_per_second.map(|r| Mutex::new(Bucket::new(r))),
                };
                (a.account.clone(), account)
            })
            .collect();
        let stat_table: Vec<(OctetString, u32)> = cfg
            .stats
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(s, w)| (OctetString::from(s.as_str()), *w))
            .collect();
        let stat_total = stat_table.iter().map(|(_, w)| u64::from(*w)).sum();
        // A random start keeps ids of simulators restarted within one second (as tests
        // do) from repeating each other.
        let first_sequence = rand::rng().random::<u16>();
        Ismg {
            ids: MsgIdGen::new(cfg.gateway_id, first_sequence),
            counters: Counters::default(),
            reports: Reports::default(),
            received: Received::default(),
            accounts,
            stat_table,
            stat_total,
            faults: Mutex::new(Faults::default()),
            fault_changes: watch::channel(0).0,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            mo_reference: AtomicU32::new(0),
            round_robin: AtomicUsize::new(0),
            cfg,
        }
    }

    // ---- connections -------------------------------------------------------------------

    /// Registers a freshly accepted connection; returns its id.
    pub fn open_connection(&self, peer: SocketAddr) -> (u64, Arc<ConnShared>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(ConnShared::default());
        lock(&self.conns).insert(
            id,
            Conn {
                peer,
                shared: Arc::clone(&shared),
                login: None,
            },
        );
        self.counters.connections_open.inc();
        (id, shared)
    }

    /// Forgets a connection; no report or MO is routed to it afterwards.
    pub fn close_connection(&self, id: u64) {
        if lock(&self.conns).remove(&id).is_some() {
            self.counters.connections_open.dec();
        }
    }

    /// Decides a CONNECT and, when it succeeds, marks the connection logged in with `tx`
    /// as the way to reach it. Returns the account and its secret, or the refusal status.
    pub fn log_in(
        &self,
        id: u64,
        connect: &Connect,
        version: Option<Version>,
        tx: mpsc::Sender<Out>,
    ) -> Result<(String, Vec<u8>), u32> {
        if let Some(status) = lock(&self.faults).refuse_logins {
            return Err(status);
        }
        let Some(version) = version else {
            return Err(umsd_cmpp::ConnectResp::VERSION_TOO_HIGH);
        };
        let name = connect.source_addr.to_string_lossy().into_owned();
        let Some(account) = self.accounts.get(&name) else {
            return Err(umsd_cmpp::ConnectResp::ILLEGAL_SOURCE_ADDR);
        };
        if !connect.verify(&account.password) {
            return Err(umsd_cmpp::ConnectResp::AUTHENTICATION_FAILED);
        }
        {
            // Count and insert under one lock so concurrent logins cannot both squeeze in.
            let mut conns = lock(&self.conns);
            let logged_in = conns
                .values()
                .filter(|c| c.login.as_ref().is_some_and(|l| l.account == name))
                .count();
            if logged_in >= self.cfg.max_connections {
                return Err(umsd_cmpp::ConnectResp::OTHER);
            }
            let Some(conn) = conns.get_mut(&id) else {
                // Dropped by a fault while logging in.
                return Err(umsd_cmpp::ConnectResp::OTHER);
            };
            conn.login = Some(Login {
                account: name.clone(),
                version,
                logged_in_at_ms: now_ms(),
                tx,
            });
        }
        // Reports may be waiting for this account.
        self.reports.wake();
        Ok((name, account.password.clone()))
    }

    /// A way to reach a logged-in connection of `account`: `preferred` if it still is one,
    /// else the account's connections in turn.
    pub fn route(&self, account: &str, preferred: Option<u64>) -> Option<mpsc::Sender<Out>> {
        let conns = lock(&self.conns);
        let of_account = |c: &Conn| {
            c.login
                .as_ref()
                .filter(|l| l.account == account)
                .map(|l| l.tx.clone())
        };
        if let Some(tx) = preferred.and_then(|id| conns.get(&id)).and_then(of_account) {
            return Some(tx);
        }
        let mut ids: Vec<u64> = conns
            .iter()
            .filter(|(_, c)| of_account(c).is_some())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed) % ids.len();
        conns.get(&ids[turn]).and_then(of_account)
    }

    /// Whether `account` has a logged-in connection.
    pub fn has_connection(&self, account: &str) -> bool {
        lock(&self.conns)
            .values()
            .any(|c| c.login.as_ref().is_some_and(|l| l.account == account))
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let conns = lock(&self.conns);
        let mut out: Vec<ConnectionInfo> = conns
            .iter()
            .filter_map(|(id, c)| {
                let l = c.login.as_ref()?;
                Some(ConnectionInfo {
                    id: *id,
                    account: l.account.clone(),
                    version: l.version,
                    peer: c.peer,
                    logged_in_at_ms: l.logged_in_at_ms,
                    submits: c.shared.submits.load(Ordering::Relaxed),
                    in_flight: c.shared.in_flight.load(Ordering::Relaxed),
                })
            })
            .collect();
        out.sort_by_key(|c| c.id);
        out
    }

    // ---- faults ------------------------------------------------------------------------

    pub fn set_faults(&self, f: IsmgFaults) {
        *lock(&self.faults) = Faults {
            refuse_logins: f.refuse_logins,
            stall_next: f.stall_next,
            flow_control_next: f.flow_control_next,
            report_before_resp: f.report_before_resp,
            stop_reading: f.stop_reading,
        };
        let conns = lock(&self.conns);
        for c in conns.values().filter(|c| c.login.is_some()) {
            c.shared
                .drop_after
                .store(f.drop_after_submits, Ordering::Relaxed);
        }
        if f.drop_connections {
            for c in conns.values() {
                c.shared.close.notify_one();
            }
        }
        drop(conns);
        self.fault_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn faults(&self) -> IsmgFaults {
        let drop_after_submits = lock(&self.conns)
            .values()
            .map(|c| c.shared.drop_after.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        let f = lock(&self.faults);
        IsmgFaults {
            refuse_logins: f.refuse_logins,
            drop_connections: false,
            drop_after_submits,
            stall_next: f.stall_next,
            flow_control_next: f.flow_control_next,
            report_before_resp: f.report_before_resp,
            stop_reading: f.stop_reading,
        }
    }

    /// A receiver that changes whenever the faults do.
    pub fn fault_changes(&self) -> watch::Receiver<u64> {
        self.fault_changes.subscribe()
    }

    pub fn stop_reading(&self) -> bool {
        lock(&self.faults).stop_reading
    }

    pub fn report_before_resp(&self) -> bool {
        lock(&self.faults).report_before_resp
    }

    /// Consumes one `stall_next`, if any is left.
    pub fn take_stall(&self) -> bool {
        let mut f = lock(&self.faults);
        f.stall_next
            .checked_sub(1)
            .map(|n| f.stall_next = n)
            .is_some()
    }

    /// Consumes one `flow_control_next`, if any is left.
    pub fn take_flow_control(&self) -> bool {
        let mut f = lock(&self.faults);
        f.flow_control_next
            .checked_sub(1)
            .map(|n| f.flow_control_next = n)
            .is_some()
    }

    // ---- SUBMIT admission and reports ---------------------------------------------------

    /// Takes `recipients` tokens from the account's bucket (always true without a rate).
    pub fn take_tokens(&self, account: &str, recipients: u32) -> bool {
        match self.accounts.get(account).and_then(|a| a.bucket.as_ref()) {
            Some(bucket) => lock(bucket).take(recipients),
            None => true,
        }
    }

    /// A Stat drawn from the configured weights (DELIVRD if they are all zero).
    pub fn draw_stat(&self) -> OctetString {
        if self.stat_total == 0 {
            return OctetString::from("DELIVRD");
        }
        let mut pick = rand::rng().random_range(0..self.stat_total);
        for (stat, weight) in &self.stat_table {
            let weight = u64::from(*weight);
            if pick < weight {
                return stat.clone();
            }
            pick -= weight;
        }
        OctetString::from("DELIVRD")
    }

    // ---- MO ------------------------------------------------------------------------------

    pub fn send_mo(&self, account: &str, from: &str, to: &str, text: &str) -> bool {
        if from.len() > MO_NUMBER_MAX || to.len() > MO_NUMBER_MAX {
            tracing::debug!(from, to, "mo numbers do not fit Src_terminal_Id / Dest_Id");
            return false;
        }
        // Truncation intended: the UDH reference is one byte and only needs to differ
        // between messages in flight at the same time.
        let reference = self.mo_reference.fetch_add(1, Ordering::Relaxed) as u8;
        let options = SplitOptions {
            reference,
            ..SplitOptions::default()
        };
        let segments = match split::split_message(text, &options) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "mo text cannot be sent");
                return false;
            }
        };
        let Some(tx) = self.route(account, None) else {
            return false;
        };
        let mo = MoMessage {
            from: OctetString::from(from),
            to: OctetString::from(to),
            segments,
        };
        if tx.try_send(Out::Mo(mo)).is_err() {
            return false;
        }
        self.counters.mo_sent.inc();
        true
    }

    // ---- stats ---------------------------------------------------------------------------

    pub fn stats(&self) -> IsmgStats {
        let c = &self.counters;
        let logged_in = lock(&self.conns)
            .values()
            .filter(|c| c.login.is_some())
            .count();
        IsmgStats {
            connections_open: c.connections_open.get(),
            connections_logged_in: logged_in as u64,
            logins_ok: c.logins_ok.get(),
            logins_refused: c.logins_refused.get(),
            submits: c.submits.get(),
            submit_resp: c.submit_resp.get(),
            flow_controlled: c.flow_controlled.get(),
            stalled: c.stalled.get(),
            reports_sent: c.reports_sent.get(),
            reports_pending: self.reports.len() as u64,
            reports_waiting: self.reports.waiting() as u64,
            reports_requeued: c.reports_requeued.get(),
            reports_dropped: c.reports_dropped.get(),
            deliver_resps: c.deliver_resps.get(),
            deliver_resp_mismatches: c.deliver_resp_mismatches.get(),
            mo_sent: c.mo_sent.get(),
            active_tests_sent: c.active_tests_sent.get(),
            active_test_resps: c.active_test_resps.get(),
            active_tests_received: c.active_tests_received.get(),
            terminates_received: c.terminates_received.get(),
            malformed: c.malformed.get(),
            unexpected: c.unexpected.get(),
            connections_dropped: c.connections_dropped.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = Bucket::new(10);
        assert!((0..10).all(|_| b.take(1)));
        assert!(!b.take(1));
        // A demand above the burst waits for a full bucket instead of never passing.
        let mut b = Bucket::new(5);
        assert!(b.take(50));
        assert!(!b.take(1));
    }

    #[test]
    fn stat_draw_follows_weights() {
        let cfg = IsmgConfig {
            stats: BTreeMap::from([("UNDELIV".to_owned(), 1), ("DELIVRD".to_owned(), 0)]),
            ..IsmgConfig::default()
        };
        let ismg = Ismg::new(cfg);
        assert!((0..100).all(|_| ismg.draw_stat() == "UNDELIV"));
    }
}
