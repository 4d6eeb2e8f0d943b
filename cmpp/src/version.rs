//! The protocol version that selects a body layout.
//!
//! CMPP 2.0 and 3.0 share the header and the Command_Id values but differ in field widths
//! (response status 1 vs 4 bytes, terminal ids 21 vs 32 bytes, LinkID, terminal types), so
//! every encode and decode takes a [`Version`].

use std::fmt;

/// The CMPP body layout in use on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// CMPP 2.0 (also used for gateways announcing 2.1, `0x21`).
    V20,
    /// CMPP 3.0.
    V30,
}

impl Version {
    /// The value of CONNECT's Version byte: `0x20` or `0x30`.
    pub const fn wire(self) -> u8 {
        match self {
            Version::V20 => 0x20,
            Version::V30 => 0x30,
        }
    }

    /// Reads a Version byte by its high nibble (the major version), so `0x21` is 2.x.
    ///
    /// Returns `None` for a major version other than 2 or 3. A gateway simulator decodes
    /// CONNECT (whose layout is the same in both versions), calls this on
    /// [`Connect::version`](crate::Connect::version), and switches its codec.
    pub const fn from_wire(byte: u8) -> Option<Version> {
        match byte >> 4 {
            2 => Some(Version::V20),
            3 => Some(Version::V30),
            _ => None,
        }
    }

    /// Width of a terminal id field (Fee/Dest/Src_terminal_Id): 21 bytes in 2.0, 32 in 3.0.
    pub const fn terminal_id_len(self) -> usize {
        match self {
            Version::V20 => 21,
            Version::V30 => 32,
        }
    }

    /// Width of the trailing Reserve (2.0) / LinkID (3.0) field of SUBMIT and DELIVER.
    pub const fn link_id_len(self) -> usize {
        match self {
            Version::V20 => 8,
            Version::V30 => 20,
        }
    }

    /// Width of a response status (CONNECT_RESP Status, SUBMIT_RESP/DELIVER_RESP Result).
    pub const fn status_len(self) -> usize {
        match self {
            Version::V20 => 1,
            Version::V30 => 4,
        }
    }

    /// Length of a status report carried in DELIVER's Msg_Content: 60 or 71 bytes.
    pub const fn report_len(self) -> usize {
        // Msg_Id 8 + Stat 7 + Submit_time 10 + Done_time 10 + Dest_terminal_Id + SMSC_sequence 4.
        8 + 7 + 10 + 10 + self.terminal_id_len() + 4
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V20 => f.write_str("CMPP 2.0"),
            Version::V30 => f.write_str("CMPP 3.0"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_byte_major_nibble() {
        assert_eq!(Version::from_wire(0x20), Some(Version::V20));
        assert_eq!(Version::from_wire(0x21), Some(Version::V20));
        assert_eq!(Version::from_wire(0x30), Some(Version::V30));
        assert_eq!(Version::from_wire(0x10), None);
        assert_eq!(Version::V20.report_len(), 60);
        assert_eq!(Version::V30.report_len(), 71);
    }
}
