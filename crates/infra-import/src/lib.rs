//! Readers of what people move in with: the original service's SQLite database
//! ([`CbBackDatabase`]) and ChatGPT exports ([`ChatGptExports`]), each translated into the
//! import use case's vocabulary (no format of theirs goes further).

mod cb_back;
mod chatgpt;
#[cfg(feature = "testing")]
pub mod testing;

pub use cb_back::CbBackDatabase;
pub use chatgpt::ChatGptExports;

use domain::Timestamp;
use sea_orm::QueryResult;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use usecase::ports::BoxError;

/// A time column of the original: ISO 8601 text as Tortoise writes it
/// (`2025-06-08 02:54:43.123456+00:00`, the offset optional and then UTC), or Unix seconds.
fn timestamp(row: &QueryResult, column: &str) -> Result<Timestamp, BoxError> {
    if let Ok(text) = row.try_get::<String>("", column) {
        return parse_time(&text).ok_or_else(|| format!("{column}: not a time: {text:?}").into());
    }
    if let Ok(seconds) = row.try_get::<f64>("", column) {
        return Ok(from_seconds(seconds));
    }
    Err(format!("{column}: not a time").into())
}

/// ISO 8601 date and time, `T` or a space between them, UTC when no offset is given.
fn parse_time(text: &str) -> Option<Timestamp> {
    let mut iso = text.trim().replacen(' ', "T", 1);
    let time_part = iso.split_once('T').map_or("", |(_, t)| t);
    if !(time_part.ends_with('Z') || time_part.contains('+') || time_part.contains('-')) {
        iso.push('Z');
    }
    let at = OffsetDateTime::parse(&iso, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000)
        .ok()
        .map(Timestamp::from_unix_micros)
}

/// Unix seconds with a fraction (as ChatGPT writes them).
fn from_seconds(seconds: f64) -> Timestamp {
    // Saturating: a wild value ends at the edge of time, not in a panic.
    Timestamp::from_unix_micros((seconds * 1_000_000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_times_are_read_with_or_without_an_offset() {
        let utc = parse_time("2025-06-08 02:54:43.123456+00:00").unwrap();
        assert_eq!(utc.as_unix_micros(), 1_749_351_283_123_456);
        assert_eq!(parse_time("2025-06-08 02:54:43.123456"), Some(utc));
        assert_eq!(parse_time("2025-06-08T11:54:43.123456+09:00"), Some(utc));
        assert_eq!(
            parse_time("2025-06-08 02:54:43").map(Timestamp::as_unix_seconds),
            Some(1_749_351_283)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            from_seconds(1_700_000_000.5).as_unix_micros(),
            1_700_000_000_500_000
        );
    }
}
