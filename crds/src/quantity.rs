//! Sizes and durations as users write them in specs (`10Gi`, `7d`), with the regular
//! expressions the CRD schema checks them against at admission. The parsers here and the
//! patterns accept exactly the same strings; a unit test holds them together.

use std::fmt::Write as _;
use std::time::Duration;

/// A size: an integer with an optional binary (`Ki`..`Ei`) or decimal (`k`..`E`) suffix.
pub const SIZE_PATTERN: &str = "^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";
/// What a user should write instead of a size that does not parse.
pub const SIZE_HINT: &str = "must be a size such as 1048576, 512Mi or 10Gi";

/// A duration: one or more integer-unit pairs, units `ms`, `s`, `m`, `h`, `d` (`7d`, `1h30m`).
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";
/// What a user should write instead of a duration that does not parse.
pub const DURATION_HINT: &str = "must be a duration such as 30s, 15m, 12h or 7d";

/// CEL rule shared by every size field.
#[must_use]
pub fn size_rule() -> String {
    format!("self.matches('{SIZE_PATTERN}')")
}

/// Admission message of a size field that does not parse.
#[must_use]
pub fn size_message(field: &str) -> String {
    format!("{field} {SIZE_HINT}")
}

/// CEL rule shared by every duration field.
#[must_use]
pub fn duration_rule() -> String {
    format!("self.matches('{DURATION_PATTERN}')")
}

/// Admission message of a duration field that does not parse.
#[must_use]
pub fn duration_message(field: &str) -> String {
    format!("{field} {DURATION_HINT}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("{input:?} {hint}")]
    Malformed { input: String, hint: &'static str },
    #[error("{input:?} is too large")]
    Overflow { input: String },
}

/// Parses a size into bytes.
pub fn parse_size(input: &str) -> Result<u64, ParseError> {
    let malformed = || ParseError::Malformed { input: input.to_owned(), hint: SIZE_HINT };
    let digits_end = input.find(|c: char| !c.is_ascii_digit()).unwrap_or(input.len());
    let (digits, suffix) = input.split_at(digits_end);
    if digits.is_empty() {
        return Err(malformed());
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(malformed()),
    };
    let overflow = || ParseError::Overflow { input: input.to_owned() };
    digits.parse::<u64>().map_err(|_| overflow())?.checked_mul(multiplier).ok_or_else(overflow)
}

/// Parses a duration such as `7d` or `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, ParseError> {
    let malformed = || ParseError::Malformed { input: input.to_owned(), hint: DURATION_HINT };
    let overflow = || ParseError::Overflow { input: input.to_owned() };
    if input.is_empty() {
        return Err(malformed());
    }
    let mut rest = input;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(malformed());
        }
        let value: u64 = rest[..digits_end].parse().map_err(|_| overflow())?;
        let after = &rest[digits_end..];
        // `ms` must be tried before `m`.
        let (unit_ms, unit_len) = if after.starts_with("ms") {
            (1, 2)
        } else {
            match after.chars().next() {
                Some('s') => (1_000, 1),
                Some('m') => (60_000, 1),
                Some('h') => (3_600_000, 1),
                Some('d') => (86_400_000, 1),
                _ => return Err(malformed()),
            }
        };
        let part = value.checked_mul(unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
        rest = &after[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes `duration` the way a spec would (`7d`, `1h30m`, `250ms`): [`parse_duration`] reads it
/// back to the same value, so a status field can be compared with the spec it answers.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let mut rest = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, ms) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= ms {
            let _ = write!(out, "{}{unit}", rest / ms);
            rest %= ms;
        }
    }
    out
}

/// Writes `bytes` the way a spec would: the largest binary suffix that divides it exactly
/// (`10Gi`, `512Mi`), else plain bytes. [`parse_size`] reads it back to the same value.
#[must_use]
pub fn format_size(bytes: u64) -> String {
    for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes > 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("10Gi"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("3G"), Ok(3_000_000_000));
    }

    #[test]
    fn malformed_sizes_are_refused_with_a_hint() {
        for bad in ["", "Gi", "10 GB", "10GB", "1.5Gi", "-1", "10gi", "10Mib"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(matches!(err, ParseError::Malformed { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("512Mi"), "{err}");
        }
    }

    #[test]
    fn oversized_sizes_report_overflow() {
        assert!(matches!(parse_size("99999999999Ei"), Err(ParseError::Overflow { .. })));
    }

    #[test]
    fn durations_parse_single_and_compound_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_mins(15)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_hours(7 * 24)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_mins(90)));
    }

    #[test]
    fn malformed_durations_are_refused_with_a_hint() {
        for bad in ["", "7", "d", "1 h", "1.5h", "1w", "-1s", "1hm"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("7d"), "{bad}: {err}");
        }
    }

    #[test]
    fn formatted_durations_and_sizes_read_back_to_the_same_value() {
        for ms in [0u64, 1, 250, 1_000, 90_000, 5_400_000, 604_800_000, 90_061_001] {
            let text = format_duration(Duration::from_millis(ms));
            assert_eq!(parse_duration(&text), Ok(Duration::from_millis(ms)), "{text}");
        }
        assert_eq!(format_duration(Duration::from_hours(7 * 24)), "7d");
        assert_eq!(format_duration(Duration::from_mins(90)), "1h30m");
        for bytes in [0u64, 1, 1000, 1024, 1_048_576, 10 << 30, 1_073_741_825] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{}", format_size(bytes));
        }
        assert_eq!(format_size(10 << 30), "10Gi");
        assert_eq!(format_size(1000), "1000");
    }
}
