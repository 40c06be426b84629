//! Codec `lines` (spec/profiles.md): a tap on a POS receipt printer's
//! serial line, or a POS printing its journal to a serial port.
//!
//! Bytes go through three stages, all of which keep their state between
//! [`LinesDecoder::feed`] calls so input may be split anywhere:
//! 1. ESC/POS stripping ([`Stripper`]): printer commands, barcodes and
//!    images are removed; text bytes, line feeds and cuts remain.
//! 2. Text decoding (`encoding`) and line splitting.
//! 3. Receipt assembly: the profile's regular expressions pick out the
//!    receipt id, item lines and the total; at the receipt's end all of its
//!    lines are emitted together, or the whole receipt is quarantined.

use chrono::{DateTime, Utc};
use regex::{Captures, Regex};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Decoded;
use crate::domain::money::{decimal_to_minor, exponent};
use crate::event::{EventBody, SaleLine, bounds};

/// Most raw bytes kept for one receipt. A receipt growing beyond this has
/// most likely lost its end marker (wrong `receipt_end`, a cut the tap
/// missed); it is quarantined rather than buffered without bound. Generous
/// enough for a receipt that carries a raster logo.
const MAX_RECEIPT_BYTES: usize = 256 * 1024;
/// Most data bytes a single ESC/POS command may declare. A larger length
/// can only come from corrupted input; honouring it would swallow the text
/// after it, so the command is dropped and text resumes instead.
const MAX_COMMAND_DATA: usize = MAX_RECEIPT_BYTES;
/// Longest NUL-terminated barcode (`GS k m d... NUL`) we skip before
/// deciding the NUL was lost.
const MAX_BARCODE_DATA: usize = 255;
/// Longest `ESC D` tab list (32 positions and the NUL).
const MAX_TAB_LIST: usize = 33;

const LF: u8 = 0x0A;
const HT: u8 = 0x09;
const ESC: u8 = 0x1B;
const FS: u8 = 0x1C;
const GS: u8 = 0x1D;

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
enum ReceiptEnd {
    Cut,
    Line(Regex),
}

/// [`LinesParams`] checked and with its regexes compiled; what a
/// [`LinesDecoder`] runs on.
#[derive(Debug, Clone)]
pub struct CompiledLines {
    strip_escpos: bool,
    encoding: Encoding,
    currency: String,
    decimal_separator: char,
    receipt_start: Option<Regex>,
    item: Regex,
    total: Option<Regex>,
    receipt_end: ReceiptEnd,
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

// ---------------------------------------------------------------------------
// ESC/POS stripping

/// What one input byte amounts to once printer commands are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stripped {
    /// Part of a command, or a control character: nothing printed.
    Nothing,
    /// A printable byte, or LF.
    Text(u8),
    /// A paper cut completed with this byte.
    Cut,
}

/// A fixed-size command header whose bytes give the length of the data
/// that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    /// `ESC * m nL nH` bit image.
    EscBitImage,
    /// `GS v 0 m xL xH yL yH` (and `GS Q 0 ...`) raster image.
    Raster,
    /// `ESC (`, `GS (` and `FS (` commands: `fn pL pH` then data.
    Paren,
    /// `GS 8 L p1 p2 p3 p4` graphics data, 32-bit length.
    Graphics32,
    /// `GS * x y` downloaded bit image of `x * y * 8` bytes.
    GsDefineImage,
}

impl Header {
    fn len(self) -> usize {
        match self {
            Header::EscBitImage | Header::Paren => 3,
            Header::Raster => 6,
            Header::Graphics32 => 5,
            Header::GsDefineImage => 2,
        }
    }

    /// Data bytes that follow the complete header `h`.
    fn data_len(self, h: &[u8; 6]) -> usize {
        let word = |lo: u8, hi: u8| usize::from(lo) + usize::from(hi) * 256;
        match self {
            Header::EscBitImage => {
                // Modes 32 and 33 are 24-dot images: 3 bytes per column.
                let per_column = if h[0] >= 32 { 3 } else { 1 };
                word(h[1], h[2]) * per_column
            }
            Header::Raster => word(h[2], h[3]) * word(h[4], h[5]),
            Header::Paren => word(h[1], h[2]),
            Header::Graphics32 => u32::from_le_bytes([h[1], h[2], h[3], h[4]])
                .try_into()
                .unwrap_or(usize::MAX),
            Header::GsDefineImage => usize::from(h[0]) * usize::from(h[1]) * 8,
        }
    }
}

/// Where the stripper is within a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Text,
    /// After ESC, GS or FS: the command byte is next.
    Esc,
    Gs,
    Fs,
    /// Skip this many more argument or data bytes.
    Skip(usize),
    /// `GS V m`: the cut mode byte is next.
    CutMode,
    /// `GS V m n`: the cut happens after this last byte.
    CutArg,
    /// `GS k`: the barcode system byte `m` is next.
    BarcodeSystem,
    /// Skip up to and including a NUL, giving up after this many bytes.
    UntilNul(usize),
    /// `GS k m n` (m 65 and up): the data length byte is next.
    BarcodeLen,
    /// Collecting a length-giving header.
    Header {
        kind: Header,
        got: usize,
        bytes: [u8; 6],
    },
}

/// Byte-level ESC/POS state machine: feeds printable text through and
/// drops printer commands, including the binary data of images and
/// barcodes (which may contain LF or ESC bytes that are not text).
#[derive(Debug, Clone, Default)]
struct Stripper {
    state: State,
}

