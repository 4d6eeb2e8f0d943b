//! [`CmppCodec`]: framing for `tokio_util::codec::{FramedRead, FramedWrite, Framed}`.
//!
//! Decoding first asks "is a whole frame buffered?" ([`header::check`]); only then is the
//! frame split off and parsed. Incomplete input is the expected `Ok(None)`. Total_Length is
//! validated against `12..=max_frame` before any memory is reserved for it.
//!
//! Outcomes of [`Decoder::decode`]:
//!
//! | input | result | stream afterwards |
//! |---|---|---|
//! | partial frame | `Ok(None)` | read more |
//! | whole frame of a modelled command | `Ok(Some(frame))` | in sync |
//! | whole frame of another command | `Ok(Some(Frame { pdu: Pdu::Unknown { .. }, .. }))` | in sync |
//! | whole frame whose body does not fit its layout | `Err(Error::Malformed { .. })`, frame consumed | in sync |
//! | Total_Length < 12 or > `max_frame` | `Err(LengthTooSmall / LengthTooLarge)`, nothing consumed | lost: close the connection |
//!
//! With `FramedRead`, any `Err` is followed by the stream yielding `None`; a caller that
//! wants to survive a malformed frame drives the decoder itself or checks
//! [`Error::is_recoverable`] and keeps polling.
//!
//! The codec holds no state besides its settings, so a server can decode CONNECT (same
//! layout in both versions) and then set [`CmppCodec::version`] to the client's version.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::header::{self, Buffered};
use crate::pdu::Frame;
use crate::version::Version;

/// Default frame limit. The largest legal frame is a 3.0 SUBMIT to 99 recipients with a
/// 255-byte Msg_Length: 163 + 32·99 + 255 = 3586 bytes.
pub const DEFAULT_MAX_FRAME: usize = 4096;

/// The CMPP framing codec for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmppCodec {
    /// Body layout used for both directions.
    pub version: Version,
    /// Largest Total_Length accepted when decoding and produced when encoding.
    pub max_frame: usize,
}

impl CmppCodec {
    /// A codec for `version` with [`DEFAULT_MAX_FRAME`].
    pub fn new(version: Version) -> CmppCodec {
        CmppCodec {
            version,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Sets the frame limit.
    pub fn with_max_frame(self, max_frame: usize) -> CmppCodec {
        CmppCodec { max_frame, ..self }
    }
}

impl Decoder for CmppCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match header::check(src, self.max_frame)? {
            Buffered::Incomplete { at_least } => {
                // `at_least` is bounded by max_frame, so this cannot be driven by a huge
                // untrusted length.
                src.reserve(at_least.saturating_sub(src.len()));
                Ok(None)
            }
            Buffered::Complete(header) => {
                // check() guarantees the whole frame is buffered.
                let len = usize::try_from(header.total_length).unwrap_or(usize::MAX);
                let frame = src.split_to(len.min(src.len()));
                Frame::decode(self.version, &frame).map(Some)
            }
        }
    }
}

impl Encoder<&Frame> for CmppCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let start = dst.len();
        frame.encode(self.version, dst)?;
        let length = dst.len() - start;
        if length > self.max_frame {
            dst.truncate(start);
            return Err(Error::FrameTooLarge {
                length,
                max: self.max_frame,
            });
        }
        Ok(())
    }
}

impl Encoder<Frame> for CmppCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&frame, dst)
    }
}
