//! The status report carried in a DELIVER's Msg_Content when Registered_Delivery = 1:
//! 60 bytes in 2.0, 71 in 3.0 (Dest_terminal_Id widened from 21 to 32).

use bytes::{BufMut, BytesMut};

use crate::error::{BodyProblem, Error};
use crate::msg_id::MsgId;
use crate::octet::OctetString;
use crate::version::Version;
use crate::wire::{put_octets, Reader};

/// A delivery status report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusReport {
    /// The Msg_Id the ISMG returned in SUBMIT_RESP: the correlation key. (The enclosing
    /// DELIVER's own Msg_Id is a different value.)
    pub msg_id: MsgId,
    /// 7 bytes: DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD, or a 3.0
    /// error code such as `MA:0001`.
    pub stat: OctetString,
    /// YYMMDDHHMM, 10 bytes.
    pub submit_time: OctetString,
    /// YYMMDDHHMM, 10 bytes.
    pub done_time: OctetString,
    /// The recipient, 21 bytes in 2.0, 32 in 3.0.
    pub dest_terminal_id: OctetString,
    pub smsc_sequence: u32,
}

impl StatusReport {
    pub const DELIVERED: &'static str = "DELIVRD";
    /// An intermediate state, not a final outcome; gateways should not forward it, and a
    /// receiver should ignore it.
    pub const ACCEPTED: &'static str = "ACCEPTD";

    /// Whether Stat is DELIVRD.
    pub fn is_delivered(&self) -> bool {
        self.stat == Self::DELIVERED
    }

    /// Whether Stat is a final outcome (anything but ACCEPTD).
    pub fn is_final(&self) -> bool {
        self.stat != Self::ACCEPTED
    }

    /// The report's bytes for `version` (60 or 71), as Msg_Content.
    ///
    /// # Errors
    /// [`Error::FieldTooLong`] if a field exceeds its width.
    pub fn to_bytes(&self, version: Version) -> Result<Vec<u8>, Error> {
        let mut buf = BytesMut::with_capacity(version.report_len());
        buf.put_u64(self.msg_id.0);
        put_octets(&mut buf, "Stat", &self.stat, 7)?;
        put_octets(&mut buf, "Submit_time", &self.submit_time, 10)?;
        put_octets(&mut buf, "Done_time", &self.done_time, 10)?;
        put_octets(
            &mut buf,
            "Dest_terminal_Id",
            &self.dest_terminal_id,
            version.terminal_id_len(),
        )?;
        buf.put_u32(self.smsc_sequence);
        Ok(buf.to_vec())
    }

    /// Reads a report, taking the layout from its length: 60 bytes is the 2.0 layout and
    /// 71 the 3.0 one, whatever the connection's version. Some 3.0 gateways send 60-byte
    /// reports; the length is unambiguous, so they are accepted.
    ///
    /// # Errors
    /// [`BodyProblem::ReportLength`] for any other length.
    pub fn from_bytes(content: &[u8]) -> Result<StatusReport, BodyProblem> {
        let version = if content.len() == Version::V20.report_len() {
            Version::V20
        } else if content.len() == Version::V30.report_len() {
            Version::V30
        } else {
            return Err(BodyProblem::ReportLength(content.len()));
        };
        let mut r = Reader::new(content);
        let report = StatusReport {
            msg_id: MsgId(r.u64()?),
            stat: r.octets(7)?,
            submit_time: r.octets(10)?,
            done_time: r.octets(10)?,
            dest_terminal_id: r.octets(version.terminal_id_len())?,
            smsc_sequence: r.u32()?,
        };
        r.finish()?;
        Ok(report)
    }
}
