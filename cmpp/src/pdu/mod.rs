//! The PDUs an SP exchanges with an ISMG, one struct per body layout, and [`Frame`]: a
//! Sequence_Id plus a [`Pdu`]. Total_Length and Command_Id are derived when encoding.
//!
//! Bodies are version-dependent, so encoding and decoding take a [`Version`]. Fields that
//! exist only in 3.0 (terminal types) are ignored when encoding 2.0 and decode as 0; the
//! trailing 2.0 Reserve and 3.0 LinkID share one field, `link_id`.
//!
//! Decoding is strict about structure: a body shorter or longer than its fields is a
//! [`Error::Malformed`]. Commands this crate does not model (QUERY, CANCEL, FWD, the GNS
//! routing commands, vendor extensions) decode as [`Pdu::Unknown`] with their raw body.

mod connect;
mod deliver;
mod link;
mod report;
mod submit;

use bytes::{Bytes, BytesMut};

pub use connect::{Connect, ConnectResp};
pub use deliver::{Deliver, DeliverContent, DeliverResp};
pub use link::ActiveTestResp;
pub use report::StatusReport;
pub use submit::{Submit, SubmitResp};

use crate::error::{BodyProblem, Error};
use crate::header::{CommandId, Header, HEADER_LEN};
use crate::text::MsgFmt;
use crate::version::Version;
use crate::wire::Reader;

/// One frame: the header's Sequence_Id and the PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Request sequence number; a response must echo its request's.
    pub sequence_id: u32,
    pub pdu: Pdu,
}

/// A CMPP PDU. The variant decides the Command_Id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    Connect(Connect),
    ConnectResp(ConnectResp),
    Submit(Submit),
    SubmitResp(SubmitResp),
    Deliver(Deliver),
    DeliverResp(DeliverResp),
    ActiveTest,
    ActiveTestResp(ActiveTestResp),
    Terminate,
    TerminateResp,
    /// A command this crate does not model, with its body as received. The frame was
    /// consumed whole, so the stream stays in sync: log it and read on (or, as a server,
    /// answer it however the command requires). Encoding writes the body verbatim; give it
    /// a Command_Id that is not one of the modelled ones, or it decodes as that PDU.
    Unknown {
        command_id: CommandId,
        body: Bytes,
    },
}

impl Frame {
    pub fn new(sequence_id: u32, pdu: Pdu) -> Frame {
        Frame { sequence_id, pdu }
    }

    pub fn command_id(&self) -> CommandId {
        self.pdu.command_id()
    }

    /// Appends the whole frame (header included) to `dst`.
    ///
    /// # Errors
    /// A value that does not fit its field in `version`; `dst` is then left as it was.
    pub fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        let start = dst.len();
        let result = self.encode_unchecked(version, dst, start);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    fn encode_unchecked(
        &self,
        version: Version,
        dst: &mut BytesMut,
        start: usize,
    ) -> Result<(), Error> {
        // Total_Length is patched in once the body's size is known.
        Header {
            total_length: 0,
            command_id: self.command_id(),
            sequence_id: self.sequence_id,
        }
        .put(dst);
        self.pdu.encode_body(version, dst)?;
        let length = dst.len() - start;
        let total = u32::try_from(length).map_err(|_| Error::FrameTooLarge {
            length,
            max: u32::MAX as usize,
        })?;
        dst[start..start + 4].copy_from_slice(&total.to_be_bytes());
        Ok(())
    }

    /// Decodes exactly one whole frame, header included (as delimited by
    /// [`header::check`](crate::header::check)).
    ///
    /// # Errors
    /// [`Error::LengthTooSmall`] if `frame` is shorter than a header;
    /// [`Error::Malformed`] if Total_Length disagrees with `frame.len()` or the body does
    /// not match its command's layout.
    pub fn decode(version: Version, frame: &[u8]) -> Result<Frame, Error> {
        let Some(header) = Header::peek(frame) else {
            return Err(Error::LengthTooSmall(
                u32::try_from(frame.len()).unwrap_or(u32::MAX),
            ));
        };
        let malformed = |problem| Error::Malformed {
            command_id: header.command_id,
            sequence_id: header.sequence_id,
            problem,
        };
        let declared = usize::try_from(header.total_length).unwrap_or(usize::MAX);
        if declared < frame.len() {
            return Err(malformed(BodyProblem::TrailingBytes(
                frame.len() - declared,
            )));
        }
        if declared > frame.len() {
            return Err(malformed(BodyProblem::Truncated));
        }
        let body = &frame[HEADER_LEN..];
        let pdu = Pdu::decode_body(version, header.command_id, body).map_err(malformed)?;
        Ok(Frame {
            sequence_id: header.sequence_id,
            pdu,
        })
    }
}

