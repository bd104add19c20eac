//! Event timestamps: unix time in seconds, milliseconds, microseconds or nanoseconds (told apart
//! by magnitude), as numbers or numeric strings, or RFC 3339 text.

use jiff::Timestamp;
use serde_json::Value;

use super::template::{Val, article};

/// Magnitudes at which a unix time stops being plausible in the smaller unit: 1e11 seconds is the
/// year 5138, while 1e11 milliseconds is 1973. Each step up is a factor of 1000.
const SECONDS_BELOW: u128 = 100_000_000_000;
const MILLIS_BELOW: u128 = SECONDS_BELOW * 1000;
const MICROS_BELOW: u128 = MILLIS_BELOW * 1000;

/// Nanoseconds per unit for a unix time whose whole part has this magnitude.
fn unit_nanos(magnitude: u128) -> i128 {
    if magnitude < SECONDS_BELOW {
        1_000_000_000
    } else if magnitude < MILLIS_BELOW {
        1_000_000
    } else if magnitude < MICROS_BELOW {
        1_000
    } else {
        1
    }
}

/// Why a value is not a timestamp; deliberately without the value itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimestampError {
    NotATime(&'static str),
    OutOfRange,
}

impl std::fmt::Display for TimestampError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimestampError::NotATime(kind) => write!(
                f,
                "expected unix seconds, milliseconds or RFC 3339 text, found {} that is none of these",
                article(kind)
            ),
            TimestampError::OutOfRange => {
                f.write_str("is outside the supported range of years 1 to 9999")
            }
        }
    }
}

/// Converts a present value to a timestamp.
pub(crate) fn to_timestamp(value: &Val<'_>) -> Result<Timestamp, TimestampError> {
    match value {
        Val::Json(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                // Unix seconds, the usual case, without the 128-bit arithmetic of `from_unix`.
                if u128::from(i.unsigned_abs()) < SECONDS_BELOW {
                    return Timestamp::from_second(i).map_err(|_| TimestampError::OutOfRange);
                }
                from_unix(i128::from(i), 0, 0)
            } else if let Some(u) = n.as_u64() {
                from_unix(i128::from(u), 0, 0)
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                let magnitude = f.abs().trunc();
                if magnitude >= 1e30 {
                    return Err(TimestampError::OutOfRange);
                }
                // `as` saturates; anything that large is rejected by jiff below.
                let nanos = (f * unit_nanos(magnitude as u128) as f64) as i128;
                Timestamp::from_nanosecond(nanos).map_err(|_| TimestampError::OutOfRange)
            } else {
                Err(TimestampError::OutOfRange)
            }
        }
        Val::Json(Value::String(s)) => from_text(s),
        Val::Text(s) => from_text(s),
        other => Err(TimestampError::NotATime(other.type_name())),
    }
}

fn from_text(text: &str) -> Result<Timestamp, TimestampError> {
    let text = text.trim();
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let numeric = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !numeric {
        return text
            .parse::<Timestamp>()
            .map_err(|_| TimestampError::NotATime("string"));
    }
    let whole: i128 = whole.parse().map_err(|_| TimestampError::OutOfRange)?;
    // Digits beyond nanoseconds carry no information a Timestamp can keep.
    let fraction = &fraction[..fraction.len().min(18)];
    let scale = 10i128.pow(fraction.len() as u32);
    let fraction: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| TimestampError::OutOfRange)?
    };
    let sign = if text.starts_with('-') { -1 } else { 1 };
    from_unix(sign * whole, sign * fraction, scale)
}

/// `whole + fraction / scale` units, the unit chosen by the magnitude of `whole`.
fn from_unix(whole: i128, fraction: i128, scale: i128) -> Result<Timestamp, TimestampError> {
    let unit = unit_nanos(whole.unsigned_abs());
    let nanos = whole.checked_mul(unit).ok_or(TimestampError::OutOfRange)?
        + if scale == 0 {
            0
        } else {
            fraction * unit / scale
        };
    Timestamp::from_nanosecond(nanos).map_err(|_| TimestampError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;

    use super::*;

    fn ts(value: Value) -> Result<String, TimestampError> {
        to_timestamp(&Val::Json(&value)).map(|t| t.to_string())
    }

    #[test]
    fn unix_seconds_become_rfc3339_utc() {
        assert_eq!(ts(json!(1_700_000_000)).unwrap(), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn unix_milliseconds_are_told_apart_by_magnitude() {
        assert_eq!(
            ts(json!(1_700_000_000_123_i64)).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn unix_microseconds_and_nanoseconds_are_told_apart_by_magnitude() {
        assert_eq!(
            ts(json!(1_700_000_000_123_456_i64)).unwrap(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            ts(json!(1_700_000_000_123_456_789_i64)).unwrap(),
            "2023-11-14T22:13:20.123456789Z"
        );
    }

    #[test]
    fn fractional_seconds_as_number_keep_millisecond_precision() {
        let t = ts(json!(1_700_000_000.5)).unwrap();
        assert_eq!(t, "2023-11-14T22:13:20.5Z");
    }

    #[test]
    fn numeric_strings_are_unix_times() {
        assert_eq!(ts(json!("1700000000")).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(
            ts(json!("1700000000123")).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        // Slack's `ts`: seconds with a microsecond fraction, exact (no float rounding).
        assert_eq!(
            ts(json!("1700000000.000100")).unwrap(),
            "2023-11-14T22:13:20.0001Z"
        );
    }

    #[test]
    fn rfc3339_with_offset_is_converted_to_utc() {
        assert_eq!(
            ts(json!("2024-03-01T10:00:00-05:00")).unwrap(),
            "2024-03-01T15:00:00Z"
        );
        assert_eq!(
            ts(json!("2024-03-01T10:00:00.25Z")).unwrap(),
            "2024-03-01T10:00:00.25Z"
        );
    }

    #[test]
    fn text_that_is_no_time_is_an_error_without_the_value() {
        let err = ts(json!("next tuesday")).unwrap_err();
        assert_eq!(err, TimestampError::NotATime("string"));
        assert!(!err.to_string().contains("tuesday"));
        // Without an offset the instant is ambiguous.
        assert!(ts(json!("2024-03-01T10:00:00")).is_err());
    }

    #[test]
    fn objects_and_booleans_are_not_times() {
        assert_eq!(
            ts(json!({"a": 1})).unwrap_err(),
            TimestampError::NotATime("object")
        );
        assert_eq!(
            ts(json!(true)).unwrap_err(),
            TimestampError::NotATime("boolean")
        );
    }

    #[test]
    fn out_of_range_times_are_errors_not_panics() {
        assert_eq!(ts(json!(1e300)).unwrap_err(), TimestampError::OutOfRange);
        assert_eq!(
            ts(json!("99999999999999999999999999999999999999999")).unwrap_err(),
            TimestampError::OutOfRange
        );
        // The largest integers read as nanoseconds, which stay within jiff's range.
        assert_eq!(
            ts(json!(u64::MAX)).unwrap(),
            "2554-07-21T23:34:33.709551615Z"
        );
        assert_eq!(
            ts(json!(i64::MIN)).unwrap(),
            "1677-09-21T00:12:43.145224192Z"
        );
    }

    #[test]
    fn text_values_from_headers_are_accepted() {
        let t = to_timestamp(&Val::Text(Cow::Borrowed("1700000000"))).unwrap();
        assert_eq!(t.as_second(), 1_700_000_000);
    }
}
