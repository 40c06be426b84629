//! How a price is written on a shelf label: `2,49 €` in Germany, `$2.49`
//! in the US. Integer minor units in, text out; no float ever touches the
//! amount (DESIGN invariant 5).

use crate::domain::money;

/// No-break space: between a number and its currency symbol, so that a
/// label never wraps a price across two lines.
const NBSP: &str = "\u{00A0}";
/// Narrow no-break space: the French thousands separator.
const NNBSP: &str = "\u{202F}";
/// Right single quotation mark: the Swiss thousands separator.
const SWISS_APOSTROPHE: &str = "\u{2019}";

/// Where the currency symbol goes relative to the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SymbolAt {
    /// `$2.49`, or `€ 2,49` with `space`.
    Before { space: bool },
    /// `2,49 €`, always with a no-break space.
    After,
}

/// The number format of one locale.
#[derive(Debug, Clone, Copy)]
struct Style {
    decimal: &'static str,
    group: &'static str,
    /// Integer digits needed before grouping starts: 4 for most locales
    /// (`1.234`), 5 where a lone four-digit number is not grouped (Spanish
    /// and Polish write `1234`, but `12 345`).
    min_grouping_digits: usize,
    symbol: SymbolAt,
}

const EN: Style = Style {
    decimal: ".",
    group: ",",
    min_grouping_digits: 4,
    symbol: SymbolAt::Before { space: false },
};
const DE: Style = Style {
    decimal: ",",
    group: ".",
    min_grouping_digits: 4,
    symbol: SymbolAt::After,
};
const DE_AT: Style = Style { group: NBSP, ..DE };
const DE_CH: Style = Style {
    decimal: ".",
    group: SWISS_APOSTROPHE,
    min_grouping_digits: 4,
    symbol: SymbolAt::Before { space: true },
};
const FR: Style = Style {
    decimal: ",",
    group: NNBSP,
    min_grouping_digits: 4,
    symbol: SymbolAt::After,
};
const IT: Style = DE;
const ES: Style = Style {
    min_grouping_digits: 5,
    ..DE
};
const NL: Style = Style {
    decimal: ",",
    group: ".",
    min_grouping_digits: 4,
    symbol: SymbolAt::Before { space: true },
};
const SV: Style = Style {
    decimal: ",",
    group: NBSP,
    min_grouping_digits: 4,
    symbol: SymbolAt::After,
};
const PL: Style = Style {
    min_grouping_digits: 5,
    ..SV
};
const JA: Style = EN;

/// The languages with a number format of their own; any region of them
/// is accepted (`de-DE`, `de-AT`, `fr-BE`), and `en` covers the rest of
/// the world's `$1,234.50` style.
pub const KNOWN_LANGUAGES: [&str; 9] = ["de", "en", "es", "fr", "it", "ja", "nl", "pl", "sv"];

/// Whether `locale` is one [`price_text`] knows: a known language,
/// optionally followed by a region (`-DE` or `_DE`, two letters or three
/// digits). An unknown one would silently print prices the US way.
pub fn is_known_locale(locale: &str) -> bool {
    let normalized = locale.trim().replace('_', "-").to_ascii_lowercase();
    let mut parts = normalized.split('-');
    let language = parts.next().unwrap_or("");
    let region_ok = match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(r), None) => {
            (r.len() == 2 && r.bytes().all(|b| b.is_ascii_alphabetic()))
                || (r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()))
        }
        _ => false,
    };
    KNOWN_LANGUAGES.contains(&language) && region_ok
}

/// The style of a locale tag (`de-DE`, `de_DE` and `DE-de` alike): first
/// the exact locale, then its language, then en-US.
fn style(locale: &str) -> Style {
    let normalized = locale.trim().replace('_', "-").to_ascii_lowercase();
    match normalized.as_str() {
        "de-at" => return DE_AT,
        "de-ch" | "de-li" => return DE_CH,
        _ => {}
    }
    let language = normalized.split('-').next().unwrap_or("");
    match language {
        "de" => DE,
        "fr" => FR,
        "it" => IT,
        "es" => ES,
        "nl" => NL,
        "sv" => SV,
        "pl" => PL,
        "ja" => JA,
        _ => EN,
    }
}

/// The symbol shown for an ISO 4217 code; unknown codes show the code.
fn symbol(currency: &str) -> &str {
    match currency {
        "EUR" => "€",
        "USD" => "$",
        "GBP" => "£",
        "CHF" => "CHF",
        "SEK" | "NOK" | "DKK" => "kr",
        "PLN" => "zł",
        "CZK" => "Kč",
        "JPY" => "¥",
        other => other,
    }
}

/// Insert `group` between every three digits from the right, if the
/// integer part has at least `min_digits` digits.
fn group_digits(digits: &str, group: &str, min_digits: usize) -> String {
    if digits.len() < min_digits {
        return digits.to_string();
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * group.len());
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push_str(group);
        }
        out.push(c);
    }
    out
}

