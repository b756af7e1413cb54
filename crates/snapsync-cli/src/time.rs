//! Durations and times as the command line reads and prints them.

use std::time::{Duration, SystemTime};

/// Parses an age or timeout: `90s`, `30m`, `24h`, `7d`, `1h 30m` (humantime's syntax) or `0`.
///
/// # Errors
/// The text, and why it is not an age.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not an age (30m, 24h, 7d, 1h 30m): {e}"))
}

/// A duration in its largest whole unit: `1d`, `90m`, `45s`.
#[must_use]
pub fn format_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) && s > 0 => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) && s > 0 => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) && s > 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
#[must_use]
pub fn format_utc(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_format() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_hours(24)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_mins(30)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_hours(168)));
        assert_eq!(parse_age("1h 30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse_age("0"), Ok(Duration::ZERO));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("5 fortnights").is_err());
        // Too large for a duration: an error, not an overflow.
        assert!(parse_age("99999999999999999999d").is_err());
        assert!(parse_age("999999999999999999h").is_err());
        assert_eq!(format_age(Duration::from_hours(24)), "1d");
        assert_eq!(format_age(Duration::from_mins(90)), "90m");
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_436_223);
        assert_eq!(format_utc(t), "2026-11-23 12:17:03 UTC");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_hours(264_384);
        assert_eq!(format_utc(leap), "2000-02-29 00:00:00 UTC");
        let before = SystemTime::UNIX_EPOCH - Duration::from_hours(24);
        assert_eq!(format_utc(before), "1969-12-31 00:00:00 UTC");
    }
}