impl Pdu {
    pub fn command_id(&self) -> CommandId {
        match self {
            Pdu::Connect(_) => CommandId::CONNECT,
            Pdu::ConnectResp(_) => CommandId::CONNECT_RESP,
            Pdu::Submit(_) => CommandId::SUBMIT,
            Pdu::SubmitResp(_) => CommandId::SUBMIT_RESP,
            Pdu::Deliver(_) => CommandId::DELIVER,
            Pdu::DeliverResp(_) => CommandId::DELIVER_RESP,
            Pdu::ActiveTest => CommandId::ACTIVE_TEST,
            Pdu::ActiveTestResp(_) => CommandId::ACTIVE_TEST_RESP,
            Pdu::Terminate => CommandId::TERMINATE,
            Pdu::TerminateResp => CommandId::TERMINATE_RESP,
            Pdu::Unknown { command_id, .. } => *command_id,
        }
    }

    /// Whether this PDU is a response (its Command_Id has the high bit set).
    pub fn is_response(&self) -> bool {
        self.command_id().is_response()
    }

    fn encode_body(&self, version: Version, dst: &mut BytesMut) -> Result<(), Error> {
        match self {
            Pdu::Connect(p) => p.encode(dst),
            Pdu::ConnectResp(p) => p.encode(version, dst),
            Pdu::Submit(p) => p.encode(version, dst),
            Pdu::SubmitResp(p) => p.encode(version, dst),
            Pdu::Deliver(p) => p.encode(version, dst),
            Pdu::DeliverResp(p) => p.encode(version, dst),
            Pdu::ActiveTestResp(p) => {
                p.encode(dst);
                Ok(())
            }
            Pdu::ActiveTest | Pdu::Terminate | Pdu::TerminateResp => Ok(()),
            Pdu::Unknown { body, .. } => {
                dst.extend_from_slice(body);
                Ok(())
            }
        }
    }

    fn decode_body(
        version: Version,
        command_id: CommandId,
        body: &[u8],
    ) -> Result<Pdu, BodyProblem> {
        let mut r = Reader::new(body);
        let pdu = match command_id {
            CommandId::CONNECT => Pdu::Connect(Connect::decode(&mut r)?),
            CommandId::CONNECT_RESP => Pdu::ConnectResp(ConnectResp::decode(version, &mut r)?),
            CommandId::SUBMIT => Pdu::Submit(Submit::decode(version, &mut r)?),
            CommandId::SUBMIT_RESP => Pdu::SubmitResp(SubmitResp::decode(version, &mut r)?),
            CommandId::DELIVER => Pdu::Deliver(Deliver::decode(version, &mut r)?),
            CommandId::DELIVER_RESP => Pdu::DeliverResp(DeliverResp::decode(version, &mut r)?),
            CommandId::ACTIVE_TEST => Pdu::ActiveTest,
            CommandId::ACTIVE_TEST_RESP => Pdu::ActiveTestResp(ActiveTestResp::decode(&mut r)?),
            CommandId::TERMINATE => Pdu::Terminate,
            CommandId::TERMINATE_RESP => Pdu::TerminateResp,
            _ => {
                return Ok(Pdu::Unknown {
                    command_id,
                    body: Bytes::copy_from_slice(body),
                })
            }
        };
        r.finish()?;
        Ok(pdu)
    }
}

/// The spec's Msg_Length limit: below 160 bytes for ASCII (Msg_Fmt 0), at most 140
/// otherwise.
pub fn max_content_len(msg_fmt: MsgFmt) -> usize {
    if msg_fmt == MsgFmt::ASCII {
        159
    } else {
        140
    }
}

/// Checks Msg_Content against [`max_content_len`] before it is written.
fn check_content_len(msg_fmt: MsgFmt, content: &[u8]) -> Result<u8, Error> {
    let max = max_content_len(msg_fmt);
    match u8::try_from(content.len()) {
        Ok(len) if content.len() <= max => Ok(len),
        _ => Err(Error::ContentTooLong {
            len: content.len(),
            max,
            msg_fmt: msg_fmt.0,
        }),
    }
}
