//! Device timestamps: the lenient parser every codec may use, and epoch
//! numbers told apart by magnitude. Moved out of `json`, its first user,
//! so that other codecs can read the same spellings the same way.

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// Parse a device timestamp leniently. Accepts RFC 3339 / ISO 8601 with
/// `T`, `t` or a space between date and time, any number of fractional
/// digits (`.` or `,`; beyond nanoseconds truncated) and an offset `Z`,
/// `+02:00`, `+0200` or `+02`; also epoch numbers as text, in seconds
/// (fraction allowed), milliseconds, microseconds or nanoseconds, told
/// apart by magnitude. A time without offset is refused: its zone is
/// unknown, and a wrong guess would shift it by hours.
pub fn parse_ts(text: &str) -> Option<DateTime<Utc>> {
    // The journal and central write timestamps as RFC 3339, which has
    // four-digit years: a time outside them could be stored but never read
    // back (found by the `timestamps` fuzz target: an epoch of 4.75e20).
    parse_any_ts(text).filter(|t| (0..=9999).contains(&t.year()))
}

fn parse_any_ts(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return epoch(t.parse::<f64>().ok()?);
    }
    parse_plain_rfc3339(t).or_else(|| parse_lenient_rfc3339(t))
}

/// The shape nearly every reader sends, `2026-11-22T10:15:30.123Z` (or
/// `+02:00`, `+0200`; 0-9 fractional digits), read without building
/// strings: this runs for every tag read. `None` for anything else, which
/// `parse_lenient_rfc3339` then reads (it gives the same time for what
/// this accepts; a property test holds them to it).
fn parse_plain_rfc3339(t: &str) -> Option<DateTime<Utc>> {
    let b = t.as_bytes();
    let digits = |at: std::ops::Range<usize>| decimal(b.get(at)?);
    let punctuation_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !punctuation_ok {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let [b'.' | b',', fraction @ ..] = rest {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return None;
        }
        nanos = digits(20..20 + n)? * 10u32.pow(9 - n as u32);
        rest = &fraction[n..];
    }
    let (sign, oh, om) = match rest {
        [b'Z' | b'z'] => (1, 0, 0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            (sign, decimal(&[*h1, *h2])?, decimal(&[*m1, *m2])?)
        }
        _ => return None,
    };
    // Leap seconds and odd offsets are left to the general parser.
    if second > 59 || oh > 23 || om > 59 {
        return None;
    }
    let local = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)?;
    let offset_s = sign * i64::from(oh * 3600 + om * 60);
    let utc = local.checked_sub_signed(chrono::Duration::seconds(offset_s))?;
    Some(Utc.from_utc_datetime(&utc))
}