impl Stripper {
    fn push(&mut self, b: u8) -> Stripped {
        let (next, out) = match self.state {
            State::Text => match b {
                ESC => (State::Esc, Stripped::Nothing),
                GS => (State::Gs, Stripped::Nothing),
                FS => (State::Fs, Stripped::Nothing),
                LF => (State::Text, Stripped::Text(LF)),
                // Columns are often aligned with tabs (ESC D); keep the gap.
                HT => (State::Text, Stripped::Text(b' ')),
                // CR, and every other C0 control, prints nothing.
                0x00..=0x1F => (State::Text, Stripped::Nothing),
                _ => (State::Text, Stripped::Text(b)),
            },
            // ESC i / ESC m: the older full and partial cut commands.
            State::Esc if matches!(b, b'i' | b'm') => (State::Text, Stripped::Cut),
            State::Esc => (after_esc(b), Stripped::Nothing),
            State::Gs => (after_gs(b), Stripped::Nothing),
            State::Fs => (after_fs(b), Stripped::Nothing),
            State::Skip(n) => (skip(n.saturating_sub(1)), Stripped::Nothing),
            State::CutMode => match b {
                // Modes that take one more byte (feed amount / position).
                65 | 66 | 97 | 98 | 103 | 104 => (State::CutArg, Stripped::Nothing),
                _ => (State::Text, Stripped::Cut),
            },
            State::CutArg => (State::Text, Stripped::Cut),
            State::BarcodeSystem => match b {
                0..=6 => (State::UntilNul(MAX_BARCODE_DATA), Stripped::Nothing),
                65..=79 => (State::BarcodeLen, Stripped::Nothing),
                _ => (State::Text, Stripped::Nothing),
            },
            State::UntilNul(left) => {
                if b == 0 || left <= 1 {
                    (State::Text, Stripped::Nothing)
                } else {
                    (State::UntilNul(left - 1), Stripped::Nothing)
                }
            }
            State::BarcodeLen => (skip(usize::from(b)), Stripped::Nothing),
            State::Header {
                kind,
                got,
                mut bytes,
            } => {
                if let Some(slot) = bytes.get_mut(got) {
                    *slot = b;
                }
                let got = got + 1;
                if got < kind.len() {
                    (State::Header { kind, got, bytes }, Stripped::Nothing)
                } else {
                    let n = kind.data_len(&bytes);
                    let next = if n > MAX_COMMAND_DATA {
                        State::Text
                    } else {
                        skip(n)
                    };
                    (next, Stripped::Nothing)
                }
            }
        };
        self.state = next;
        out
    }
}

/// Skip `n` more bytes (none: back to text).
fn skip(n: usize) -> State {
    if n == 0 { State::Text } else { State::Skip(n) }
}

fn header(kind: Header) -> State {
    State::Header {
        kind,
        got: 0,
        bytes: [0; 6],
    }
}

/// The state after `ESC b`. Unknown commands drop ESC and `b`.
fn after_esc(b: u8) -> State {
    match b {
        b'@' | b'2' | b'<' | b'L' | b'S' | 0x0C => State::Text,
        b'E' | b'a' | b'd' | b'!' | b't' | b'-' | b'M' | b'J' | b'3' | b'G' | b'R' | b'V'
        | b'r' | b' ' | b'{' | b'=' | b'%' | b'?' | b'U' | b'e' | b'T' => State::Skip(1),
        b'$' | b'\\' | b'c' => State::Skip(2),
        b'p' => State::Skip(3),
        b'W' => State::Skip(8),
        b'D' => State::UntilNul(MAX_TAB_LIST),
        b'*' => header(Header::EscBitImage),
        b'(' => header(Header::Paren),
        _ => State::Text,
    }
}

/// The state after `GS b`. Unknown commands drop GS and `b`.
fn after_gs(b: u8) -> State {
    match b {
        b'V' => State::CutMode,
        b'k' => State::BarcodeSystem,
        b'v' | b'Q' => header(Header::Raster),
        b'(' => header(Header::Paren),
        b'8' => header(Header::Graphics32),
        b'*' => header(Header::GsDefineImage),
        b'!' | b'h' | b'w' | b'f' | b'H' | b'B' | b'b' | b'a' | b'r' | b'I' | b'/' | b'E'
        | b'T' => State::Skip(1),
        b'L' | b'W' | b'P' | b'$' | b'\\' => State::Skip(2),
        b'^' => State::Skip(3),
        b'g' => State::Skip(4),
        _ => State::Text,
    }
}

/// The state after `FS b` (kanji and NV image commands). Unknown commands
/// drop FS and `b`.
fn after_fs(b: u8) -> State {
    match b {
        b'(' => header(Header::Paren),
        b'!' | b'-' | b'C' | b'W' => State::Skip(1),
        b'p' | b'S' => State::Skip(2),
        _ => State::Text,
    }
}

// ---------------------------------------------------------------------------
// Text decoding

/// Code page 437, bytes 0x80..=0xFF.
const CP437_HIGH: [char; 128] = [
    'Ç', 'ü', 'é', 'â', 'ä', 'à', 'å', 'ç', 'ê', 'ë', 'è', 'ï', 'î', 'ì', 'Ä', 'Å', //
    'É', 'æ', 'Æ', 'ô', 'ö', 'ò', 'û', 'ù', 'ÿ', 'Ö', 'Ü', '¢', '£', '¥', '₧', 'ƒ', //
    'á', 'í', 'ó', 'ú', 'ñ', 'Ñ', 'ª', 'º', '¿', '⌐', '¬', '½', '¼', '¡', '«', '»', //
    '░', '▒', '▓', '│', '┤', '╡', '╢', '╖', '╕', '╣', '║', '╗', '╝', '╜', '╛', '┐', //
    '└', '┴', '┬', '├', '─', '┼', '╞', '╟', '╚', '╔', '╩', '╦', '╠', '═', '╬', '╧', //
    '╨', '╤', '╥', '╙', '╘', '╒', '╓', '╫', '╪', '┘', '┌', '█', '▄', '▌', '▐', '▀', //
    'α', 'ß', 'Γ', 'π', 'Σ', 'σ', 'µ', 'τ', 'Φ', 'Θ', 'Ω', 'δ', '∞', 'φ', 'ε', '∩', //
    '≡', '±', '≥', '≤', '⌠', '⌡', '÷', '≈', '°', '∙', '·', '√', 'ⁿ', '²', '■', '\u{A0}',
];

