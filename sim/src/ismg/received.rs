//! What arrived: the ring of accepted SUBMITs and the ring of whole messages, with the
//! long-message reassembly between them.
//!
//! Segments are joined per recipient by the codec's [`Reassembler`], keyed by (account,
//! recipient) plus the UDH reference and total. The Reassembler returns payloads only, so
//! the Msg_Ids of the parts are tracked beside it under the same key and the same bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use umsd_cmpp::reassembly::Reassembler;
use umsd_cmpp::udh::{self, Concat};
use umsd_cmpp::{text, MsgId, Submit};

use super::state::{lock, now_ms};
use super::{ReceivedMessage, SubmitRecord, MESSAGES_CAP, SUBMITS_CAP};

/// Unfinished long messages held at once (oldest dropped beyond).
const PENDING_MESSAGES: usize = 10_000;

/// (account, recipient).
type Key = (String, String);

#[derive(Default)]
pub(crate) struct Received {
    submits: Mutex<VecDeque<SubmitRecord>>,
    messages: Mutex<VecDeque<ReceivedMessage>>,
    joiner: Mutex<Joiner>,
}

struct Joiner {
    reassembler: Reassembler<Key>,
    /// Msg_Ids of the segments received so far, by (key, reference, total).
    part_ids: HashMap<(Key, u16, u8), PartIds>,
    next_arrival: u64,
}

struct PartIds {
    ids: Vec<Option<MsgId>>,
    /// Order of the first segment, for dropping the oldest like the Reassembler does.
    arrival: u64,
}

impl Default for Joiner {
    fn default() -> Self {
        Joiner {
            reassembler: Reassembler::new(PENDING_MESSAGES),
            part_ids: HashMap::new(),
            next_arrival: 0,
        }
    }
}

/// The segment's payload after its UDH (all of it without one) and its place in a long
/// message, if it has a concatenation element. `None` for a malformed UDH.
fn split_udh(tp_udhi: u8, content: &[u8]) -> Option<(Option<Concat>, &[u8])> {
    if udh::has_udhi(tp_udhi) {
        udh::parse(content).ok()
    } else {
        Some((None, content))
    }
}

impl Received {
    /// Records an accepted SUBMIT whose first recipient got `msg_id`, and feeds each
    /// recipient's copy of the segment to reassembly.
    pub fn record(
        &self,
        account: &str,
        connection: u64,
        sequence_id: u32,
        s: &Submit,
        msg_id: MsgId,
    ) {
        let at_ms = now_ms();
        let parsed = split_udh(s.tp_udhi, &s.msg_content);
        let text = parsed.and_then(|(_, payload)| text::decode(payload, s.msg_fmt).ok());
        let dests: Vec<String> = s
            .dest_terminal_ids
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let src_id = s.src_id.to_string_lossy().into_owned();

        let mut done = Vec::new();
        {
            let mut joiner = lock(&self.joiner);
            for (dest, id_offset) in dests.iter().zip(0u64..) {
                let id = MsgId(msg_id.0.wrapping_add(id_offset));
                let key = (account.to_owned(), dest.clone());
                let whole = match parsed {
                    Some((Some(concat), payload)) if concat.total > 1 => {
                        joiner.push(key, concat, payload, id)
                    }
                    Some((_, payload)) => Some((payload.to_vec(), vec![id])),
                    // A malformed UDH: keep the content as it came, as a message by itself.
                    None => Some((s.msg_content.clone(), vec![id])),
                };
                if let Some((content, msg_ids)) = whole {
                    done.push(ReceivedMessage {
                        account: account.to_owned(),
                        dest: dest.clone(),
                        src_id: src_id.clone(),
                        msg_fmt: s.msg_fmt,
                        text: text::decode(&content, s.msg_fmt).ok(),
                        content,
                        parts: u8::try_from(msg_ids.len()).unwrap_or(u8::MAX),
                        msg_ids,
                        at_ms,
                    });
                }
            }
        }
        if !done.is_empty() {
            let mut ring = lock(&self.messages);
            for m in done {
                if ring.len() >= MESSAGES_CAP {
                    ring.pop_front();
                }
                ring.push_back(m);
            }
        }

        let record = SubmitRecord {
            account: account.to_owned(),
            connection,
            sequence_id,
            msg_id,
            dest_terminal_ids: dests,
            src_id,
            service_id: s.service_id.to_string_lossy().into_owned(),
            msg_fmt: s.msg_fmt,
            tp_udhi: s.tp_udhi,
            pk_total: s.pk_total,
            pk_number: s.pk_number,
            content: s.msg_content.clone(),
            text,
            registered_delivery: s.registered_delivery,
            at_ms,
        };
        let mut ring = lock(&self.submits);
        if ring.len() >= SUBMITS_CAP {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    pub fn submits(&self) -> Vec<SubmitRecord> {
        lock(&self.submits).iter().cloned().collect()
    }

    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.messages).iter().cloned().collect()
    }
}

