//! Value conversions from JSON to the journal's types. Errors say what is
//! wrong; the caller adds the path.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::compile::{CompiledSource, Field};
use super::params::Encoding;
use super::path::Record;
use crate::codecs::time::{epoch, parse_ts};
use crate::domain::money::{decimal_to_minor, json_number_to_minor};
use crate::event::ts_from_millis;

/// An identifier: a string (trimmed) or an integer, as some POS send
/// numeric receipt ids and SKUs.
pub(super) fn text_value(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(format!("expected a string, got {}", type_name(other))),
    }
}

pub(super) fn gtin_value(v: &Value) -> Result<String, String> {
    let text = text_value(v)?;
    if text.bytes().all(|b| b.is_ascii_digit()) && matches!(text.len(), 8 | 12 | 13 | 14) {
        Ok(text)
    } else {
        Err("not a GTIN (8, 12, 13 or 14 digits)".into())
    }
}

/// An ISO 4217 code, upper-cased.
pub(super) fn currency_code(text: &str) -> Result<String, String> {
    let code = text.trim().to_ascii_uppercase();
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err("expected a three-letter ISO 4217 code such as \"EUR\"".into())
    }
}

/// A whole number: a JSON integer, a float without fraction (`2.0`), or a
/// string of digits.
pub(super) fn integer_value(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            if n.is_u64() {
                return Err("out of range".into());
            }
            match n.as_f64() {
                // Beyond 2^53 a float no longer holds every integer.
                Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(f as i64),
                _ => Err(format!("{n} is not a whole number")),
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| "expected a whole number".to_string()),
        other => Err(format!("expected a whole number, got {}", type_name(other))),
    }
}

/// A decimal price in major units, converted exactly to minor units of
/// `currency`: a JSON number through its decimal text, or a string with `.`
/// as decimal separator (or `,` when the string has no `.`, as European
/// POS write `"2,49"`).
pub(super) fn decimal_value(v: &Value, currency: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => json_number_to_minor(n, currency).map_err(|e| e.to_string()),
        Value::String(s) => {
            let separator = if !s.contains('.') && s.contains(',') {
                ','
            } else {
                '.'
            };
            decimal_to_minor(s, currency, separator).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "expected a decimal number, got {}",
            type_name(other)
        )),
    }
}

// `#[inline]`: see `decode::tag_read`.
#[inline]
pub(super) fn epc_value(source: &CompiledSource, v: &Value) -> Result<String, String> {
    let text = match v {
        Value::String(s) => s.trim(),
        other => return Err(format!("expected a string, got {}", type_name(other))),
    };
    match source.encoding.unwrap_or(Encoding::Hex) {
        Encoding::Hex => {
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Err("not hex".into())
            } else if text.len() % 2 != 0 {
                Err("odd number of hex digits".into())
            } else {
                Ok(text.to_ascii_uppercase())
            }
        }
        Encoding::Base64 => {
            let bytes = decode_base64(text).ok_or_else(|| "not valid base64".to_string())?;
            if bytes.is_empty() {
                return Err("empty".into());
            }
            Ok(hex::encode_upper(bytes))
        }
    }
}

/// Base64 in the standard or URL-safe alphabet, padded or not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // The URL-safe alphabet differs only in these two characters.
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    ENGINE.decode(standard).ok()
}

#[inline]
pub(super) fn antenna_value(v: &Value) -> Result<u32, String> {
    let expected = || "expected a non-negative whole number".to_string();
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(expected)
            .and_then(|a| u32::try_from(a).map_err(|_| "out of range".to_string())),
        Value::String(s) => s.trim().parse::<u32>().map_err(|_| expected()),
        other => Err(format!("{}, got {}", expected(), type_name(other))),
    }
}

/// RSSI in dBm: the number (or numeric string) times `scale`, rounded to
/// the nearest whole dBm with halves away from zero (-40.5 -> -41). RSSI
/// is a measurement, not money, so a float is fine here.
#[inline]
pub(super) fn rssi_value(source: &CompiledSource, v: &Value) -> Result<i32, String> {
    let raw = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let raw = raw
        .filter(|f| f.is_finite())
        .ok_or_else(|| format!("expected a number, got {}", type_name(v)))?;
    let dbm = (raw * source.scale.unwrap_or(1.0)).round();
    if dbm.is_finite() && dbm >= f64::from(i32::MIN) && dbm <= f64::from(i32::MAX) {
        Ok(dbm as i32)
    } else {
        Err("out of range".into())
    }
}

/// The record's timestamp truncated to milliseconds, or `now` when no `ts`
/// field is configured. The flag is set when a configured `ts` was missing
/// or unparsable and `now` was used instead.
#[inline]
pub(super) fn timestamp<R: Record + ?Sized>(
    field: Option<&Field>,
    record: &R,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, bool) {
    let Some(field) = field else {
        return (now, false);
    };
    let parsed = match field.find(record) {
        Some((_, Value::String(s))) => parse_ts(s),
        Some((_, Value::Number(n))) => n.as_f64().and_then(epoch),
        _ => None,
    };
    match parsed {
        Some(ts) => (ts_from_millis(ts.timestamp_millis()), false),
        None => (now, true),
    }
}

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