/// Decode one line of text. Per line is safe for UTF-8 too: LF never
/// occurs inside a multi-byte sequence.
fn decode(bytes: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
        Encoding::Cp437 => bytes
            .iter()
            .map(|&b| match b.checked_sub(0x80) {
                None => char::from(b),
                Some(i) => CP437_HIGH
                    .get(usize::from(i))
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Receipts

/// One parsed item line.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    sku: String,
    gtin: Option<String>,
    /// Negative for a return.
    qty: i64,
    unit_price_minor: i64,
}

/// The receipt being read.
#[derive(Debug, Default)]
struct Receipt {
    /// Every byte since the previous receipt ended, for quarantine.
    raw: Vec<u8>,
    /// Length of `raw` when the current line began.
    line_start: usize,
    /// Decoded lines, each trimmed and followed by `\n`.
    text: String,
    id: Option<String>,
    items: Vec<Item>,
    /// Every printed total (normally one).
    totals: Vec<i64>,
    /// Item or total lines that matched but could not be read.
    errors: Vec<String>,
    /// Part of this receipt was already quarantined for being too long;
    /// the rest is skipped up to its end.
    too_long: bool,
}

impl Receipt {
    fn has_content(&self) -> bool {
        !self.items.is_empty() || !self.errors.is_empty()
    }

    /// The id for messages before the receipt is finished.
    fn label(&self) -> &str {
        self.id.as_deref().unwrap_or("(no id)")
    }
}

/// Stream decoder for one POS device: printer bytes in, one
/// [`Decoded::Events`] (or one [`Decoded::Bad`]) per finished receipt out.
#[derive(Debug)]
pub struct LinesDecoder {
    params: CompiledLines,
    device_id: String,
    stripper: Stripper,
    /// Text bytes of the current, unfinished line.
    line: Vec<u8>,
    receipt: Receipt,
}

impl LinesDecoder {
    /// A decoder for the POS device `device_id`, which becomes the `pos`
    /// of every sale line.
    pub fn new(params: CompiledLines, device_id: &str) -> Self {
        LinesDecoder {
            params,
            device_id: device_id.to_string(),
            stripper: Stripper::default(),
            line: Vec::new(),
            receipt: Receipt::default(),
        }
    }

    /// Decode the next bytes from the device. Receipts finished by these
    /// bytes are returned, each as one all-or-nothing [`Decoded::Events`]
    /// stamped `now`, or as one [`Decoded::Bad`] with the receipt's raw
    /// bytes when it cannot be applied whole.
    pub fn feed(&mut self, bytes: &[u8], now: DateTime<Utc>) -> Vec<Decoded> {
        let mut out = Vec::new();
        for &b in bytes {
            self.receipt.raw.push(b);
            let stripped = if self.params.strip_escpos {
                self.stripper.push(b)
            } else {
                Stripped::Text(b)
            };
            match stripped {
                Stripped::Nothing => {}
                Stripped::Text(LF) => self.end_line(now, &mut out),
                Stripped::Text(c) => self.line.push(c),
                Stripped::Cut => {
                    // The printer prints what it has buffered before cutting.
                    if !self.line.is_empty() {
                        self.end_line(now, &mut out);
                    }
                    if matches!(self.params.receipt_end, ReceiptEnd::Cut) {
                        self.end_receipt(now, &mut out);
                    }
                }
            }
            if self.receipt.raw.len() >= MAX_RECEIPT_BYTES {
                self.quarantine_too_long(&mut out);
            }
        }
        out
    }

    /// End of stream (a replayed file ends, the device is removed): read
    /// the last unterminated line, then quarantine a receipt that has items
    /// but never ended, since it may be incomplete. Not for a serial
    /// reconnect, after which the same receipt may continue.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Decoded> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(now, &mut out);
        }
        self.stripper = Stripper::default();
        let r = std::mem::take(&mut self.receipt);
        if r.too_long {
            if !r.raw.is_empty() {
                out.push(too_long_tail(r.raw));
            }
        } else if r.has_content() {
            out.push(Decoded::Bad {
                reason: format!(
                    "receipt {}: the stream ended before the receipt did; not applied",
                    r.label()
                ),
                raw: r.raw,
            });
        }
        out
    }

    /// A complete text line (without its LF) is in `self.line`.
    fn end_line(&mut self, now: DateTime<Utc>, out: &mut Vec<Decoded>) {
        let bytes = std::mem::take(&mut self.line);
        let decoded = decode(&bytes, self.params.encoding);
        // Printers pad lines to the paper width and centre with spaces, so
        // lines are matched without surrounding whitespace (and without a
        // CR when the input is not stripped).
        let line = decoded.trim();

        let start_id = self
            .params
            .receipt_start
            .as_ref()
            .and_then(|re| re.captures(line))
            .and_then(|c| c.name("receipt_id").map(|m| m.as_str().to_string()))
            .filter(|id| !id.is_empty());
        if let Some(id) = start_id {
            self.start_receipt(id, out);
        }

        if !self.receipt.too_long {
            self.receipt.text.push_str(line);
            self.receipt.text.push('\n');
            if let Some(c) = self.params.item.captures(line) {
                match self.parse_item(&c) {
                    Ok(item) => self.receipt.items.push(item),
                    Err(e) => self.receipt.errors.push(format!("item line {line:?}: {e}")),
                }
            } else if let Some(c) = self.params.total.as_ref().and_then(|re| re.captures(line)) {
                let text = c.name("total").map_or("", |m| m.as_str());
                match self.minor(text) {
                    Ok(total) => self.receipt.totals.push(total),
                    Err(e) => self
                        .receipt
                        .errors
                        .push(format!("total line {line:?}: {e}")),
                }
            }
        }
        self.receipt.line_start = self.receipt.raw.len();

        let is_end = match &self.params.receipt_end {
            ReceiptEnd::Line(re) => re.is_match(line),
            ReceiptEnd::Cut => false,
        };
        if is_end {
            self.end_receipt(now, out);
        }
    }

    /// A `receipt_start` line with `id` was read.
    fn start_receipt(&mut self, id: String, out: &mut Vec<Decoded>) {
        let r = &mut self.receipt;
        if !r.too_long && r.id.as_deref() == Some(id.as_str()) {
            // The header repeated (some layouts print the number twice).
            return;
        }
        // This line's bytes belong to the new receipt, the ones before it
        // to whatever came before.
        let split = r.line_start.min(r.raw.len());
        let line_raw = r.raw.split_off(split);
        let old = std::mem::take(r);
        if old.too_long {
            if !old.raw.is_empty() {
                out.push(too_long_tail(old.raw));
            }
            self.receipt.raw = line_raw;
        } else if old.has_content() {
            // A new receipt began before the old one ended: the old one may
            // be incomplete (voided, end marker lost), so none of it is
            // applied.
            out.push(Decoded::Bad {
                reason: format!(
                    "receipt {}: receipt {id} started before it ended; not applied",
                    old.label()
                ),
                raw: old.raw,
            });
            self.receipt.raw = line_raw;
        } else {
            // Only header lines so far: they are part of the new receipt.
            let mut raw = old.raw;
            raw.extend_from_slice(&line_raw);
            self.receipt.raw = raw;
        }
        self.receipt.id = Some(id);
    }

    /// The receipt ended (cut or `receipt_end` line): emit it or
    /// quarantine it, and start the next one.
    fn end_receipt(&mut self, now: DateTime<Utc>, out: &mut Vec<Decoded>) {
        let r = std::mem::take(&mut self.receipt);
        if r.too_long {
            if !r.raw.is_empty() {
                out.push(too_long_tail(r.raw));
            }
            return;
        }
        // Reports, test prints, empty cuts: not sales.
        if !r.has_content() {
            return;
        }
        let id = match &r.id {
            Some(id) => id.clone(),
            None => hashed_receipt_id(&self.device_id, now, &r.text),
        };
        match self.receipt_events(&id, &r, now) {
            Ok(events) => out.push(Decoded::Events(events)),
            Err(reason) => out.push(Decoded::Bad {
                reason: format!("receipt {id}: {reason}"),
                raw: r.raw,
            }),
        }
    }

    /// All events of a finished receipt, or why it cannot be applied.
    fn receipt_events(
        &self,
        id: &str,
        r: &Receipt,
        now: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, EventBody)>, String> {
        if !r.errors.is_empty() {
            return Err(r.errors.join("; "));
        }
        let sum = r
            .items
            .iter()
            .try_fold(0i64, |acc, it| {
                it.qty
                    .checked_mul(it.unit_price_minor)
                    .and_then(|v| acc.checked_add(v))
            })
            .ok_or("the items' amounts overflow")?;
        for total in &r.totals {
            if *total != sum {
                return Err(format!(
                    "items add up to {} but the printed total is {}",
                    self.format_minor(sum),
                    self.format_minor(*total)
                ));
            }
        }
        let mut events = Vec::with_capacity(r.items.len());
        for (i, it) in r.items.iter().enumerate() {
            let line = SaleLine {
                receipt_id: id.to_string(),
                line: u32::try_from(i + 1).map_err(|_| "too many item lines")?,
                sku: it.sku.clone(),
                gtin: it.gtin.clone(),
                qty: it.qty.abs(),
                unit_price_minor: it.unit_price_minor,
                currency: self.params.currency.clone(),
                pos: self.device_id.clone(),
                member_hash: None,
            };
            let body = if it.qty < 0 {
                EventBody::Return(line)
            } else {
                EventBody::Sale(line)
            };
            events.push((now, body));
        }
        Ok(events)
    }

    /// Read an item line's groups.
    fn parse_item(&self, c: &Captures) -> Result<Item, String> {
        let group = |name: &str| {
            c.name(name)
                .map(|m| m.as_str().trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let sku = group("sku");
        let gtin = group("gtin");
        if sku.is_none() && gtin.is_none() {
            return Err("neither sku nor gtin matched".to_string());
        }
        let qty_text = group("qty").unwrap_or_default();
        let qty: i64 = qty_text
            .parse()
            .map_err(|_| format!("quantity {qty_text:?} is not a whole number"))?;
        let price_text = group("unit_price").unwrap_or_default();
        let price = self.minor(&price_text)?;
        // A POS may print a return as a negative price instead of a
        // negative quantity; the line's sign is what matters.
        let (qty, price) = if price < 0 {
            (qty.checked_neg(), price.checked_neg())
        } else {
            (Some(qty), Some(price))
        };
        let (Some(qty), Some(unit_price_minor)) = (qty, price) else {
            return Err("amount too large".to_string());
        };
        if qty == 0 || qty.checked_abs().is_none() {
            return Err(format!("quantity {qty_text:?} is not usable"));
        }
        bounds::check_qty("quantity", qty)?;
        bounds::check_price("unit price", unit_price_minor)?;
        Ok(Item {
            // With only a GTIN printed, the SKU is left for the catalog
            // lookup downstream.
            sku: sku.unwrap_or_default(),
            gtin,
            qty,
            unit_price_minor,
        })
    }

    /// Decimal text in the profile's currency to minor units.
    fn minor(&self, text: &str) -> Result<i64, String> {
        decimal_to_minor(text, &self.params.currency, self.params.decimal_separator)
            .map_err(|e| e.to_string())
    }

    /// Minor units back to decimal text, for messages.
    fn format_minor(&self, v: i64) -> String {
        let exp = exponent(&self.params.currency);
        let sign = if v < 0 { "-" } else { "" };
        let abs = v.unsigned_abs();
        let Some(unit) = 10u64.checked_pow(exp).filter(|_| exp > 0) else {
            return v.to_string();
        };
        format!(
            "{sign}{}{}{:0width$}",
            abs / unit,
            self.params.decimal_separator,
            abs % unit,
            width = exp as usize
        )
    }

    /// The current receipt reached [`MAX_RECEIPT_BYTES`]: quarantine what
    /// we have and skip the rest of it.
    fn quarantine_too_long(&mut self, out: &mut Vec<Decoded>) {
        let r = &mut self.receipt;
        let reason = if r.too_long {
            format!(
                "still no end of the receipt after another {MAX_RECEIPT_BYTES} bytes; not applied"
            )
        } else {
            format!(
                "receipt {}: longer than {MAX_RECEIPT_BYTES} bytes without an end (does receipt_end match?); not applied",
                r.label()
            )
        };
        out.push(Decoded::Bad {
            reason,
            raw: std::mem::take(&mut r.raw),
        });
        *r = Receipt {
            too_long: true,
            ..Receipt::default()
        };
        self.line.clear();
    }
}

/// The last part of a receipt that was too long, up to its end.
fn too_long_tail(raw: Vec<u8>) -> Decoded {
    Decoded::Bad {
        reason: "end of a receipt that was too long; not applied".to_string(),
        raw,
    }
}

/// Id of a receipt that printed no `receipt_start` line: `H-` and the
/// first 16 hex digits of SHA-256 over the device id, the UTC date of
/// `now` (YYYY-MM-DD) and the receipt's decoded text (not its raw bytes, so
/// that printer commands around the same text do not matter).
///
/// A replayed line stream therefore maps to the same ids and does not
/// count twice (the journal keys sales by receipt id and line). The date
/// keeps the same basket bought again on another day from colliding; the
/// same basket twice on one day does collide unless the receipt prints
/// something unique (time, sequence number), and a replay on a later day
/// is not recognised.
fn hashed_receipt_id(device_id: &str, now: DateTime<Utc>, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(device_id.as_bytes());
    h.update(b"\n");
    h.update(now.format("%Y-%m-%d").to_string().as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    let digest = hex::encode(h.finalize());
    format!("H-{}", digest.get(..16).unwrap_or(&digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A copy of `samples/escpos-receipt.bin` (shared device samples), kept
    /// inline so the tests do not depend on a path outside the repository.
    const SAMPLE: &[u8] = b"\x1bE\x01\x1ba\x01\x1bt\x00STORE 0042\n\x1bE\x00\x1ba\x00\
RECEIPT 000123  POS 1\n\
SKU-1001 Oat milk 1L      2 x 2.49   4.98\n\
SKU-1002 Rye bread        1 x 3.10   3.10\n\
TOTAL 8.08\n\
\x1ba\x01\x1dh@\x1dw\x03\x1df\x00\x1dH\x02\x1dk\x024006381333931\x00\x1bd\x06\x1dV\x00";

    /// The `[lines]` table of the spec, verbatim.
    const SPEC_PROFILE: &str = r#"
[lines]
strip_escpos = true
encoding = "utf-8"
currency = "EUR"
decimal_separator = "."
receipt_start = '^RECEIPT\s+(?P<receipt_id>\S+)'
item = '^(?P<sku>[A-Z0-9-]+)\s+.*?\s(?P<qty>-?\d+)\s*[xX]\s*(?P<unit_price>\d+[.,]\d{2})\s+-?\d+[.,]\d{2}$'
total = '^TOTAL\s+(?P<total>-?\d+[.,]\d{2})$'
receipt_end = "cut"            # "cut" (GS V), or a regex
"#;

    #[derive(Deserialize)]
    struct Profile {
        lines: LinesParams,
    }

    fn spec_params() -> LinesParams {
        toml::from_str::<Profile>(SPEC_PROFILE).unwrap().lines
    }

    fn decoder() -> LinesDecoder {
        LinesDecoder::new(spec_params().compile().unwrap(), "pos-1")
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 15, 30).unwrap()
    }

    fn sale(receipt_id: &str, line: u32, sku: &str, qty: i64, price: i64) -> SaleLine {
        SaleLine {
            receipt_id: receipt_id.to_string(),
            line,
            sku: sku.to_string(),
            gtin: None,
            qty,
            unit_price_minor: price,
            currency: "EUR".to_string(),
            pos: "pos-1".to_string(),
            member_hash: None,
        }
    }

    fn sample_events() -> Vec<Decoded> {
        vec![Decoded::Events(vec![
            (
                now(),
                EventBody::Sale(sale("000123", 1, "SKU-1001", 2, 249)),
            ),
            (
                now(),
                EventBody::Sale(sale("000123", 2, "SKU-1002", 1, 310)),
            ),
        ])]
    }

    /// Feed `input` through the stripper alone: the text and the number
    /// of cuts.
    fn strip(input: &[u8]) -> (String, usize) {
        let mut s = Stripper::default();
        let mut text = Vec::new();
        let mut cuts = 0;
        for &b in input {
            match s.push(b) {
                Stripped::Text(c) => text.push(c),
                Stripped::Cut => cuts += 1,
                Stripped::Nothing => {}
            }
        }
        (String::from_utf8_lossy(&text).into_owned(), cuts)
    }

    /// Every Bad in `out`.
    fn bads(out: &[Decoded]) -> Vec<(String, Vec<u8>)> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Bad { reason, raw } => Some((reason.clone(), raw.clone())),
                _ => None,
            })
            .collect()
    }

    /// The receipt ids of every Events in `out`, one per receipt.
    fn receipt_ids(out: &[Decoded]) -> Vec<String> {
        out.iter()
            .filter_map(|d| match d {
                Decoded::Events(ev) => match ev.first().map(|(_, b)| b) {
                    Some(EventBody::Sale(l)) | Some(EventBody::Return(l)) => {
                        Some(l.receipt_id.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// A receipt in the sample's layout with the given item lines and
    /// total, ended by a cut.
    fn receipt(id: &str, items: &[&str], total: &str) -> Vec<u8> {
        let mut out = format!("\x1b@RECEIPT {id}\n").into_bytes();
        for item in items {
            out.extend_from_slice(item.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(format!("TOTAL {total}\n\x1bd\x03\x1dV\x42\x0a").as_bytes());
        out
    }

    #[test]
    fn inline_sample_matches_the_shared_file_when_present() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/samples/escpos-receipt.bin"
        );
        if let Ok(bytes) = std::fs::read(path) {
            assert_eq!(bytes, SAMPLE);
        }
    }

    #[test]
    fn spec_profile_parses_and_compiles() {
        let p = spec_params();
        assert!(p.strip_escpos);
        assert_eq!(p.encoding, Encoding::Utf8);
        assert_eq!(p.decimal_separator, '.');
        assert_eq!(p.receipt_end, "cut");
        assert!(p.compile().is_ok());
    }

    #[test]
    fn params_defaults_and_unknown_keys() {
        let p: LinesParams =
            toml::from_str(r#"item = '^(?P<sku>\S+)\s+(?P<qty>\d+)\s+(?P<unit_price>\d+\.\d\d)$'"#)
                .unwrap();
        assert!(p.strip_escpos);
        assert_eq!(p.encoding, Encoding::Utf8);
        assert_eq!(p.currency, "EUR");
        assert_eq!(p.decimal_separator, '.');
        assert_eq!(p.receipt_start, None);
        assert_eq!(p.total, None);
        assert_eq!(p.receipt_end, "cut");
        assert!(p.compile().is_ok());

        let p: LinesParams = toml::from_str(
            "item = 'x'\nencoding = \"cp437\"\ndecimal_separator = \",\"\ncurrency = \"DKK\"",
        )
        .unwrap();
        assert_eq!(p.encoding, Encoding::Cp437);
        assert_eq!(p.decimal_separator, ',');
        assert!(toml::from_str::<LinesParams>("item = 'x'\nencoding = \"latin1\"").is_ok());
        assert!(toml::from_str::<LinesParams>("item = 'x'\nencoding = \"ebcdic\"").is_err());
        assert!(toml::from_str::<LinesParams>("item = 'x'\nitems = 'y'").is_err());
        // `item` is required.
        assert!(toml::from_str::<LinesParams>("total = 'x'").is_err());
    }

    #[test]
    fn compile_errors_name_the_key() {
        let base = spec_params();
        let err = |p: LinesParams| p.compile().unwrap_err();

        let mut p = base.clone();
        p.item = "(".to_string();
        assert!(err(p).starts_with("lines.item: bad regex"));

        let mut p = base.clone();
        p.item = r"^(?P<sku>\S+) (?P<qty>\d+)$".to_string();
        assert!(err(p).contains("lines.item: regex needs a named group (?P<unit_price>"));

        let mut p = base.clone();
        p.item = r"^(?P<name>\S+) (?P<qty>\d+) (?P<unit_price>\S+)$".to_string();
        assert!(err(p).contains("(?P<sku>...) or (?P<gtin>...)"));

        let mut p = base.clone();
        p.receipt_start = Some(r"^RECEIPT (?P<id>\S+)".to_string());
        assert!(err(p).starts_with("lines.receipt_start:"));

        let mut p = base.clone();
        p.total = Some(r"^TOTAL (\S+)".to_string());
        assert!(err(p).starts_with("lines.total:"));

        let mut p = base.clone();
        p.receipt_end = "[".to_string();
        assert!(err(p).starts_with("lines.receipt_end: bad regex"));

        let mut p = base.clone();
        p.receipt_end = ".*".to_string();
        assert!(err(p).contains("empty line"));

        let mut p = base.clone();
        p.strip_escpos = false;
        assert!(err(p).starts_with("lines.receipt_end:"));

        let mut p = base.clone();
        p.decimal_separator = ';';
        assert!(err(p).starts_with("lines.decimal_separator:"));

        let mut p = base;
        p.currency = "euro".to_string();
        assert!(err(p).starts_with("lines.currency:"));
    }

    #[test]
    fn stripper_reduces_the_sample_to_text_and_one_cut() {
        let (text, cuts) = strip(SAMPLE);
        assert_eq!(
            text,
            "STORE 0042\nRECEIPT 000123  POS 1\n\
             SKU-1001 Oat milk 1L      2 x 2.49   4.98\n\
             SKU-1002 Rye bread        1 x 3.10   3.10\nTOTAL 8.08\n"
        );
        assert_eq!(cuts, 1);
    }

    #[test]
    fn stripper_skips_arguments_that_look_like_text_or_newlines() {
        // ESC d 10 feeds ten lines: its argument is LF but not a line end.
        // GS V 66 10: partial cut after feeding, the last byte is LF too.
        // ESC D with tab stops 10 and 20; CR dropped; HT becomes a space.
        let input = b"A\x1bd\x0aB\x1bD\x0a\x14\x00C\tD\r\n\x1dV\x42\x0aE\n";
        let (text, cuts) = strip(input);
        assert_eq!(text, "ABC D\nE\n");
        assert_eq!(cuts, 1);
        // Unknown ESC / GS sequences drop two bytes.
        assert_eq!(strip(b"\x1by\x1dyok\n").0, "ok\n");
        // Older ESC i / ESC m cuts count as cuts.
        assert_eq!(strip(b"x\x1bi\x1bm").1, 2);
        // GS V 0 / 1 / 48 / 49 cut at once; the next byte is text.
        assert_eq!(strip(b"\x1dV\x31Z"), ("Z".to_string(), 1));
    }

    /// GS v 0 raster image whose data is full of LF and ESC bytes.
    fn raster() -> Vec<u8> {
        // 3 bytes wide, 4 rows: 12 data bytes.
        let mut out = vec![GS, b'v', b'0', 0, 3, 0, 4, 0];
        out.extend_from_slice(&[LF, ESC, b'@', LF, GS, b'V', 0, LF, b'T', b'O', LF, 0xFF]);
        out
    }

    /// Barcodes in both forms, a QR code, and an ESC * bit image, all with
    /// data that contains LF.
    fn barcodes() -> Vec<u8> {
        let mut out = b"\x1dk\x024006381333931\x00".to_vec();
        // CODE128 (m = 73) with n = 6 data bytes, including LF and ESC.
        out.extend_from_slice(&[GS, b'k', 73, 6, b'{', b'B', LF, ESC, b'd', LF]);
        // QR code store: GS ( k pL pH cn fn m d...
        out.extend_from_slice(&[GS, b'(', b'k', 7, 0, 49, 80, 48, LF, b'Q', LF, b'R']);
        // ESC * 33 nL nH: 24-dot image of 2 columns = 6 bytes.
        out.extend_from_slice(&[ESC, b'*', 33, 2, 0, LF, LF, LF, ESC, GS, 0]);
        out
    }

    #[test]
    fn stripper_skips_image_and_barcode_data() {
        let mut input = b"before\n".to_vec();
        input.extend(raster());
        input.extend(barcodes());
        input.extend_from_slice(b"after\n");
        assert_eq!(strip(&input), ("before\nafter\n".to_string(), 0));
    }

    #[test]
    fn stripper_refuses_absurd_lengths() {
        // A raster image claiming 65535 x 65535 bytes is corruption: text
        // resumes right after the header instead of being swallowed.
        let input = [GS, b'v', b'0', 0, 0xFF, 0xFF, 0xFF, 0xFF, b'o', b'k'];
        assert_eq!(strip(&input).0, "ok");
        // A barcode whose NUL was lost is given up after 255 bytes.
        let mut input = vec![GS, b'k', 4];
        input.extend(std::iter::repeat_n(b'A', 300));
        assert_eq!(strip(&input).0, "A".repeat(45));
    }

    #[test]
    fn sample_fed_whole() {
        let mut d = decoder();
        assert_eq!(d.feed(SAMPLE, now()), sample_events());
        assert!(d.flush(now()).is_empty());
    }

    #[test]
    fn sample_fed_byte_by_byte() {
        let mut d = decoder();
        let mut out = Vec::new();
        for b in SAMPLE {
            out.extend(d.feed(&[*b], now()));
        }
        assert_eq!(out, sample_events());
    }

    #[test]
    fn sample_split_at_every_offset() {
        for cut in 0..=SAMPLE.len() {
            let mut d = decoder();
            let mut out = d.feed(&SAMPLE[..cut], now());
            out.extend(d.feed(&SAMPLE[cut..], now()));
            assert_eq!(out, sample_events(), "cut at {cut}");
        }
    }

    #[test]
    fn receipt_with_raster_image_and_barcodes() {
        let mut input = b"\x1b@\x1ba\x01".to_vec();
        input.extend(raster());
        input.extend_from_slice(b"\x1ba\x00RECEIPT 000123\n");
        input.extend_from_slice(b"SKU-1001 Oat milk 1L      2 x 2.49   4.98\n");
        input.extend(raster());
        input.extend_from_slice(b"SKU-1002 Rye bread        1 x 3.10   3.10\n");
        input.extend_from_slice(b"TOTAL 8.08\n");
        input.extend(barcodes());
        input.extend_from_slice(b"\x1dV\x41\x03");
        for cut in [0, 5, 9, 20, input.len() / 2, input.len() - 2, input.len()] {
            let mut d = decoder();
            let mut out = d.feed(&input[..cut], now());
            out.extend(d.feed(&input[cut..], now()));
            assert_eq!(out, sample_events(), "cut at {cut}");
        }
    }

    #[test]
    fn totals_that_do_not_add_up_quarantine_the_receipt() {
        let input = receipt(
            "R-7",
            &[
                "SKU-1001 Oat milk 1L      2 x 2.49   4.98",
                "SKU-1002 Rye bread        1 x 3.09   3.09",
            ],
            "8.08",
        );
        let out = decoder().feed(&input, now());
        assert_eq!(
            out,
            vec![Decoded::Bad {
                reason: "receipt R-7: items add up to 8.07 but the printed total is 8.08"
                    .to_string(),
                raw: input,
            }]
        );
    }

    #[test]
    fn a_bad_price_quarantines_the_whole_receipt() {
        // Comma where the profile says '.': not silently misread.
        let input = receipt(
            "R-8",
            &[
                "SKU-1001 Oat milk 1L      2 x 2.49   4.98",
                "SKU-1002 Rye bread        1 x 3,10   3.10",
            ],
            "8.08",
        );
        let out = decoder().feed(&input, now());
        let b = bads(&out);
        assert_eq!(out.len(), 1);
        assert!(b[0].0.starts_with("receipt R-8: item line"), "{}", b[0].0);
        assert!(b[0].0.contains("3,10"), "{}", b[0].0);
        assert_eq!(b[0].1, input);
    }

    #[test]
    fn return_lines() {
        let input = receipt(
            "R-9",
            &[
                "SKU-1001 Oat milk 1L     -1 x 2.49  -2.49",
                "SKU-1002 Rye bread        1 x 3.10   3.10",
            ],
            "0.61",
        );
        let out = decoder().feed(&input, now());
        assert_eq!(
            out,
            vec![Decoded::Events(vec![
                (now(), EventBody::Return(sale("R-9", 1, "SKU-1001", 1, 249))),
                (now(), EventBody::Sale(sale("R-9", 2, "SKU-1002", 1, 310))),
            ])]
        );
    }

    #[test]
    fn negative_unit_price_is_a_return_too() {
        let mut p = spec_params();
        p.item = r"^(?P<sku>\S+)\s+(?P<qty>-?\d+)\s+(?P<unit_price>-?\d+\.\d\d)$".to_string();
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        let out = d.feed(
            b"RECEIPT R-10\nSKU-1 2 -1.50\nTOTAL -3.00\n\x1dV\x00",
            now(),
        );
        assert_eq!(
            out,
            vec![Decoded::Events(vec![(
                now(),
                EventBody::Return(sale("R-10", 1, "SKU-1", 2, 150))
            )])]
        );
    }

    #[test]
    fn zero_quantity_is_refused() {
        let input = receipt("R-11", &["SKU-1 Thing 0 x 1.00   0.00"], "0.00");
        let b = bads(&decoder().feed(&input, now()));
        assert_eq!(b.len(), 1);
        assert!(b[0].0.contains("not usable"), "{}", b[0].0);
    }

    #[test]
    fn without_receipt_start_the_id_is_a_deterministic_hash() {
        let mut p = spec_params();
        p.receipt_start = None;
        let compiled = p.compile().unwrap();
        let run = |device: &str, at: DateTime<Utc>| {
            let mut d = LinesDecoder::new(compiled.clone(), device);
            receipt_ids(&d.feed(SAMPLE, at))
        };
        let first = run("pos-1", now());
        assert_eq!(first.len(), 1);
        assert!(first[0].starts_with("H-"));
        assert_eq!(first[0].len(), 18);
        // The same stream replayed the same day: same id.
        assert_eq!(run("pos-1", now() + chrono::Duration::hours(3)), first);
        // Another till, or another day: another id.
        assert_ne!(run("pos-2", now()), first);
        assert_ne!(run("pos-1", now() + chrono::Duration::days(1)), first);
        // Printer commands around the same text do not change it.
        let (text, _) = strip(SAMPLE);
        let mut d = LinesDecoder::new(compiled.clone(), "pos-1");
        let plain = [text.as_bytes(), b"\x1dV\x00"].concat();
        assert_eq!(receipt_ids(&d.feed(&plain, now())), first);
        // The receipt text itself matters.
        let mut d = LinesDecoder::new(compiled, "pos-1");
        let other = [b"STORE 0043\n".as_slice(), &SAMPLE[20..]].concat();
        assert_ne!(receipt_ids(&d.feed(&other, now())), first);
    }

    #[test]
    fn two_receipts_back_to_back() {
        let first = receipt(
            "R-1",
            &["SKU-1001 Oat milk 1L      2 x 2.49   4.98"],
            "4.98",
        );
        let second = receipt(
            "R-2",
            &["SKU-1002 Rye bread        1 x 3.10   3.10"],
            "3.10",
        );
        let input = [first.clone(), second.clone()].concat();
        let out = decoder().feed(&input, now());
        assert_eq!(
            out,
            vec![
                Decoded::Events(vec![(
                    now(),
                    EventBody::Sale(sale("R-1", 1, "SKU-1001", 2, 249))
                )]),
                Decoded::Events(vec![(
                    now(),
                    EventBody::Sale(sale("R-2", 1, "SKU-1002", 1, 310))
                )]),
            ]
        );
        // The raw bytes are split at the cut: a bad second receipt carries
        // exactly its own bytes.
        let bad_second = receipt(
            "R-2",
            &["SKU-1002 Rye bread        1 x 3.10   3.10"],
            "3.11",
        );
        let out = decoder().feed(&[first, bad_second.clone()].concat(), now());
        assert_eq!(
            bads(&out),
            vec![(
                "receipt R-2: items add up to 3.10 but the printed total is 3.11".to_string(),
                bad_second
            )]
        );
    }

    #[test]
    fn receipts_without_items_produce_nothing() {
        let mut d = decoder();
        assert!(
            d.feed(b"\x1b@X-REPORT\nCASH 120.00\n\x1dV\x00", now())
                .is_empty()
        );
        assert!(d.feed(b"\x1dV\x00\x1dV\x01", now()).is_empty());
        assert!(
            d.feed(b"RECEIPT R-5\nTOTAL 0.00\n\x1dV\x00", now())
                .is_empty()
        );
        assert!(d.flush(now()).is_empty());
    }

    #[test]
    fn a_new_receipt_before_the_old_one_ended_quarantines_the_old_one() {
        let unfinished = b"RECEIPT R-1\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n".to_vec();
        let next = receipt(
            "R-2",
            &["SKU-1002 Rye bread        1 x 3.10   3.10"],
            "3.10",
        );
        let out = decoder().feed(&[unfinished.clone(), next].concat(), now());
        assert_eq!(out.len(), 2);
        let b = bads(&out);
        assert_eq!(b[0].1, unfinished);
        assert!(
            b[0].0.contains("R-1") && b[0].0.contains("R-2"),
            "{}",
            b[0].0
        );
        assert_eq!(receipt_ids(&out), vec!["R-2"]);
    }

    #[test]
    fn a_repeated_receipt_header_is_not_a_new_receipt() {
        let mut input = b"RECEIPT R-3\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n".to_vec();
        input.extend_from_slice(b"TOTAL 4.98\nRECEIPT R-3\n\x1dV\x00");
        let out = decoder().feed(&input, now());
        assert_eq!(receipt_ids(&out), vec!["R-3"]);
    }

    #[test]
    fn plain_text_journal_with_an_end_line_and_crlf() {
        let mut p = spec_params();
        p.strip_escpos = false;
        p.receipt_end = "^=+$".to_string();
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        let input = "  RECEIPT 000123  \r\n\
                     SKU-1001 Oat milk 1L      2 x 2.49   4.98   \r\n\
                     SKU-1002 Rye bread        1 x 3.10   3.10\r\n\
                     TOTAL 8.08\r\n\
                     ======\r\n";
        assert_eq!(d.feed(input.as_bytes(), now()), sample_events());
    }

    #[test]
    fn gtin_only_items() {
        let mut p = spec_params();
        p.item = r"^(?P<gtin>\d{13})\s+(?P<qty>\d+)\s*x\s*(?P<unit_price>\d+\.\d\d)$".to_string();
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        let out = d.feed(b"RECEIPT R-4\n4006381333931 2 x 1.25\n\x1dV\x00", now());
        let mut line = sale("R-4", 1, "", 2, 125);
        line.gtin = Some("4006381333931".to_string());
        assert_eq!(
            out,
            vec![Decoded::Events(vec![(now(), EventBody::Sale(line))])]
        );
    }

    #[test]
    fn cp437_and_latin1_text() {
        assert_eq!(decode(b"K\x84se \x9c\xe1\xf8", Encoding::Cp437), "Käse £ß°");
        assert_eq!(decode(&[0xC4, 0xFF, 0x80], Encoding::Cp437), "─\u{A0}Ç");
        assert_eq!(
            decode(b"K\xe4se \xa3\xdf\xb0", Encoding::Latin1),
            "Käse £ß°"
        );
        assert_eq!(decode("Käse".as_bytes(), Encoding::Utf8), "Käse");
        assert_eq!(decode(b"K\xe4se", Encoding::Utf8), "K\u{FFFD}se");

        // End to end: the end line only matches when decoded correctly.
        for (encoding, ue) in [(Encoding::Cp437, 0x81u8), (Encoding::Latin1, 0xFC)] {
            let mut p = spec_params();
            p.encoding = encoding;
            p.receipt_end = "^Danke für Ihren Einkauf$".to_string();
            let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
            let mut input = strip(SAMPLE).0.into_bytes();
            input.extend_from_slice(b"Danke f");
            input.push(ue);
            input.extend_from_slice(b"r Ihren Einkauf\n");
            assert_eq!(d.feed(&input, now()), sample_events(), "{encoding:?}");
        }
    }

    #[test]
    fn flush_reads_the_last_line_and_quarantines_an_unfinished_receipt() {
        let mut p = spec_params();
        p.receipt_end = "^TOTAL".to_string();
        let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
        let (text, _) = strip(SAMPLE);
        let unterminated = text.trim_end();
        assert!(d.feed(unterminated.as_bytes(), now()).is_empty());
        assert_eq!(d.flush(now()), sample_events());

        let mut d = decoder();
        let partial = b"RECEIPT R-6\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n";
        assert!(d.feed(partial, now()).is_empty());
        let out = d.flush(now());
        assert_eq!(bads(&out).len(), 1);
        assert_eq!(bads(&out)[0].1, partial);
    }

    #[test]
    fn an_endless_receipt_is_quarantined_and_the_decoder_recovers() {
        let mut d = decoder();
        let mut input = b"RECEIPT R-1\n".to_vec();
        let item = b"SKU-1001 Oat milk 1L      2 x 2.49   4.98\n";
        while input.len() < MAX_RECEIPT_BYTES + 1000 {
            input.extend_from_slice(item);
        }
        let out = d.feed(&input, now());
        let b = bads(&out);
        assert_eq!(out.len(), 1);
        assert_eq!(b[0].1.len(), MAX_RECEIPT_BYTES);
        assert!(b[0].0.contains("longer than"), "{}", b[0].0);
        // The rest of it up to the cut is quarantined too; the next receipt
        // is read normally.
        let out = d.feed(&[b"\x1dV\x00".as_slice(), SAMPLE].concat(), now());
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Decoded::Bad { .. }));
        assert_eq!(out[1..], sample_events()[..]);
        assert!(d.receipt.raw.len() < MAX_RECEIPT_BYTES);
    }

    #[test]
    fn a_receipt_start_recovers_from_an_endless_receipt() {
        let mut d = decoder();
        let out = d.feed(&vec![b'x'; MAX_RECEIPT_BYTES + 10], now());
        assert_eq!(bads(&out).len(), 1);
        let out = d.feed(&[b"\n".as_slice(), SAMPLE].concat(), now());
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Decoded::Bad { .. }));
        assert_eq!(out[1..], sample_events()[..]);
    }

    /// Linear congruential generator: deterministic pseudo-random bytes
    /// without a new dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u8 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u8
        }

        /// Bytes biased towards command prefixes, line feeds and text.
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            const PICK: &[u8] = b"\x1b\x1d\x1c\n\r\t\x00 RECEIPT TOTAL SKU-1 2 x 2.49 0123456789";
            (0..n)
                .map(|_| {
                    let r = self.next();
                    if r % 2 == 0 {
                        PICK[usize::from(self.next()) % PICK.len()]
                    } else {
                        self.next()
                    }
                })
                .collect()
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Lcg(0xC0FFEE);
        for encoding in [Encoding::Utf8, Encoding::Cp437, Encoding::Latin1] {
            let mut p = spec_params();
            p.encoding = encoding;
            let mut d = LinesDecoder::new(p.compile().unwrap(), "pos-1");
            for _ in 0..500 {
                let n = usize::from(rng.next());
                let chunk = rng.bytes(n);
                for out in d.feed(&chunk, now()) {
                    if let Decoded::Events(ev) = out {
                        assert!(!ev.is_empty());
                    }
                }
                assert!(d.receipt.raw.len() < MAX_RECEIPT_BYTES);
            }
            d.flush(now());
            // After a flush the decoder reads a clean receipt again.
            assert_eq!(d.feed(SAMPLE, now()), sample_events());
        }
    }
}
