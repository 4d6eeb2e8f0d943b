//! SUBMIT (SP → ISMG, one per message segment) and SUBMIT_RESP.
//!
//! Frame length: 2.0 = 138 + 21·N + L, 3.0 = 163 + 32·N + L (N recipients, L content bytes).

use bytes::{BufMut, BytesMut};

use super::check_content_len;
use crate::error::{BodyProblem, Error};
use crate::msg_id::MsgId;
use crate::octet::OctetString;
use crate::split::Segment;
use crate::text::MsgFmt;
use crate::version::Version;
use crate::wire::{put_octets, put_status, Reader};

/// Most recipients one SUBMIT may carry (DestUsr_tl < 100).
pub const MAX_RECIPIENTS: usize = 99;

/// SUBMIT. Fixed-width text fields are [`OctetString`]s; their widths are in the field docs.
///
/// `Default` gives a single-segment message asking for a status report
/// (Pk_total = Pk_number = 1, Registered_Delivery = 1) with every text field empty; the
/// account's Service_Id, fee fields, Msg_src and Src_Id come from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// Sent as 0; the ISMG assigns the id and returns it in SUBMIT_RESP.
    pub msg_id: MsgId,
    /// Number of segments of the message, from 1.
    pub pk_total: u8,
    /// This segment's index, from 1.
    pub pk_number: u8,
    /// 0 no report, 1 report wanted (2.0 also had 2, "SMC bill").
    pub registered_delivery: u8,
    pub msg_level: u8,
    /// 10 bytes.
    pub service_id: OctetString,
    /// 0 destination, 1 source, 2 SP, 3 Fee_terminal_Id pays.
    pub fee_user_type: u8,
    /// 21 bytes in 2.0, 32 in 3.0.
    pub fee_terminal_id: OctetString,
    /// 3.0 only (0 real number, 1 pseudo number); ignored in 2.0.
    pub fee_terminal_type: u8,
    pub tp_pid: u8,
    /// 1 when Msg_Content starts with a User Data Header (long messages).
    pub tp_udhi: u8,
    pub msg_fmt: MsgFmt,
    /// SP_Id, 6 bytes.
    pub msg_src: OctetString,
    /// 2 bytes: "01" free, "02" per message, "03" monthly.
    pub fee_type: OctetString,
    /// 6 bytes.
    pub fee_code: OctetString,
    /// 17 bytes, SMPP 3.3 time format, or empty.
    pub valid_time: OctetString,
    /// 17 bytes, SMPP 3.3 time format, or empty.
    pub at_time: OctetString,
    /// The service code the message appears to come from, 21 bytes.
    pub src_id: OctetString,
    /// 1 to 99 numbers, each 21 bytes in 2.0 and 32 in 3.0.
    pub dest_terminal_ids: Vec<OctetString>,
    /// 3.0 only; ignored in 2.0.
    pub dest_terminal_type: u8,
    /// At most 159 bytes for ASCII, 140 otherwise (UDH included).
    pub msg_content: Vec<u8>,
    /// 3.0 LinkID (20 bytes); in 2.0 the 8-byte Reserve field.
    pub link_id: OctetString,
}

impl Default for Submit {
    fn default() -> Self {
        Submit {
            msg_id: MsgId::ZERO,
            pk_total: 1,
            pk_number: 1,
            registered_delivery: 1,
            msg_level: 0,
            service_id: OctetString::default(),
            fee_user_type: 0,
            fee_terminal_id: OctetString::default(),
            fee_terminal_type: 0,
            tp_pid: 0,
            tp_udhi: 0,
            msg_fmt: MsgFmt::ASCII,
            msg_src: OctetString::default(),
            fee_type: OctetString::default(),
            fee_code: OctetString::default(),
            valid_time: OctetString::default(),
            at_time: OctetString::default(),
            src_id: OctetString::default(),
            dest_terminal_ids: Vec::new(),
            dest_terminal_type: 0,
            msg_content: Vec::new(),
            link_id: OctetString::default(),
        }
    }
}

impl Submit {
    /// A copy of this SUBMIT carrying one segment from [`split_message`]: sets Msg_Fmt,
    /// TP_udhi, Pk_total, Pk_number and Msg_Content.
    ///
    /// [`split_message`]: crate::split::split_message
    pub fn with_segment(&self, segment: &Segment) -> Submit {
        Submit {
            msg_fmt: segment.msg_fmt,
            tp_udhi: segment.tp_udhi,
            pk_total: segment.pk_total,
            pk_number: segment.pk_number,
            msg_content: segment.content.clone(),
            ..self.clone()
        }
    }

    pub(crate) fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        let terminal = version.terminal_id_len();
        let recipients = self.dest_terminal_ids.len();
        let dest_usr_tl = match u8::try_from(recipients) {
            Ok(n) if (1..=MAX_RECIPIENTS).contains(&recipients) => n,
            _ => return Err(Error::RecipientCount(recipients)),
        };
        let msg_length = check_content_len(self.msg_fmt, &self.msg_content)?;

