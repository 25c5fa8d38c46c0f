//! Points in time as plain values. The domain never reads a clock; the `Clock` port does.

use std::fmt;

/// Microseconds since the Unix epoch, UTC.
///
/// Stored as an integer on every backend, so ordering and arithmetic are exact and
/// identical on SQLite, PostgreSQL and MySQL (whose `TIMESTAMP` keeps only seconds).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Microseconds in one second.
    pub const MICROS_PER_SECOND: i64 = 1_000_000;
    /// Microseconds in one day.
    pub const MICROS_PER_DAY: i64 = 86_400 * Self::MICROS_PER_SECOND;

    /// A timestamp from microseconds since the Unix epoch.
    #[must_use]
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// A timestamp from whole seconds since the Unix epoch.
    #[must_use]
    pub const fn from_unix_seconds(seconds: i64) -> Self {
        Self(seconds.saturating_mul(Self::MICROS_PER_SECOND))
    }

    /// Microseconds since the Unix epoch.
    #[must_use]
    pub const fn as_unix_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    #[must_use]
    pub const fn as_unix_seconds(self) -> i64 {
        self.0.div_euclid(Self::MICROS_PER_SECOND)
    }

    /// This instant moved by `micros` (negative moves back), saturating at the ends.
    #[must_use]
    pub const fn plus_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// The start of this instant's UTC day.
    #[must_use]
    pub const fn start_of_utc_day(self) -> Self {
        Self(self.0 - self.0.rem_euclid(Self::MICROS_PER_DAY))
    }

    /// The start of this instant's UTC calendar month, and the start of the next one.
    #[must_use]
    pub fn utc_month_bounds(self) -> (Self, Self) {
        let (year, month, _) = civil_from_days(self.0.div_euclid(Self::MICROS_PER_DAY));
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        (
            Self(days_from_civil(year, month) * Self::MICROS_PER_DAY),
            Self(days_from_civil(next_year, next_month) * Self::MICROS_PER_DAY),
        )
    }

    /// The civil UTC date and time: `(year, month, day, hour, minute, second, micros)`.
    #[must_use]
    pub fn to_utc_parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(Self::MICROS_PER_DAY);
        let in_day = self.0.rem_euclid(Self::MICROS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = in_day / Self::MICROS_PER_SECOND;
        let micros = (in_day % Self::MICROS_PER_SECOND) as u32;
        (
            y,
            m,
            d,
            (secs / 3600) as u32,
            ((secs / 60) % 60) as u32,
            (secs % 60) as u32,
            micros,
        )
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number (since 1970-01-01) of the first of `month` in `year`: the inverse of
/// [`civil_from_days`] (same algorithm).
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-28T19:18:37.123456Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, us) = self.to_utc_parts();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_prints_as_rfc3339() {
        assert_eq!(
            Timestamp::from_unix_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn a_known_instant_prints_its_civil_date() {
        // 2026-11-28T19:18:37Z
        let t = Timestamp::from_unix_seconds(1_795_893_517).plus_micros(42);
        assert_eq!(t.to_string(), "2026-11-28T19:18:37.000042Z");
        assert_eq!(
            t.start_of_utc_day().to_string(),
            "2026-11-28T00:00:00.000000Z"
        );
    }

    #[test]
    fn months_start_on_the_first_and_end_where_the_next_begins() {
        let day = Timestamp::MICROS_PER_DAY;
        // 2026-12-01T12:00Z: December, then 2027-01-01.
        let (start, end) = Timestamp::from_unix_micros(20_788 * day + day / 2).utc_month_bounds();
        assert_eq!(start.to_string(), "2026-12-01T00:00:00.000000Z");
        assert_eq!(end.to_string(), "2027-01-01T00:00:00.000000Z");
        // A leap February has 29 days; the epoch's month starts at 0.
        let (start, end) = Timestamp::from_unix_micros(19_782 * day).utc_month_bounds();
        assert_eq!(start.to_string(), "2024-02-01T00:00:00.000000Z");
        assert_eq!((end.as_unix_micros() - start.as_unix_micros()) / day, 29);
        assert_eq!(
            Timestamp::from_unix_micros(5)
                .utc_month_bounds()
                .0
                .as_unix_micros(),
            0
        );
    }

    #[test]
    fn leap_days_and_instants_before_the_epoch_are_correct() {
        assert_eq!(
            Timestamp::from_unix_seconds(951_782_400).to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_micros(-1).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
    }
}