/// Format `minor` units of `currency` the way shoppers in `locale` expect
/// to read a price on a shelf label.
///
/// Rules:
/// - Digits after the decimal separator: the currency's exponent
///   ([`money::exponent`]): `JPY 1200` is `¥1,200`, `KWD 1234` is
///   `KWD 1.234`. The amount is split with integer arithmetic only.
/// - Symbol: `€ $ £ ¥ zł Kč`, `kr` for SEK/NOK/DKK, `CHF`; any other
///   currency shows its ISO code.
/// - Locales (separators decimal / thousands, symbol position):
///   - `de-DE`, `it-IT` (and `de`, `it`): `1.234,50 €`
///   - `de-AT`: `1 234,50 €` (no-break space groups, as CLDR has it)
///   - `de-CH`: `CHF 1’234.50` (apostrophe groups, symbol before)
///   - `fr-FR` (and `fr`): `1 234,50 €` with a narrow no-break space
///     U+202F between groups
///   - `es-ES` (and `es`): `1234,50 €` but `12.345,00 €`: four-digit
///     numbers are not grouped
///   - `nl-NL` (and `nl`): `€ 1.234,50`
///   - `sv-SE` (and `sv`): `1 234,50 kr`
///   - `pl-PL` (and `pl`): `1234,50 zł`, `12 345,00 zł` (like Spanish)
///   - `en-US`, `en-GB`, `en-IE`, `ja-JP` and anything unknown:
///     `$1,234.50`, `£2.49`, `€2.49`, `¥1,200`
/// - A symbol after the number is separated by a no-break space (U+00A0);
///   so is a symbol before it where the locale spaces it (`de-CH`, `nl`),
///   and also where the symbol ends in a letter (`CHF 2.49` in en-US
///   rather than `CHF2.49`). Every space inside a price is a no-break
///   space, so a label never wraps a price.
/// - Negative amounts get a leading `-` before everything: `-2,49 €`,
///   `-$2.49`, `-€ 2,49`.
/// - Unknown locales fall back on their language (`de-LU` is written as
///   `de-DE`, `fr-CA` as `fr-FR`), then on en-US; `_` is accepted for `-`.
pub fn price_text(minor: i64, currency: &str, locale: &str) -> String {
    let style = style(locale);
    let exponent = money::exponent(currency) as usize;

    // Split the absolute value into integer and fraction digits as text:
    // left-pad to at least exponent + 1 digits, then cut. unsigned_abs
    // keeps i64::MIN exact.
    let digits = format!(
        "{:0>width$}",
        minor.unsigned_abs(),
        width = exponent.saturating_add(1)
    );
    let (whole, fraction) = digits.split_at(digits.len() - exponent);

    let mut number = group_digits(whole, style.group, style.min_grouping_digits);
    if !fraction.is_empty() {
        number.push_str(style.decimal);
        number.push_str(fraction);
    }

    let symbol = symbol(currency);
    let sign = if minor < 0 { "-" } else { "" };
    match style.symbol {
        SymbolAt::After => format!("{sign}{number}{NBSP}{symbol}"),
        SymbolAt::Before { space } => {
            // A letter symbol glued to a digit ("CHF2.49") is hard to read.
            let ends_in_letter = symbol.chars().last().is_some_and(char::is_alphabetic);
            let gap = if space || ends_in_letter { NBSP } else { "" };
            format!("{sign}{symbol}{gap}{number}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_locales_are_languages_with_an_optional_region() {
        for ok in ["de-DE", "de_AT", "fr", "en-US", "es-419", "SV-se"] {
            assert!(is_known_locale(ok), "{ok}");
        }
        for bad in ["xx-YY", "german", "de-DE-x", "", "de-D3"] {
            assert!(!is_known_locale(bad), "{bad}");
        }
    }

    /// Write test expectations with plain spaces for U+00A0 and `_` for
    /// U+202F, which keeps them readable.
    fn t(s: &str) -> String {
        s.replace(' ', NBSP).replace('_', NNBSP)
    }

    #[test]
    fn german() {
        assert_eq!(price_text(249, "EUR", "de-DE"), t("2,49 €"));
        assert_eq!(price_text(123450, "EUR", "de-DE"), t("1.234,50 €"));
        assert_eq!(price_text(123456789, "EUR", "de-DE"), t("1.234.567,89 €"));
        assert_eq!(price_text(249, "EUR", "de-AT"), t("2,49 €"));
        assert_eq!(price_text(123450, "EUR", "de-AT"), t("1 234,50 €"));
        assert_eq!(price_text(249, "CHF", "de-CH"), t("CHF 2.49"));
        assert_eq!(price_text(123450, "CHF", "de-CH"), t("CHF 1’234.50"));
    }

    #[test]
    fn french_uses_a_narrow_no_break_space_between_groups() {
        assert_eq!(price_text(123450, "EUR", "fr-FR"), t("1_234,50 €"));
        assert_eq!(price_text(249, "EUR", "fr-FR"), t("2,49 €"));
        assert_eq!(
            price_text(123450, "EUR", "fr-FR"),
            "1\u{202F}234,50\u{00A0}€"
        );
    }

    #[test]
    fn italian_and_spanish() {
        assert_eq!(price_text(249, "EUR", "it-IT"), t("2,49 €"));
        assert_eq!(price_text(123450, "EUR", "it-IT"), t("1.234,50 €"));
        assert_eq!(price_text(249, "EUR", "es-ES"), t("2,49 €"));
        assert_eq!(price_text(123450, "EUR", "es-ES"), t("1234,50 €"));
        assert_eq!(price_text(1234500, "EUR", "es-ES"), t("12.345,00 €"));
    }

    #[test]
    fn dutch_puts_the_symbol_first_with_a_space() {
        assert_eq!(price_text(249, "EUR", "nl-NL"), t("€ 2,49"));
        assert_eq!(price_text(123450, "EUR", "nl-NL"), t("€ 1.234,50"));
        assert_eq!(price_text(-249, "EUR", "nl-NL"), t("-€ 2,49"));
    }

    #[test]
    fn english() {
        assert_eq!(price_text(123450, "USD", "en-US"), "$1,234.50");
        assert_eq!(price_text(249, "GBP", "en-GB"), "£2.49");
        assert_eq!(price_text(249, "EUR", "en-IE"), "€2.49");
        assert_eq!(price_text(123450, "EUR", "en-IE"), "€1,234.50");
        // A letter symbol is not glued to the number.
        assert_eq!(price_text(249, "CHF", "en-US"), t("CHF 2.49"));
    }

    #[test]
    fn swedish_and_polish() {
        assert_eq!(price_text(2490, "SEK", "sv-SE"), t("24,90 kr"));
        assert_eq!(price_text(123450, "SEK", "sv-SE"), t("1 234,50 kr"));
        assert_eq!(price_text(249, "PLN", "pl-PL"), t("2,49 zł"));
        assert_eq!(price_text(123450, "PLN", "pl-PL"), t("1234,50 zł"));
        assert_eq!(price_text(1234500, "PLN", "pl-PL"), t("12 345,00 zł"));
    }

    #[test]
    fn japanese_yen_has_no_decimals() {
        assert_eq!(price_text(1200, "JPY", "ja-JP"), "¥1,200");
        assert_eq!(price_text(98, "JPY", "ja-JP"), "¥98");
        assert_eq!(price_text(1200, "JPY", "de-DE"), t("1.200 ¥"));
    }

    #[test]
    fn zero_and_small_amounts_keep_their_leading_zeros() {
        assert_eq!(price_text(0, "EUR", "de-DE"), t("0,00 €"));
        assert_eq!(price_text(5, "EUR", "de-DE"), t("0,05 €"));
        assert_eq!(price_text(5, "USD", "en-US"), "$0.05");
        assert_eq!(price_text(0, "JPY", "ja-JP"), "¥0");
        assert_eq!(price_text(5, "KWD", "en-US"), t("KWD 0.005"));
    }

    #[test]
    fn negatives_get_a_leading_minus() {
        assert_eq!(price_text(-249, "EUR", "de-DE"), t("-2,49 €"));
        assert_eq!(price_text(-5, "EUR", "de-DE"), t("-0,05 €"));
        assert_eq!(price_text(-123450, "USD", "en-US"), "-$1,234.50");
        assert_eq!(price_text(-249, "CHF", "de-CH"), t("-CHF 2.49"));
    }

    #[test]
    fn large_values_do_not_overflow() {
        assert_eq!(
            price_text(i64::MAX, "USD", "en-US"),
            "$92,233,720,368,547,758.07"
        );
        assert_eq!(
            price_text(i64::MIN, "USD", "en-US"),
            "-$92,233,720,368,547,758.08"
        );
        assert_eq!(
            price_text(i64::MIN, "JPY", "ja-JP"),
            "-¥9,223,372,036,854,775,808"
        );
    }

    #[test]
    fn three_decimal_currencies() {
        assert_eq!(price_text(1234, "KWD", "en-US"), t("KWD 1.234"));
        assert_eq!(price_text(1234567, "KWD", "de-DE"), t("1.234,567 KWD"));
    }

    #[test]
    fn unknown_currencies_show_their_code() {
        assert_eq!(price_text(249, "XYZ", "de-DE"), t("2,49 XYZ"));
        assert_eq!(price_text(24900, "CZK", "de-DE"), t("249,00 Kč"));
        assert_eq!(price_text(2490, "NOK", "sv-SE"), t("24,90 kr"));
        assert_eq!(price_text(2490, "DKK", "sv-SE"), t("24,90 kr"));
    }

    #[test]
    fn unknown_locales_fall_back_on_language_then_en_us() {
        assert_eq!(price_text(123450, "EUR", "de-LU"), t("1.234,50 €"));
        assert_eq!(price_text(123450, "EUR", "fr-BE"), t("1_234,50 €"));
        assert_eq!(price_text(123450, "USD", "en-AU"), "$1,234.50");
        assert_eq!(price_text(123450, "USD", "xx-YY"), "$1,234.50");
        assert_eq!(price_text(123450, "USD", ""), "$1,234.50");
        assert_eq!(price_text(249, "EUR", "de_DE"), t("2,49 €"));
        assert_eq!(price_text(249, "CHF", "DE-ch"), t("CHF 2.49"));
    }
}
