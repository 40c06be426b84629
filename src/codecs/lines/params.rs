//! The `[lines]` table of a firmware profile, and its checked, compiled
//! form: every regex compiled once and every mistake reported with the
//! profile key at fault before a device is started.

use regex::Regex;
use serde::Deserialize;

fn default_true() -> bool {
    true
}

fn default_currency() -> String {
    "EUR".to_string()
}

fn default_decimal_separator() -> char {
    '.'
}

fn default_receipt_end() -> String {
    "cut".to_string()
}

/// Character set of the printed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    /// UTF-8; invalid sequences become U+FFFD.
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// IBM PC code page 437, the ESC/POS default character table.
    #[serde(rename = "cp437")]
    Cp437,
    /// ISO 8859-1: every byte is the Unicode code point of the same value.
    #[serde(rename = "latin1", alias = "iso-8859-1")]
    Latin1,
}

/// The `[lines]` table of a firmware profile, as written. Turn it into a
/// usable [`CompiledLines`] with [`LinesParams::compile`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinesParams {
    /// Remove ESC/POS printer commands before reading text.
    #[serde(default = "default_true")]
    pub strip_escpos: bool,
    /// Character set of the text (default UTF-8).
    #[serde(default)]
    pub encoding: Encoding,
    /// ISO 4217 code of the amounts on the receipts.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// `.` or `,`, as printed in prices.
    #[serde(default = "default_decimal_separator")]
    pub decimal_separator: char,
    /// Regex of the line that starts a receipt, with a `receipt_id` group.
    pub receipt_start: Option<String>,
    /// Regex of an item line: groups `sku` or `gtin`, `qty`, `unit_price`.
    pub item: String,
    /// Regex of the total line, with a `total` group.
    pub total: Option<String>,
    /// `"cut"`: the ESC/POS paper cut ends a receipt; anything else is a
    /// regex of the line that ends it.
    #[serde(default = "default_receipt_end")]
    pub receipt_end: String,
}

/// How the end of a receipt is recognised.
#[derive(Debug, Clone)]
pub(super) enum ReceiptEnd {
    Cut,
    Line(Regex),
}

/// [`LinesParams`] checked and with its regexes compiled; what a
/// [`LinesDecoder`](super::LinesDecoder) runs on.
#[derive(Debug, Clone)]
pub struct CompiledLines {
    pub(super) strip_escpos: bool,
    pub(super) encoding: Encoding,
    pub(super) currency: String,
    pub(super) decimal_separator: char,
    pub(super) receipt_start: Option<Regex>,
    pub(super) item: Regex,
    pub(super) total: Option<Regex>,
    pub(super) receipt_end: ReceiptEnd,
}

/// Compile `pattern` of profile key `lines.{key}` and check that it has
/// every group in `required`.
fn compile_regex(key: &str, pattern: &str, required: &[&str]) -> Result<Regex, String> {
    let re = Regex::new(pattern).map_err(|e| format!("lines.{key}: bad regex: {e}"))?;
    for group in required {
        if !re.capture_names().flatten().any(|n| n == *group) {
            return Err(format!(
                "lines.{key}: regex needs a named group (?P<{group}>...)"
            ));
        }
    }
    Ok(re)
}

impl LinesParams {
    /// Check the parameters and compile the regexes. Errors name the
    /// profile key at fault, e.g. `lines.item: regex needs a named group
    /// (?P<qty>...)`.
    pub fn compile(&self) -> Result<CompiledLines, String> {
        if !matches!(self.decimal_separator, '.' | ',') {
            return Err(format!(
                "lines.decimal_separator: must be '.' or ',', not {:?}",
                self.decimal_separator
            ));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "lines.currency: {:?} is not an ISO 4217 code such as \"EUR\"",
                self.currency
            ));
        }
        let item = compile_regex("item", &self.item, &["qty", "unit_price"])?;
        if !item
            .capture_names()
            .flatten()
            .any(|n| n == "sku" || n == "gtin")
        {
            return Err(
                "lines.item: regex needs a named group (?P<sku>...) or (?P<gtin>...)".to_string(),
            );
        }
        let receipt_start = match &self.receipt_start {
            Some(p) => Some(compile_regex("receipt_start", p, &["receipt_id"])?),
            None => None,
        };
        let total = match &self.total {
            Some(p) => Some(compile_regex("total", p, &["total"])?),
            None => None,
        };
        let receipt_end = if self.receipt_end == "cut" {
            if !self.strip_escpos {
                return Err(
                    "lines.receipt_end: \"cut\" is an ESC/POS command and needs strip_escpos = true; \
                     give a regex of the last line instead"
                        .to_string(),
                );
            }
            ReceiptEnd::Cut
        } else {
            let re = compile_regex("receipt_end", &self.receipt_end, &[])?;
            if re.is_match("") {
                return Err(
                    "lines.receipt_end: regex matches an empty line, so every blank line would end a receipt"
                        .to_string(),
                );
            }
            ReceiptEnd::Line(re)
        };
        Ok(CompiledLines {
            strip_escpos: self.strip_escpos,
            encoding: self.encoding,
            currency: self.currency.clone(),
            decimal_separator: self.decimal_separator,
            receipt_start,
            item,
            total,
            receipt_end,
        })
    }
}