        dst.put_u64(self.msg_id.0);
        dst.put_u8(self.pk_total);
        dst.put_u8(self.pk_number);
        dst.put_u8(self.registered_delivery);
        dst.put_u8(self.msg_level);
        put_octets(dst, "Service_Id", &self.service_id, 10)?;
        dst.put_u8(self.fee_user_type);
        put_octets(dst, "Fee_terminal_Id", &self.fee_terminal_id, terminal)?;
        if version == Version::V30 {
            dst.put_u8(self.fee_terminal_type);
        }
        dst.put_u8(self.tp_pid);
        dst.put_u8(self.tp_udhi);
        dst.put_u8(self.msg_fmt.0);
        put_octets(dst, "Msg_src", &self.msg_src, 6)?;
        put_octets(dst, "FeeType", &self.fee_type, 2)?;
        put_octets(dst, "FeeCode", &self.fee_code, 6)?;
        put_octets(dst, "ValId_Time", &self.valid_time, 17)?;
        put_octets(dst, "At_Time", &self.at_time, 17)?;
        put_octets(dst, "Src_Id", &self.src_id, 21)?;
        dst.put_u8(dest_usr_tl);
        for dest in &self.dest_terminal_ids {
            put_octets(dst, "Dest_terminal_Id", dest, terminal)?;
        }
        if version == Version::V30 {
            dst.put_u8(self.dest_terminal_type);
        }
        dst.put_u8(msg_length);
        dst.put_slice(&self.msg_content);
        put_octets(dst, "LinkID", &self.link_id, version.link_id_len())?;
        Ok(())
    }

    pub(crate) fn decode(version: Version, r: &mut Reader<'_>) -> Result<Submit, BodyProblem> {
        let terminal = version.terminal_id_len();
        let v30 = version == Version::V30;
        let msg_id = MsgId(r.u64()?);
        let pk_total = r.u8()?;
        let pk_number = r.u8()?;
        let registered_delivery = r.u8()?;
        let msg_level = r.u8()?;
        let service_id = r.octets(10)?;
        let fee_user_type = r.u8()?;
        let fee_terminal_id = r.octets(terminal)?;
        let fee_terminal_type = if v30 { r.u8()? } else { 0 };
        let tp_pid = r.u8()?;
        let tp_udhi = r.u8()?;
        let msg_fmt = MsgFmt(r.u8()?);
        let msg_src = r.octets(6)?;
        let fee_type = r.octets(2)?;
        let fee_code = r.octets(6)?;
        let valid_time = r.octets(17)?;
        let at_time = r.octets(17)?;
        let src_id = r.octets(21)?;
        let dest_usr_tl = usize::from(r.u8()?);
        // Bounded by the body: DestUsr_tl is at most 255 and each id is read from the frame,
        // so a lying count fails with Truncated after at most one frame's worth of work.
        let mut dest_terminal_ids = Vec::with_capacity(dest_usr_tl.min(r.remaining() / terminal));
        for _ in 0..dest_usr_tl {
            dest_terminal_ids.push(r.octets(terminal)?);
        }
        let dest_terminal_type = if v30 { r.u8()? } else { 0 };
        let msg_length = usize::from(r.u8()?);
        let msg_content = r.bytes(msg_length)?.to_vec();
        let link_id = r.octets(version.link_id_len())?;
        Ok(Submit {
            msg_id,
            pk_total,
            pk_number,
            registered_delivery,
            msg_level,
            service_id,
            fee_user_type,
            fee_terminal_id,
            fee_terminal_type,
            tp_pid,
            tp_udhi,
            msg_fmt,
            msg_src,
            fee_type,
            fee_code,
            valid_time,
            at_time,
            src_id,
            dest_terminal_ids,
            dest_terminal_type,
            msg_content,
            link_id,
        })
    }
}

/// SUBMIT_RESP: the ISMG's Msg_Id for the segment (the status report's correlation key)
/// and the Result (one byte in 2.0, four in 3.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitResp {
    pub msg_id: MsgId,
    pub result: u32,
}

impl SubmitResp {
    pub const OK: u32 = 0;
    pub const STRUCTURE_ERROR: u32 = 1;
    pub const COMMAND_ID_ERROR: u32 = 2;
    pub const DUPLICATE_SEQUENCE: u32 = 3;
    pub const LENGTH_ERROR: u32 = 4;
    pub const FEE_CODE_ERROR: u32 = 5;
    pub const MESSAGE_TOO_LONG: u32 = 6;
    pub const SERVICE_ID_ERROR: u32 = 7;
    /// Flow control: the gateway is throttling; slow down and resend, keeping correlation.
    pub const FLOW_CONTROL: u32 = 8;
    /// 2.1/3.0: the gateway does not serve this charged number.
    pub const NOT_SERVED: u32 = 9;
    pub const SRC_ID_ERROR: u32 = 10;
    pub const MSG_SRC_ERROR: u32 = 11;
    pub const FEE_TERMINAL_ID_ERROR: u32 = 12;
    pub const DEST_TERMINAL_ID_ERROR: u32 = 13;

    /// Whether the gateway asked the SP to slow down (Result 8).
    pub fn is_flow_control(&self) -> bool {
        self.result == Self::FLOW_CONTROL
    }

    pub(crate) fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        dst.put_u64(self.msg_id.0);
        put_status(dst, "Result", self.result, version)
    }

    pub(crate) fn decode(version: Version, r: &mut Reader<'_>) -> Result<SubmitResp, BodyProblem> {
        Ok(SubmitResp {
            msg_id: MsgId(r.u64()?),
            result: r.status(version)?,
        })
    }
}