impl Joiner {
    /// Adds one segment; returns the joined payload and the parts' ids once complete.
    fn push(
        &mut self,
        key: Key,
        concat: Concat,
        payload: &[u8],
        id: MsgId,
    ) -> Option<(Vec<u8>, Vec<MsgId>)> {
        let slot = (key.clone(), concat.reference, concat.total);
        let whole = match self.reassembler.push(key, concat, payload) {
            Ok(whole) => whole,
            // Number 0 or above the total: not a place in any message; keep it alone.
            Err(_) => return Some((payload.to_vec(), vec![id])),
        };
        if !self.part_ids.contains_key(&slot) && self.part_ids.len() >= PENDING_MESSAGES {
            self.evict_oldest();
        }
        let arrival = self.next_arrival;
        let entry = self
            .part_ids
            .entry(slot.clone())
            .or_insert_with(|| PartIds {
                ids: vec![None; usize::from(concat.total)],
                arrival,
            });
        if entry.arrival == arrival {
            self.next_arrival += 1;
        }
        if let Some(place @ None) = entry.ids.get_mut(usize::from(concat.number) - 1) {
            // The first copy of a repeated segment wins, as in the Reassembler.
            *place = Some(id);
        }
        let content = whole?;
        let ids = self
            .part_ids
            .remove(&slot)
            .map(|p| p.ids.into_iter().flatten().collect())
            .unwrap_or_default();
        Some((content, ids))
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .part_ids
            .iter()
            .min_by_key(|(_, p)| p.arrival)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.part_ids.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umsd_cmpp::split::{split_message, SplitOptions};
    use umsd_cmpp::OctetString;

    #[test]
    fn joins_segments_out_of_order_with_their_ids() {
        let text = "长".repeat(150);
        let segments = split_message(&text, &SplitOptions::default()).unwrap();
        assert_eq!(segments.len(), 3);
        let template = Submit {
            dest_terminal_ids: vec![OctetString::from("13800138000")],
            ..Submit::default()
        };
        let r = Received::default();
        for (i, seg) in [2usize, 0, 1].into_iter().map(|i| (i, &segments[i])) {
            r.record(
                "900001",
                1,
                i as u32,
                &template.with_segment(seg),
                MsgId(100 + i as u64),
            );
        }
        let msgs = r.messages();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].text.as_deref(), Some(text.as_str()));
        assert_eq!(msgs[0].msg_ids, [MsgId(100), MsgId(101), MsgId(102)]);
        assert_eq!(msgs[0].parts, 3);
        assert_eq!(r.submits().len(), 3);
        assert!(r
            .submits()
            .iter()
            .all(|s| s.text.as_deref().is_some_and(|t| t.starts_with('长'))));
    }

    #[test]
    fn udh_with_0x40_and_seven_byte_form() {
        let r = Received::default();
        let mut s = Submit {
            dest_terminal_ids: vec![OctetString::from("1")],
            tp_udhi: 0x40,
            pk_total: 2,
            ..Submit::default()
        };
        s.msg_content = vec![0x06, 0x08, 0x04, 0x12, 0x34, 2, 1, b'a', b'b'];
        r.record("900001", 1, 1, &s, MsgId(7));
        s.msg_content = vec![0x06, 0x08, 0x04, 0x12, 0x34, 2, 2, b'c'];
        r.record("900001", 1, 2, &s, MsgId(8));
        let msgs = r.messages();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].text.as_deref(), Some("abc"));
        assert_eq!(msgs[0].msg_ids, [MsgId(7), MsgId(8)]);
    }
}
