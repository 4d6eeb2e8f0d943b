//! Arbitrary bytes into the CMPP decoder, under both version layouts.
//!
//! Checks that decoding never panics, always makes progress on a frame it reports
//! (decoded or malformed), and that whatever decodes re-encodes to bytes that decode to the
//! same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use umsd_cmpp::{CmppCodec, Version};

fuzz_target!(|data: &[u8]| {
    for version in [Version::V20, Version::V30] {
        let mut codec = CmppCodec::new(version);
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(buf.len() < before, "a decoded frame consumes bytes");
                    // Not every decodable frame is encodable (e.g. 0 recipients, content over
                    // the spec limit); those that are must survive a round trip.
                    let mut again = BytesMut::new();
                    if codec.encode(&frame, &mut again).is_ok() {
                        let redecoded = codec.decode(&mut again);
                        assert!(
                            matches!(&redecoded, Ok(Some(f)) if *f == frame),
                            "{redecoded:?} != {frame:?}"
                        );
                        assert!(again.is_empty());
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {
                    assert!(buf.len() < before, "a malformed frame is skipped")
                }
                Err(_) => break,
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
});
