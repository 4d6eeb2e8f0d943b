//! umsd's own ids: 64-bit, time-ordered, unique per node, shown as `msg_` + 13 Crockford
//! base32 characters.
//!
//! Layout (most significant first): 44 bits of milliseconds since 2020-01-01 UTC, 8 bits of
//! node id, 12 bits of sequence. The creation time — and so the day partition a row lives
//! in — can be read back from the id alone.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// 2020-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: i64 = 1_577_836_800_000;
const SEQ_BITS: u32 = 12;
const NODE_BITS: u32 = 8;
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Hands out strictly increasing ids for one node. Cheap enough to call per message.
#[derive(Debug)]
pub struct IdGenerator {
    node: u8,
    /// `(ms << SEQ_BITS) | seq` of the last id handed out.
    last: AtomicU64,
}

impl IdGenerator {
    pub fn new(node: u8) -> Self {
        Self {
            node,
            last: AtomicU64::new(0),
        }
    }

    /// The next id; if more than 4096 ids are asked for within one millisecond the clock
    /// part runs ahead of the wall clock for a moment, which keeps ids unique.
    pub fn next_id(&self) -> i64 {
        let now = (Utc::now().timestamp_millis() - EPOCH_MS).max(0) as u64;
        let floor = now << SEQ_BITS;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = floor.max(prev + 1);
            match self.last.compare_exchange_weak(
                prev,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return self.compose(candidate),
                Err(actual) => prev = actual,
            }
        }
    }

    fn compose(&self, state: u64) -> i64 {
        let ms = state >> SEQ_BITS;
        let seq = state & ((1 << SEQ_BITS) - 1);
        ((ms << (NODE_BITS + SEQ_BITS)) | (u64::from(self.node) << SEQ_BITS) | seq) as i64
    }
}

/// The creation time encoded in an id.
pub fn id_time(id: i64) -> DateTime<Utc> {
    let ms = (id as u64 >> (NODE_BITS + SEQ_BITS)) as i64 + EPOCH_MS;
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `msg_` + 13 base32 characters.
pub fn format_message_id(id: i64) -> String {
    let mut out = String::with_capacity(17);
    out.push_str("msg_");
    let v = id as u64;
    // 13 characters × 5 bits = 65 bits; the first character carries the top 4 bits.
    for i in (0..13).rev() {
        let idx = ((v >> (i * 5)) & 0x1f) as usize;
        out.push(CROCKFORD[idx] as char);
    }
    out
}

/// Parses `msg_…` back into an id; `None` for anything that is not one of ours.
pub fn parse_message_id(s: &str) -> Option<i64> {
    let body = s.strip_prefix("msg_")?;
    if body.len() != 13 {
        return None;
    }
    let mut v: u64 = 0;
    for (i, c) in body.bytes().enumerate() {
        let d = CROCKFORD
            .iter()
            .position(|&x| x == c.to_ascii_uppercase())? as u64;
        if i == 0 && d > 0xf {
            return None;
        }
        v = (v << 5) | d;
    }
    Some(v as i64)
}

/// umsd's id of a message (`msg_…` outside, a time-ordered 64-bit integer inside): the
/// primary key every delivery, dispatch row and receipt names its message by. Not to be
/// confused with the caller's `message_id` ([`IdempotencyKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessagePk(pub i64);

impl MessagePk {
    /// The creation time encoded in the id: the day partition its rows live in.
    pub fn created_at(self) -> DateTime<Utc> {
        id_time(self.0)
    }

    /// Parses `msg_…`; `None` for anything that is not one of ours.
    pub fn parse(s: &str) -> Option<Self> {
        parse_message_id(s).map(Self)
    }
}

impl std::fmt::Display for MessagePk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_message_id(self.0))
    }
}

impl ToSql for MessagePk {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for MessagePk {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        i64::from_sql(ty, raw).map(Self)
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as FromSql>::accepts(ty)
    }
}

/// The caller's own id of a message (`message_id` in a send request): 1–64 of
/// `[A-Za-z0-9_.:-]`, unique per app; a replay with the same key is the same message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Option<Self> {
        is_idempotency_key(s).then(|| Self(s.to_owned()))
    }

    /// A key read back from the database, where only valid keys are written.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// 1–64 of `[A-Za-z0-9_.:-]`: an idempotency key, and the ids of per-app objects.
pub fn is_idempotency_key(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let g = IdGenerator::new(3);
        let mut prev = 0;
        for _ in 0..10_000 {
            let id = g.next_id();
            assert!(id > prev);
            prev = id;
            let s = format_message_id(id);
            assert_eq!(parse_message_id(&s), Some(id));
        }
        let t = id_time(prev);
        assert!((Utc::now() - t).num_seconds().abs() < 5);
    }

    #[test]
    fn foreign_strings_are_not_ids() {
        assert_eq!(parse_message_id("order-1"), None);
        assert_eq!(parse_message_id("msg_"), None);
        assert_eq!(parse_message_id("msg_ZZZZZZZZZZZZZ"), None);
        assert_eq!(parse_message_id("msg_0000000000001"), Some(1));
    }
}
