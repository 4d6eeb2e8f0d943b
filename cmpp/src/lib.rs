//! CMPP 2.0 / 3.0 protocol codec: the wire format spoken between an SP and an ISMG (the
//! China Mobile SMS gateway).
//!
//! This crate holds types and byte layouts only. It never opens sockets, keeps timers or
//! session state; a session actor (client) or a gateway simulator (server) is built on top.
//!
//! # Map
//!
//! | module | for |
//! |---|---|
//! | [`header`] | the 12-byte header, [`CommandId`], "is a whole frame buffered?" |
//! | [`pdu`] | [`Frame`] = Sequence_Id + [`Pdu`]; one struct per PDU an SP needs |
//! | [`codec`] | [`CmppCodec`], the `tokio_util` framing `Decoder`/`Encoder` |
//! | [`msg_id`] | [`MsgId`], the 64-bit message id and its bit layout |
//! | [`auth`] | AuthenticatorSource / AuthenticatorISMG and the MMDDHHMMSS timestamp |
//! | [`octet`] | [`OctetString`], the fixed-width NUL-padded text fields |
//! | [`text`] | Msg_Fmt encodings: ASCII, UCS2, GBK |
//! | [`udh`] | the concatenation User Data Header and the TP_udhi test |
//! | [`split`] | choosing an encoding and splitting a long message into SUBMIT segments |
//! | [`reassembly`] | joining received segments back into one message |
//! | [`error`] | [`Error`] (wire) and [`TextError`] (text) |
//!
//! # Sending a message, in short
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//! use umsd_cmpp::{split, CmppCodec, Frame, OctetString, Pdu, Submit, Version};
//!
//! let segments = split::split_message("你好", &split::SplitOptions::default())?;
//! let template = Submit {
//!     msg_src: OctetString::from("900001"),
//!     src_id: OctetString::from("10690001"),
//!     dest_terminal_ids: vec![OctetString::from("13800138000")],
//!     ..Submit::default()
//! };
//! let mut codec = CmppCodec::new(Version::V30);
//! let mut wire = BytesMut::new();
//! for (i, segment) in segments.iter().enumerate() {
//!     let submit = template.with_segment(segment);
//!     codec.encode(Frame::new(i as u32 + 1, Pdu::Submit(submit)), &mut wire)?;
//! }
//! let frame = codec.decode(&mut wire)?;
//! assert!(matches!(frame, Some(Frame { sequence_id: 1, pdu: Pdu::Submit(_) })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod auth;
pub mod codec;
pub mod error;
pub mod header;
pub mod msg_id;
pub mod octet;
pub mod pdu;
pub mod reassembly;
pub mod split;
pub mod text;
pub mod udh;
mod version;
mod wire;

pub use codec::{CmppCodec, DEFAULT_MAX_FRAME};
pub use error::{BodyProblem, Error, TextError};
pub use header::{CommandId, Header, HEADER_LEN};
pub use msg_id::MsgId;
pub use octet::OctetString;
pub use pdu::{
    ActiveTestResp, Connect, ConnectResp, Deliver, DeliverContent, DeliverResp, Frame, Pdu,
    StatusReport, Submit, SubmitResp,
};
pub use text::MsgFmt;
pub use version::Version;
