//! Link maintenance bodies. ACTIVE_TEST, TERMINATE and TERMINATE_RESP have no body (12-byte
//! frames) and are unit variants of [`Pdu`](crate::Pdu); only ACTIVE_TEST_RESP carries a byte.

use bytes::{BufMut, BytesMut};

use crate::error::BodyProblem;
use crate::wire::Reader;

/// ACTIVE_TEST_RESP: one Reserved byte (13-byte frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveTestResp {
    pub reserved: u8,
}

impl ActiveTestResp {
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.reserved);
    }

    /// The Reserved byte arrived with 2.0; a 12-byte answer from an older peer is still a
    /// valid heartbeat answer, so it is accepted as `reserved = 0`.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ActiveTestResp, BodyProblem> {
        let reserved = if r.remaining() == 0 { 0 } else { r.u8()? };
        Ok(ActiveTestResp { reserved })
    }
}