/// ASCII decimal digits as a number; `None` if any byte is not a digit.
fn decimal(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// Any RFC 3339-like time `parse_ts` accepts, normalised and handed to
/// chrono.
fn parse_lenient_rfc3339(t: &str) -> Option<DateTime<Utc>> {
    // Split off the offset: a trailing Z, or the last sign in the time part
    // (the date part before index 10 has '-' of its own).
    let (body, offset) = match t.strip_suffix(['Z', 'z']) {
        Some(body) => (body, "+00:00".to_string()),
        None => {
            let sign_at = t.get(11..)?.rfind(['+', '-'])? + 11;
            let (body, offset) = t.split_at(sign_at);
            (body, normalise_offset(offset)?)
        }
    };
    let body = body.trim_end();
    let date = body.get(..10)?;
    let separator = body.get(10..11)?;
    if !matches!(separator, "T" | "t" | " ") {
        return None;
    }
    let time = body.get(11..)?;
    let (hms, fraction) = match time.split_once(['.', ',']) {
        Some((hms, fraction)) => (hms, fraction),
        None => (time, ""),
    };
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction = fraction.get(..9).unwrap_or(fraction);
    let normalised = if fraction.is_empty() {
        format!("{date}T{hms}{offset}")
    } else {
        format!("{date}T{hms}.{fraction}{offset}")
    };
    DateTime::parse_from_rfc3339(&normalised)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `+0200`, `+02` or `+02:00` as `+02:00`.
fn normalise_offset(offset: &str) -> Option<String> {
    let sign = offset.get(..1)?;
    let rest = offset.get(1..)?;
    let (hours, minutes) = match rest.len() {
        2 => (rest, "00"),
        4 => (rest.get(..2)?, rest.get(2..)?),
        5 if rest.get(2..3) == Some(":") => (rest.get(..2)?, rest.get(3..)?),
        _ => return None,
    };
    if !(hours.bytes().all(|b| b.is_ascii_digit()) && minutes.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(format!("{sign}{hours}:{minutes}"))
}

/// An epoch number to a timestamp; its unit is told by magnitude (seconds
/// up to 1e11, i.e. until the year 5138, then ms, µs, ns).
pub(crate) fn epoch(value: f64) -> Option<DateTime<Utc>> {
    if !value.is_finite() {
        return None;
    }
    let magnitude = value.abs();
    let millis = if magnitude < 1e11 {
        value * 1e3
    } else if magnitude < 1e14 {
        value
    } else if magnitude < 1e17 {
        value / 1e3
    } else {
        value / 1e6
    };
    if millis.abs() > 1e15 {
        return None;
    }
    Utc.timestamp_millis_opt(millis.round() as i64).single()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn timestamps_beyond_year_9999_are_refused() {
        // An epoch in microseconds past the year 9999 (from the fuzzer).
        assert_eq!(parse_ts("475040012375050400123"), None);
        assert_eq!(parse_ts("-99999999999999"), None);
        assert!(parse_ts("253402300799").is_some()); // 9999-12-31T23:59:59Z
    }

    #[test]
    fn parse_ts_accepts_the_usual_device_spellings() {
        let cases = [
            ("2019-08-24T14:15:22Z", "2019-08-24T14:15:22Z"),
            ("2019-08-24t14:15:22z", "2019-08-24T14:15:22Z"),
            ("2019-08-24 14:15:22Z", "2019-08-24T14:15:22Z"),
            ("2023-04-03T21:50:16.699+0200", "2023-04-03T19:50:16.699Z"),
            ("2023-04-03T21:50:16.699+02:00", "2023-04-03T19:50:16.699Z"),
            ("2023-04-03T21:50:16.699+02", "2023-04-03T19:50:16.699Z"),
            ("2023-04-03T21:50:16-05:30", "2023-04-04T03:20:16Z"),
            ("2023-04-03T21:50:16 +0200", "2023-04-03T19:50:16Z"),
            ("2024-05-10T08:00:01.1Z", "2024-05-10T08:00:01.100Z"),
            ("2024-05-10T08:00:01,25Z", "2024-05-10T08:00:01.250Z"),
            (
                "2021-02-02T22:18:35.658476625Z",
                "2021-02-02T22:18:35.658476625Z",
            ),
            (
                "2021-02-02T22:18:35.658476625999Z",
                "2021-02-02T22:18:35.658476625Z",
            ),
            ("  2019-08-24T14:15:22Z\n", "2019-08-24T14:15:22Z"),
            ("1700000000", "2023-11-14T22:13:20Z"),
            ("1700000000.5", "2023-11-14T22:13:20.500Z"),
            ("1700000000123", "2023-11-14T22:13:20.123Z"),
            ("1700000000123456", "2023-11-14T22:13:20.123Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_ts(text), Some(utc(expected)), "{text}");
        }
    }

    #[test]
    fn parse_ts_refuses_what_it_cannot_place() {
        for text in [
            "",
            "   ",
            "yesterday",
            "2019-08-24",
            "2019-08-24T14:15:22",     // no offset: zone unknown
            "2019-08-24T14:15:22.123", // no offset
            "2019-02-30T14:15:22Z",    // no such day
            "2019-08-24T25:15:22Z",    // no such hour
            "2019-08-24T14:15:22+2",   // malformed offset
            "2019-08-24T14:15:22+02:0x",
            "2019-08-24T14:15:22.12aZ",
            "2019-08-24X14:15:22Z",
            "NaN",
            "inf",
            "-",
            ".",
            "1.2.3",
            "99999999999999999999999",
            "2019-08-24T14:15:22Zé",
            "é2019-08-24T14:15:22Z",
        ] {
            assert_eq!(parse_ts(text), None, "{text:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn plain_timestamps_read_as_the_lenient_parser_reads_them(
            text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]{0,11})?(Z|z|[+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2}|)"
        ) {
            if let Some(fast) = parse_plain_rfc3339(&text) {
                prop_assert_eq!(Some(fast), parse_lenient_rfc3339(&text));
            }
        }
    }

    #[test]
    fn plain_timestamps_take_the_fast_way() {
        for (text, expected) in [
            ("2026-11-22T10:15:30.123Z", "2026-11-22T10:15:30.123Z"),
            ("2023-04-03T21:50:16.699+0200", "2023-04-03T19:50:16.699Z"),
            (
                "2021-02-02T22:18:35.658476625Z",
                "2021-02-02T22:18:35.658476625Z",
            ),
            ("2024-01-01 00:30:00-01:30", "2024-01-01T02:00:00Z"),
        ] {
            assert_eq!(parse_plain_rfc3339(text), Some(utc(expected)), "{text}");
        }
        for text in [
            "2024-12-31T23:59:60Z",
            "2024-05-10T08:00:01.1+02",
            "2024-02-30T00:00:00Z",
        ] {
            assert_eq!(parse_plain_rfc3339(text), None, "{text}");
        }
    }
}
