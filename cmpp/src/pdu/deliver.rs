//! DELIVER (ISMG → SP: a mobile-originated message or a status report) and DELIVER_RESP.
//!
//! Frame length: 2.0 = 85 + L, 3.0 = 109 + L.

use bytes::{BufMut, BytesMut};

use super::check_content_len;
use crate::error::{BodyProblem, Error};
use crate::msg_id::MsgId;
use crate::octet::OctetString;
use crate::pdu::report::StatusReport;
use crate::text::MsgFmt;
use crate::version::Version;
use crate::wire::{put_octets, put_status, Reader};

/// DELIVER. Registered_Delivery is not a field: it follows from [`DeliverContent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deliver {
    /// The ISMG's id for this DELIVER; DELIVER_RESP echoes it. Not the correlation key of
    /// a report (that is [`StatusReport::msg_id`]).
    pub msg_id: MsgId,
    /// The SP's service code the message was sent to, 21 bytes.
    pub dest_id: OctetString,
    /// 10 bytes.
    pub service_id: OctetString,
    pub tp_pid: u8,
    /// Test with [`udh::has_udhi`](crate::udh::has_udhi): gateways send 1 or 0x40.
    pub tp_udhi: u8,
    pub msg_fmt: MsgFmt,
    /// The sender of an MO message; in a report, the recipient of the original SUBMIT.
    /// 21 bytes in 2.0, 32 in 3.0.
    pub src_terminal_id: OctetString,
    /// 3.0 only; ignored in 2.0.
    pub src_terminal_type: u8,
    pub content: DeliverContent,
    /// 3.0 LinkID (20 bytes); in 2.0 the 8-byte Reserved field.
    pub link_id: OctetString,
}

/// What a DELIVER carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliverContent {
    /// Registered_Delivery = 0 (or any value other than 1): a mobile-originated message's
    /// raw Msg_Content (decode it with [`text::decode`](crate::text::decode)).
    Message(Vec<u8>),
    /// Registered_Delivery = 1: a status report.
    Report(StatusReport),
    /// Registered_Delivery = 1, but Msg_Content is not a 60- or 71-byte report. The frame
    /// itself is well formed, so it is kept as a value: acknowledge it with DELIVER_RESP
    /// (else the gateway resends it forever) and log the raw content.
    InvalidReport(Vec<u8>),
}

impl Default for DeliverContent {
    fn default() -> Self {
        DeliverContent::Message(Vec::new())
    }
}

impl Deliver {
    /// The report, if this DELIVER carries one.
    pub fn report(&self) -> Option<&StatusReport> {
        match &self.content {
            DeliverContent::Report(report) => Some(report),
            DeliverContent::Message(_) | DeliverContent::InvalidReport(_) => None,
        }
    }

    pub(crate) fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        let terminal = version.terminal_id_len();
        let report_bytes;
        let (registered_delivery, content): (u8, &[u8]) = match &self.content {
            DeliverContent::Message(bytes) => (0, bytes),
            DeliverContent::InvalidReport(bytes) => (1, bytes),
            DeliverContent::Report(report) => {
                report_bytes = report.to_bytes(version)?;
                (1, &report_bytes)
            }
        };
        let msg_length = check_content_len(self.msg_fmt, content)?;

        dst.put_u64(self.msg_id.0);
        put_octets(dst, "Dest_Id", &self.dest_id, 21)?;
        put_octets(dst, "Service_Id", &self.service_id, 10)?;
        dst.put_u8(self.tp_pid);
        dst.put_u8(self.tp_udhi);
        dst.put_u8(self.msg_fmt.0);
        put_octets(dst, "Src_terminal_Id", &self.src_terminal_id, terminal)?;
        if version == Version::V30 {
            dst.put_u8(self.src_terminal_type);
        }
        dst.put_u8(registered_delivery);
        dst.put_u8(msg_length);
        dst.put_slice(content);
        put_octets(dst, "LinkID", &self.link_id, version.link_id_len())?;
        Ok(())
    }

    pub(crate) fn decode(version: Version, r: &mut Reader<'_>) -> Result<Deliver, BodyProblem> {
        let msg_id = MsgId(r.u64()?);
        let dest_id = r.octets(21)?;
        let service_id = r.octets(10)?;
        let tp_pid = r.u8()?;
        let tp_udhi = r.u8()?;
        let msg_fmt = MsgFmt(r.u8()?);
        let src_terminal_id = r.octets(version.terminal_id_len())?;
        let src_terminal_type = if version == Version::V30 { r.u8()? } else { 0 };
        let registered_delivery = r.u8()?;
        let msg_length = usize::from(r.u8()?);
        let raw = r.bytes(msg_length)?;
        let link_id = r.octets(version.link_id_len())?;
        let content = if registered_delivery == 1 {
            StatusReport::from_bytes(raw).map_or_else(
                |_| DeliverContent::InvalidReport(raw.to_vec()),
                DeliverContent::Report,
            )
        } else {
            DeliverContent::Message(raw.to_vec())
        };
        Ok(Deliver {
            msg_id,
            dest_id,
            service_id,
            tp_pid,
            tp_udhi,
            msg_fmt,
            src_terminal_id,
            src_terminal_type,
            content,
            link_id,
        })
    }
}

/// DELIVER_RESP: echoes the DELIVER header's Msg_Id, with a Result (one byte in 2.0, four
/// in 3.0; 0 OK, 1–8 as in SUBMIT_RESP, 9 and above "other").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliverResp {
    pub msg_id: MsgId,
    pub result: u32,
}

impl DeliverResp {
    /// The acknowledgement of `deliver`, with Result 0.
    pub fn ok(deliver: &Deliver) -> DeliverResp {
        DeliverResp {
            msg_id: deliver.msg_id,
            result: 0,
        }
    }

    pub(crate) fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u64(self.msg_id.0);
        put_status(dst, "Result", self.result, version)
    }

    pub(crate) fn decode(version: Version, r: &mut Reader<'_>) -> Result<DeliverResp, BodyProblem> {
        Ok(DeliverResp {
            msg_id: MsgId(r.u64()?),
            result: r.status(version)?,
        })
    }
}
