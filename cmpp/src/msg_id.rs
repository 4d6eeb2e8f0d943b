//! [`MsgId`]: the 64-bit message id an ISMG assigns to each SUBMIT (returned in SUBMIT_RESP)
//! and quotes in the status report, so it is the key that correlates reports to messages.
//!
//! Bit layout (bit 64 = most significant):
//!
//! | bits | field | width |
//! |---|---|---|
//! | 64–61 | month | 4 |
//! | 60–56 | day | 5 |
//! | 55–51 | hour | 5 |
//! | 50–45 | minute | 6 |
//! | 44–39 | second | 6 |
//! | 38–17 | ISMG (gateway) code | 22 |
//! | 16–1 | sequence, wrapping | 16 |
//!
//! The canonical text form is the decimal `u64` ([`Display`](std::fmt::Display) /
//! [`FromStr`]), so a stored key and a looked-up key are always spelled the same way.
//! Months 8 to 12 set the top bit: store the id in a signed 64-bit column by bit-casting
//! (`as i64`), never by value conversion.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use chrono::{Datelike, Timelike};

/// A CMPP Msg_Id. Any `u64` is a valid wire value; the accessors read the standard layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

/// The fields of a [`MsgId`] in the standard layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MsgIdParts {
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// The ISMG code, 22 bits.
    pub gateway: u32,
    pub sequence: u16,
}

const MONTH_SHIFT: u32 = 60;
const DAY_SHIFT: u32 = 55;
const HOUR_SHIFT: u32 = 50;
const MINUTE_SHIFT: u32 = 44;
const SECOND_SHIFT: u32 = 38;
const GATEWAY_SHIFT: u32 = 16;

const MONTH_MASK: u64 = 0xF;
const DAY_MASK: u64 = 0x1F;
const HOUR_MASK: u64 = 0x1F;
const MINUTE_MASK: u64 = 0x3F;
const SECOND_MASK: u64 = 0x3F;
const GATEWAY_MASK: u64 = 0x3F_FFFF;

impl MsgId {
    /// The id an SP puts in SUBMIT (the ISMG assigns the real one).
    pub const ZERO: MsgId = MsgId(0);

    /// Packs the fields, or `None` if one exceeds its bit width (month > 15, day or
    /// hour > 31, minute or second > 63, gateway > 0x3F_FFFF). Calendar validity is not
    /// checked: gateways are not consistent about it and the id only needs to be unique.
    pub fn from_parts(parts: MsgIdParts) -> Option<MsgId> {
        let field = |value: u64, mask: u64, shift: u32| (value <= mask).then_some(value << shift);
        Some(MsgId(
            field(parts.month.into(), MONTH_MASK, MONTH_SHIFT)?
                | field(parts.day.into(), DAY_MASK, DAY_SHIFT)?
                | field(parts.hour.into(), HOUR_MASK, HOUR_SHIFT)?
                | field(parts.minute.into(), MINUTE_MASK, MINUTE_SHIFT)?
                | field(parts.second.into(), SECOND_MASK, SECOND_SHIFT)?
                | field(parts.gateway.into(), GATEWAY_MASK, GATEWAY_SHIFT)?
                | u64::from(parts.sequence),
        ))
    }

    /// An id stamped with `time`'s month, day, hour, minute and second (a gateway
    /// simulator's way to mint ids). `None` if `gateway` exceeds 22 bits.
    pub fn from_datetime<T: Datelike + Timelike>(
        time: &T,
        gateway: u32,
        sequence: u16,
    ) -> Option<MsgId> {
        // chrono's fields are in range (month 1–12, day 1–31, …), so the narrowing is exact;
        // a leap second is represented in the nanoseconds, not as second 60.
        let narrow = |v: u32| u8::try_from(v).ok();
        MsgId::from_parts(MsgIdParts {
            month: narrow(time.month())?,
            day: narrow(time.day())?,
            hour: narrow(time.hour())?,
            minute: narrow(time.minute())?,
            second: narrow(time.second())?,
            gateway,
            sequence,
        })
    }

