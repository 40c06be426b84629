//! Money: integer minor units (DESIGN invariant 5). Decimal text from
//! devices is converted exactly, never through a float.

/// Why a decimal amount could not be turned into minor units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{text:?} is not a decimal amount")]
    NotDecimal { text: String },
    #[error("{text:?} has more decimals than {currency} allows ({exponent})")]
    TooPrecise {
        text: String,
        currency: String,
        exponent: u32,
    },
    #[error("{text:?} is too large")]
    Overflow { text: String },
}

/// Digits after the decimal point of an ISO 4217 currency. Unknown codes
/// are assumed to have two, which is right for most of the world.
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "XOF" | "XAF" | "PYG" | "UGX" | "RWF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
        _ => 2,
    }
}

/// Convert decimal text (`"2.49"`, `"-3,10"`, `"7"`) to minor units of
/// `currency`, exactly. `decimal_separator` is `'.'` or `','`; the other
/// character is not accepted (thousands separators are not guessed).
/// Trailing zeros beyond the currency's exponent are fine (`"2.490"`),
/// significant extra digits are an error rather than silently rounded.
pub fn decimal_to_minor(
    text: &str,
    currency: &str,
    decimal_separator: char,
) -> Result<i64, MoneyError> {
    let exp = exponent(currency);
    let bad = || MoneyError::NotDecimal {
        text: text.to_string(),
    };
    let t = text.trim();
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, frac) = match digits.split_once(decimal_separator) {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > exp as usize {
        return Err(MoneyError::TooPrecise {
            text: text.to_string(),
            currency: currency.to_string(),
            exponent: exp,
        });
    }
    let overflow = || MoneyError::Overflow {
        text: text.to_string(),
    };
    let mut value: i64 = 0;
    for c in whole.chars() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(c as u8 - b'0')))
            .ok_or_else(overflow)?;
    }
    for i in 0..exp as usize {
        let d = frac_trimmed
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(overflow)?;
    }
    Ok(if negative { -value } else { value })
}

/// Convert a JSON number to minor units exactly, using its decimal text
/// (serde_json keeps the literal digits for integers; floats are printed
/// shortest-round-trip, which is the decimal the device wrote).
pub fn json_number_to_minor(n: &serde_json::Number, currency: &str) -> Result<i64, MoneyError> {
    decimal_to_minor(&n.to_string(), currency, '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(decimal_to_minor("2.49", "EUR", '.'), Ok(249));
        assert_eq!(decimal_to_minor("3,10", "EUR", ','), Ok(310));
        assert_eq!(decimal_to_minor("-4.5", "EUR", '.'), Ok(-450));
        assert_eq!(decimal_to_minor("7", "EUR", '.'), Ok(700));
        assert_eq!(decimal_to_minor("0.1", "EUR", '.'), Ok(10));
        assert_eq!(decimal_to_minor("2.490", "EUR", '.'), Ok(249));
        assert_eq!(decimal_to_minor("1200", "JPY", '.'), Ok(1200));
        assert_eq!(decimal_to_minor("1.234", "KWD", '.'), Ok(1234));
    }

    #[test]
    fn bad_amounts_are_refused_not_rounded() {
        assert!(matches!(
            decimal_to_minor("2.499", "EUR", '.'),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            decimal_to_minor("2,49", "EUR", '.'),
            Err(MoneyError::NotDecimal { .. })
        ));
        assert!(matches!(
            decimal_to_minor("", "EUR", '.'),
            Err(MoneyError::NotDecimal { .. })
        ));
        assert!(matches!(
            decimal_to_minor("1e3", "EUR", '.'),
            Err(MoneyError::NotDecimal { .. })
        ));
        assert!(matches!(
            decimal_to_minor("99999999999999999999", "EUR", '.'),
            Err(MoneyError::Overflow { .. })
        ));
    }

    #[test]
    fn json_numbers_convert_through_their_text() {
        let n: serde_json::Number = serde_json::from_str("0.29").unwrap();
        assert_eq!(json_number_to_minor(&n, "EUR"), Ok(29));
        let n: serde_json::Number = serde_json::from_str("3").unwrap();
        assert_eq!(json_number_to_minor(&n, "EUR"), Ok(300));
    }
}
