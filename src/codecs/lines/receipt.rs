//! Receipt assembly, and the stream decoder that drives all three stages:
//! `LinesDecoder` takes a device's bytes, strips them (`escpos`), splits
//! and decodes lines (`text`) and reads receipts from those lines; out
//! comes one all-or-nothing set of sale/return events, or one quarantined
//! receipt, per finished receipt.

use chrono::{DateTime, Utc};
use regex::Captures;
use sha2::{Digest, Sha256};

use super::escpos::{LF, Stripped, Stripper};
use super::params::{CompiledLines, ReceiptEnd};
use super::text::decode;
use crate::codecs::Decoded;
use crate::domain::money::{decimal_to_minor, exponent};
use crate::event::{EventBody, SaleLine, bounds};

/// Most raw bytes kept for one receipt. A receipt growing beyond this has
/// most likely lost its end marker (wrong `receipt_end`, a cut the tap
/// missed); it is quarantined rather than buffered without bound. Generous
/// enough for a receipt that carries a raster logo.
pub(super) const MAX_RECEIPT_BYTES: usize = 256 * 1024;

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
pub(super) struct Receipt {
    /// Every byte since the previous receipt ended, for quarantine.
    pub(super) raw: Vec<u8>,
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
    pub(super) receipt: Receipt,
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
