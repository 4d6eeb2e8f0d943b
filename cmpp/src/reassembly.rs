//! Joining the segments of a received long message (MO on the SP side, SUBMIT segments on a
//! gateway simulator) back into one Msg_Content.
//!
//! Segments are grouped by a caller-chosen key (typically the sender and recipient numbers)
//! plus the UDH reference and total, so two messages from different senders that happen to
//! share a reference do not mix. Segments may arrive in any order; a repeated segment is
//! ignored (the first copy wins). Memory is bounded: beyond `max_pending` unfinished
//! messages, the one that started earliest is dropped.

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::TextError;
use crate::text::{self, MsgFmt};
use crate::udh::{self, Concat};

/// Default bound on unfinished messages.
pub const DEFAULT_MAX_PENDING: usize = 1024;

/// Collects segments until each message is complete.
#[derive(Debug)]
pub struct Reassembler<K> {
    pending: HashMap<(K, u16, u8), Pending>,
    max_pending: usize,
    next_arrival: u64,
}

#[derive(Debug)]
struct Pending {
    parts: Vec<Option<Vec<u8>>>,
    received: usize,
    /// Order of the message's first segment, for evicting the oldest.
    arrival: u64,
}

impl<K: Eq + Hash + Clone> Default for Reassembler<K> {
    fn default() -> Self {
        Reassembler::new(DEFAULT_MAX_PENDING)
    }
}

impl<K: Eq + Hash + Clone> Reassembler<K> {
    /// A reassembler holding at most `max_pending` unfinished messages (at least 1).
    pub fn new(max_pending: usize) -> Self {
        Reassembler {
            pending: HashMap::new(),
            max_pending: max_pending.max(1),
            next_arrival: 0,
        }
    }

    /// Number of unfinished messages held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one segment's payload (the bytes after the UDH). Returns the whole message's
    /// payload, segments joined in order, once the last missing segment arrives.
    ///
    /// # Errors
    /// [`TextError::InvalidSegment`] for total 0, number 0 or number > total.
    pub fn push(
        &mut self,
        key: K,
        concat: Concat,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, TextError> {
        let Concat {
            reference,
            total,
            number,
        } = concat;
        if total == 0 || number == 0 || number > total {
            return Err(TextError::InvalidSegment { total, number });
        }
        if total == 1 {
            return Ok(Some(payload.to_vec()));
        }
        let slot_key = (key, reference, total);
        if !self.pending.contains_key(&slot_key) {
            if self.pending.len() >= self.max_pending {
                self.evict_oldest();
            }
            self.next_arrival += 1;
        }
        let arrival = self.next_arrival;
        let entry = self
            .pending
            .entry(slot_key.clone())
            .or_insert_with(|| Pending {
                parts: vec![None; usize::from(total)],
                received: 0,
                arrival,
            });
        let Some(slot) = entry.parts.get_mut(usize::from(number) - 1) else {
            return Err(TextError::InvalidSegment { total, number });
        };
        if slot.is_some() {
            return Ok(None);
        }
        *slot = Some(payload.to_vec());
        entry.received += 1;
        if entry.received < entry.parts.len() {
            return Ok(None);
        }
        let whole = self
            .pending
            .remove(&slot_key)
            .map(|done| done.parts.into_iter().flatten().flatten().collect());
        Ok(whole)
    }

    /// Adds a segment given as received: `tp_udhi` and the raw Msg_Content. Content without
    /// a UDH, or whose UDH has no concatenation element, is a whole message by itself.
    ///
    /// # Errors
    /// As [`push`](Self::push), plus [`TextError::MalformedUdh`].
    pub fn push_content(
        &mut self,
        key: K,
        tp_udhi: u8,
        content: &[u8],
    ) -> Result<Option<Vec<u8>>, TextError> {
        if !udh::has_udhi(tp_udhi) {
            return Ok(Some(content.to_vec()));
        }
        match udh::parse(content)? {
            (Some(concat), payload) => self.push(key, concat, payload),
            (None, payload) => Ok(Some(payload.to_vec())),
        }
    }

    /// [`push_content`](Self::push_content), then decodes the completed message as `fmt`.
    ///
    /// # Errors
    /// As [`push_content`](Self::push_content), plus the decoding errors of
    /// [`text::decode`].
    pub fn push_text(
        &mut self,
        key: K,
        tp_udhi: u8,
        content: &[u8],
        fmt: MsgFmt,
    ) -> Result<Option<String>, TextError> {
        self.push_content(key, tp_udhi, content)?
            .map(|whole| text::decode(&whole, fmt))
            .transpose()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .pending
            .iter()
            .min_by_key(|(_, pending)| pending.arrival)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.pending.remove(&key);
        }
    }
}
