//! The gateway's wall clock and its Msg_Id minting.
//!
//! CMPP stamps Msg_Ids and report times with the gateway's local time, which for China
//! Mobile is China Standard Time (UTC+8, no daylight saving), so the simulator uses that
//! fixed offset whatever the host's zone. The civil-date arithmetic is done here rather
//! than through a date library: it is a dozen lines and only ever needs one offset.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use umsd_cmpp::msg_id::MsgIdParts;
use umsd_cmpp::MsgId;

/// China Standard Time's offset from UTC.
const CST_OFFSET_SECS: i64 = 8 * 3600;

/// A wall-clock reading in China Standard Time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wall {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Wall {
    /// Now, in China Standard Time.
    pub fn now() -> Wall {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Wall::at_unix(i64::try_from(secs).unwrap_or(0))
    }

    /// The CST reading of a Unix time in seconds.
    pub fn at_unix(unix_secs: i64) -> Wall {
        let local = unix_secs + CST_OFFSET_SECS;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        // Each value is below 60 (or 24), so the narrowing is exact.
        Wall {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// YYMMDDHHMM, the Submit_time / Done_time form of a status report.
    pub fn yymmddhhmm(&self) -> String {
        format!(
            "{:02}{:02}{:02}{:02}{:02}",
            self.year.rem_euclid(100),
            self.month,
            self.day,
            self.hour,
            self.minute
        )
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1–12 and day 1–31 by construction.
    (year, month as u8, day as u8)
}

/// Mints Msg_Ids: the CST time to the second, the gateway code and a wrapping 16-bit
/// sequence shared by the whole simulator. Ids are therefore unique within a run as long
/// as fewer than 65 536 are minted in any one second.
pub(crate) struct MsgIdGen {
    gateway: u32,
    /// The next sequence value, kept in 0..=0x1_0000 (0x1_0000 meaning "wrap").
    next: AtomicU32,
}

impl MsgIdGen {
    /// `gateway` must fit 22 bits (checked by the configuration).
    pub fn new(gateway: u32, first_sequence: u16) -> MsgIdGen {
        MsgIdGen {
            gateway,
            next: AtomicU32::new(u32::from(first_sequence)),
        }
    }

    /// The first of `count` (at least 1) consecutive ids, stamped now. A block never
    /// straddles the sequence's wrap, so `first + i` stays within the same time and
    /// gateway fields for every `i < count`.
    pub fn next_block(&self, count: u16) -> MsgId {
        self.block_at(&Wall::now(), count)
    }

    fn block_at(&self, wall: &Wall, count: u16) -> MsgId {
        let n = u32::from(count.max(1));
        let fits = |cur: u32| cur + n <= 0x1_0000;
        let prev = self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(if fits(cur) { cur + n } else { n })
            })
            .unwrap_or_else(|cur| cur);
        let first = if fits(prev) { prev } else { 0 };
        MsgId::from_parts(MsgIdParts {
            month: wall.month,
            day: wall.day,
            hour: wall.hour,
            minute: wall.minute,
            second: wall.second,
            gateway: self.gateway,
            // `first + n <= 0x1_0000`, so `first` fits 16 bits.
            sequence: first as u16,
        })
        // Only a gateway over 22 bits fails, which the configuration refuses.
        .unwrap_or(MsgId::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cst_civil_time() {
        // 2024-02-29 16:00:00 UTC = 2024-03-01 00:00:00 CST.
        let w = Wall::at_unix(1_709_222_400);
        assert_eq!((w.year, w.month, w.day, w.hour), (2024, 3, 1, 0));
        // 2023-12-31 20:30:59 UTC = 2024-01-01 04:30:59 CST.
        let w = Wall::at_unix(1_704_054_659);
        assert_eq!(
            (w.year, w.month, w.day, w.hour, w.minute, w.second),
            (2024, 1, 1, 4, 30, 59)
        );
        assert_eq!(w.yymmddhhmm(), "2401010430");
        assert_eq!(Wall::at_unix(-8 * 3600).yymmddhhmm(), "7001010000");
    }

    #[test]
    fn blocks_are_consecutive_and_never_straddle_the_wrap() {
        let wall = Wall::at_unix(1_704_054_659);
        let ids = MsgIdGen::new(1_234_567, 65_530);
        let a = ids.block_at(&wall, 3);
        assert_eq!((a.sequence(), a.gateway()), (65_530, 1_234_567));
        assert_eq!((a.month(), a.day(), a.second()), (1, 1, 59));
        let b = ids.block_at(&wall, 5);
        assert_eq!(b.sequence(), 0, "65533 + 5 would wrap inside the block");
        assert_eq!(ids.block_at(&wall, 1).sequence(), 5);
        let mut seen = std::collections::HashSet::new();
        let ids = MsgIdGen::new(7, 0);
        for _ in 0..65_536 {
            assert!(seen.insert(ids.block_at(&wall, 1)));
        }
        assert_eq!(ids.block_at(&wall, 1).sequence(), 0);
    }
}