    /// All fields of the standard layout.
    pub fn parts(self) -> MsgIdParts {
        MsgIdParts {
            month: self.month(),
            day: self.day(),
            hour: self.hour(),
            minute: self.minute(),
            second: self.second(),
            gateway: self.gateway(),
            sequence: self.sequence(),
        }
    }

    fn bits(self, shift: u32, mask: u64) -> u64 {
        (self.0 >> shift) & mask
    }

    // Each mask is at most 6 bits wide, so the narrowing below keeps every bit.
    pub fn month(self) -> u8 {
        self.bits(MONTH_SHIFT, MONTH_MASK) as u8
    }

    pub fn day(self) -> u8 {
        self.bits(DAY_SHIFT, DAY_MASK) as u8
    }

    pub fn hour(self) -> u8 {
        self.bits(HOUR_SHIFT, HOUR_MASK) as u8
    }

    pub fn minute(self) -> u8 {
        self.bits(MINUTE_SHIFT, MINUTE_MASK) as u8
    }

    pub fn second(self) -> u8 {
        self.bits(SECOND_SHIFT, SECOND_MASK) as u8
    }

    /// The 22-bit ISMG code.
    pub fn gateway(self) -> u32 {
        self.bits(GATEWAY_SHIFT, GATEWAY_MASK) as u32
    }

    /// The 16-bit sequence.
    pub fn sequence(self) -> u16 {
        self.0 as u16
    }

    /// The 22-digit form some gateways print: MMDDHHMMSS, gateway (7 digits), sequence
    /// (5 digits). For display next to such systems' logs; not the canonical key.
    pub fn to_parts_string(self) -> String {
        let p = self.parts();
        format!(
            "{:02}{:02}{:02}{:02}{:02}{:07}{:05}",
            p.month, p.day, p.hour, p.minute, p.second, p.gateway, p.sequence
        )
    }
}

impl From<u64> for MsgId {
    fn from(v: u64) -> Self {
        MsgId(v)
    }
}

impl From<MsgId> for u64 {
    fn from(id: MsgId) -> Self {
        id.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for MsgId {
    type Err = ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(MsgId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_spec_example() {
        let id = MsgId(0xb9c1_cc92_d687_002a);
        let parts = MsgIdParts {
            month: 11,
            day: 19,
            hour: 16,
            minute: 28,
            second: 50,
            gateway: 1_234_567,
            sequence: 42,
        };
        assert_eq!(id.parts(), parts);
        assert_eq!(MsgId::from_parts(parts), Some(id));
        assert_eq!(id.to_parts_string(), "1119162850123456700042");
    }

    #[test]
    fn rejects_fields_wider_than_their_bits() {
        let ok = MsgIdParts {
            month: 15,
            day: 31,
            hour: 31,
            minute: 63,
            second: 63,
            gateway: 0x3F_FFFF,
            sequence: u16::MAX,
        };
        assert_eq!(MsgId::from_parts(ok), Some(MsgId(u64::MAX)));
        assert_eq!(MsgId::from_parts(MsgIdParts { month: 16, ..ok }), None);
        assert_eq!(MsgId::from_parts(MsgIdParts { minute: 64, ..ok }), None);
        assert_eq!(
            MsgId::from_parts(MsgIdParts {
                gateway: 0x40_0000,
                ..ok
            }),
            None
        );
    }

    #[test]
    fn from_datetime_and_text_form() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 12, 31)
            .and_then(|d| d.and_hms_opt(23, 59, 58))
            .unwrap();
        let id = MsgId::from_datetime(&t, 7, 9).unwrap();
        assert_eq!(
            (id.month(), id.day(), id.hour(), id.minute(), id.second()),
            (12, 31, 23, 59, 58)
        );
        assert_eq!((id.gateway(), id.sequence()), (7, 9));
        assert_eq!(id.to_string().parse::<MsgId>(), Ok(id));
    }
}
