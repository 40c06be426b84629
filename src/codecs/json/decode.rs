//! Decoding one message with a compiled codec: the fast parse for RFID
//! messages that allow it, else the full parse into a `Value`, then one
//! tag read per RFID record or one set of sale/return events per receipt.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::compile::{Field, JsonCodec, Mapping, PosMapping, RfidMapping, get_opt};
use super::convert::{
    antenna_value, currency_code, decimal_value, epc_value, gtin_value, integer_value, rssi_value,
    text_value, timestamp, type_name,
};
use super::extract;
use super::params::{ProfileKind, Scalar};
use super::path::Record;
use super::redact::{keyed_hash, redact_pos_raw};
use crate::codecs::{Decoded, TagRead};
use crate::event::{EventBody, SaleLine, bounds};

/// What a decode needs to know about the device that sent the message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeContext {
    /// Device id from the config: the `pos` of a receipt that names none.
    pub device_id: String,
    /// Key for the keyed hash of loyalty member ids (never stored in clear).
    pub member_key: Vec<u8>,
}

/// The result of decoding one message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodeOutput {
    /// RFID: one `TagReads` with every good read, then one `Bad` per bad
    /// record. POS: per receipt in message order, `Events` or `Bad`.
    /// Empty when every record was filtered out by `when`.
    pub items: Vec<Decoded>,
    /// How many decoded records had a `ts` field configured but missing or
    /// unparsable, and so were given the receive time (for metrics).
    pub ts_fallbacks: u32,
}

impl JsonCodec {
    /// The kind of profile this codec was compiled for.
    pub fn kind(&self) -> ProfileKind {
        match self.mapping {
            Mapping::Rfid(_) => ProfileKind::Rfid,
            Mapping::Pos(_) => ProfileKind::Pos,
        }
    }

    /// Decode one message (an MQTT payload, an HTTP body, one line of a
    /// stream). Never panics; whatever does not decode becomes
    /// [`Decoded::Bad`] with a reason naming the record, line and path.
    /// Timestamps are kept to the millisecond, the journal's precision.
    pub fn decode(&self, payload: &[u8], ctx: &DecodeContext, now: DateTime<Utc>) -> DecodeOutput {
        if let Some(out) = self.decode_extracted(payload, now) {
            return out;
        }
        let mut out = self.decode_parsed(payload, ctx, now);
        if let Mapping::Pos(m) = &self.mapping {
            for item in &mut out.items {
                if let Decoded::Bad { raw, .. } = item {
                    redact_pos_raw(raw, m, &ctx.member_key);
                }
            }
        }
        out
    }

    /// RFID messages whose every record decodes, by the fast parse of
    /// `extract`; `None` for anything else (not JSON, a bad record, a POS
    /// profile, records below the top), which `decode_parsed` then
    /// decodes, so that the reasons and quarantined bytes are its own.
    pub(super) fn decode_extracted(
        &self,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Option<DecodeOutput> {
        let (Some(tree), Mapping::Rfid(m)) = (&self.extract, &self.mapping) else {
            return None;
        };
        let text = payload_text(payload).ok()?;
        let mut out = DecodeOutput::default();
        let mut reads = Vec::new();
        for record in extract::records(text, tree)? {
            if !self.keep(&record) {
                continue;
            }
            let (read, fell_back) = tag_read(m, &record, now).ok()?;
            reads.push(read);
            out.ts_fallbacks += u32::from(fell_back);
        }
        if !reads.is_empty() {
            out.items.push(Decoded::TagReads(reads));
        }
        Some(out)
    }

    /// Decode by parsing the whole message into a `Value`.
    pub(super) fn decode_parsed(
        &self,
        payload: &[u8],
        ctx: &DecodeContext,
        now: DateTime<Utc>,
    ) -> DecodeOutput {
        let mut out = DecodeOutput::default();
        let bad = |reason: String| Decoded::Bad {
            reason,
            raw: payload.to_vec(),
        };
        let message = match parse_payload(payload) {
            Ok(message) => message,
            Err(reason) => {
                out.items.push(bad(reason));
                return out;
            }
        };
        let (records, single) = match self.select_records(&message) {
            Ok(found) => found,
            Err(reason) => {
                out.items.push(bad(reason));
                return out;
            }
        };

        let mut reads = Vec::new();
        let mut bad_records = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let result = if !record.is_object() {
                Err(format!("expected a JSON object, got {}", type_name(record)))
            } else if !self.keep(*record) {
                continue;
            } else {
                match &self.mapping {
                    Mapping::Rfid(m) => tag_read(m, *record, now).map(|(read, fell_back)| {
                        reads.push(read);
                        fell_back
                    }),
                    Mapping::Pos(m) => receipt(m, record, ctx, now).map(|(events, fell_back)| {
                        // An empty receipt (e.g. voided) moves nothing.
                        if !events.is_empty() {
                            out.items.push(Decoded::Events(events));
                        }
                        fell_back
                    }),
                }
            };
            match result {
                Ok(fell_back) => out.ts_fallbacks += u32::from(fell_back),
                Err(reason) => {
                    // A bad record of an array is quarantined alone, with its
                    // own text, so that the good ones next to it still count.
                    let bad = if single {
                        bad(reason)
                    } else {
                        Decoded::Bad {
                            reason: format!("record {}: {reason}", index + 1),
                            raw: serde_json::to_vec(record).unwrap_or_default(),
                        }
                    };
                    // POS keeps message order; RFID reads go first as one batch.
                    match self.mapping {
                        Mapping::Pos(_) => out.items.push(bad),
                        Mapping::Rfid(_) => bad_records.push(bad),
                    }
                }
            }
        }
        if !reads.is_empty() {
            out.items.push(Decoded::TagReads(reads));
        }
        out.items.extend(bad_records);
        out
    }

    /// The records of a message, and whether the message is a single record
    /// (then a bad record is quarantined as the whole payload).
    fn select_records<'a>(&self, message: &'a Value) -> Result<(Vec<&'a Value>, bool), String> {
        let found = match self.records.lookup(message) {
            Some(found) => found,
            None => return Err(format!("{}: missing", self.records.text)),
        };
        match found {
            Value::Array(items) => Ok((items.iter().collect(), false)),
            Value::Object(_) => Ok((vec![found], true)),
            other if self.records.is_root() => Err(format!(
                "expected a JSON object or array, got {}",
                type_name(other)
            )),
            other => Err(format!(
                "{}: expected an array of records, got {}",
                self.records.text,
                type_name(other)
            )),
        }
    }

    /// Whether a record passes every `when` filter.
    fn keep<R: Record + ?Sized>(&self, record: &R) -> bool {
        self.when.iter().all(|(path, accepted)| {
            record
                .at(path)
                .is_some_and(|value| accepted.iter().any(|a| scalar_matches(a, value)))
        })
    }
}

fn parse_payload(payload: &[u8]) -> Result<Value, String> {
    serde_json::from_str(payload_text(payload)?).map_err(|e| format!("not JSON: {e}"))
}

fn payload_text(payload: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(payload)
        .map_err(|e| format!("not UTF-8: invalid byte at offset {}", e.valid_up_to()))?;
    // Some HTTP clients prepend a byte order mark; JSON parsers refuse it.
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

fn scalar_matches(accepted: &Scalar, value: &Value) -> bool {
    match (accepted, value) {
        (Scalar::Text(a), Value::String(v)) => a == v,
        (Scalar::Bool(a), Value::Bool(v)) => a == v,
        (Scalar::Int(a), Value::Number(v)) => match v.as_i64() {
            Some(v) => *a == v,
            None => v.as_f64() == Some(*a as f64),
        },
        (Scalar::Float(a), Value::Number(v)) => v.as_f64() == Some(*a),
        _ => false,
    }
}

/// One RFID record; the flag says whether `ts` fell back to `now`.
// `#[inline]` on what runs for every tag read: since the split these
// helpers sit in another module than `decode`, hence in another codegen
// unit, where the compiler stopped inlining them (callgrind: +1.4%
// instructions per decode in `benches/json_decode`).
#[inline]
fn tag_read<R: Record + ?Sized>(
    m: &RfidMapping,
    record: &R,
    now: DateTime<Utc>,
) -> Result<(TagRead, bool), String> {
    let epc = m.epc.need(record, epc_value)?;
    let antenna = get_opt(m.antenna.as_ref(), record, |_, v| antenna_value(v))?;
    let rssi_dbm = get_opt(m.rssi_dbm.as_ref(), record, rssi_value)?;
    let (ts, fell_back) = timestamp(m.ts.as_ref(), record, now);
    Ok((
        TagRead {
            epc,
            antenna,
            rssi_dbm,
            ts,
        },
        fell_back,
    ))
}

/// The events of one receipt, journaled together.
type ReceiptEvents = Vec<(DateTime<Utc>, EventBody)>;

/// One receipt, all lines or an error; the flag says whether `ts` fell
/// back to `now`.
fn receipt(
    m: &PosMapping,
    record: &Value,
    ctx: &DecodeContext,
    now: DateTime<Utc>,
) -> Result<(ReceiptEvents, bool), String> {
    let receipt_id = m.receipt_id.need(record, |_, v| text_value(v))?;
    let currency = match get_opt(m.currency.as_ref(), record, |_, v| match v {
        Value::String(s) => currency_code(s),
        other => Err(format!("expected a string, got {}", type_name(other))),
    })? {
        Some(code) => code,
        None => match &m.default_currency {
            Some(code) => code.clone(),
            None => {
                let looked_at = m.currency.as_ref().map_or("currency".into(), Field::paths);
                return Err(format!(
                    "{looked_at}: missing and the profile has no default_currency"
                ));
            }
        },
    };
    let pos = get_opt(m.pos.as_ref(), record, |_, v| text_value(v))?
        .unwrap_or_else(|| ctx.device_id.clone());
    // The member id itself is hashed right away and never kept or echoed.
    let member_hash = get_opt(m.member_id.as_ref(), record, |_, v| {
        let id = text_value(v)?;
        keyed_hash(&ctx.member_key, &id).ok_or_else(|| "cannot be hashed".to_string())
    })?;
    let (ts, fell_back) = timestamp(m.ts.as_ref(), record, now);

    let lines = match m.lines.lookup(record) {
        None | Some(Value::Null) => return Err(format!("{}: missing", m.lines.text)),
        Some(Value::Array(lines)) => lines,
        Some(other) => {
            return Err(format!(
                "{}: expected an array, got {}",
                m.lines.text,
                type_name(other)
            ));
        }
    };

    let mut events = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        let sale = sale_line(m, line, &currency).map_err(|e| format!("line {number}: {e}"))?;
        let line_no = u32::try_from(number).map_err(|_| "too many lines".to_string())?;
        let sale_line = SaleLine {
            receipt_id: receipt_id.clone(),
            line: line_no,
            sku: sale.sku,
            gtin: sale.gtin,
            qty: sale.qty.abs(),
            unit_price_minor: sale.unit_price_minor,
            currency: currency.clone(),
            pos: pos.clone(),
            member_hash: member_hash.clone(),
        };
        let body = if sale.qty < 0 {
            EventBody::Return(sale_line)
        } else {
            EventBody::Sale(sale_line)
        };
        events.push((ts, body));
    }
    Ok((events, fell_back))
}

/// The per-line part of a sale.
struct LineValues {
    sku: String,
    gtin: Option<String>,
    /// Signed: negative for a return. Never 0 or `i64::MIN`.
    qty: i64,
    unit_price_minor: i64,
}

fn sale_line(m: &PosMapping, line: &Value, currency: &str) -> Result<LineValues, String> {
    if !line.is_object() {
        return Err(format!("expected a JSON object, got {}", type_name(line)));
    }
    let sku = get_opt(m.sku.as_ref(), line, |_, v| text_value(v))?;
    let gtin = get_opt(m.gtin.as_ref(), line, |_, v| gtin_value(v))?;
    if sku.is_none() && gtin.is_none() {
        let looked_at: Vec<String> = [&m.sku, &m.gtin]
            .into_iter()
            .flatten()
            .map(Field::paths)
            .collect();
        return Err(format!("{}: missing", looked_at.join(" or ")));
    }
    let qty = m.qty.need(line, |_, v| {
        let qty = integer_value(v)?;
        // `i64::MIN` has no positive counterpart for a return.
        if qty == 0 || qty == i64::MIN {
            return Err(format!("{qty} is not a quantity"));
        }
        if qty.unsigned_abs() > bounds::MAX_QTY as u64 {
            return Err(format!(
                "{qty} is beyond the {} units one line may carry",
                bounds::MAX_QTY
            ));
        }
        Ok(qty)
    })?;
    let non_negative = |minor: i64| {
        if minor < 0 {
            Err(format!("negative price {minor}"))
        } else if minor > bounds::MAX_PRICE_MINOR {
            Err(format!(
                "{minor} is not a price (at most {} minor units)",
                bounds::MAX_PRICE_MINOR
            ))
        } else {
            Ok(minor)
        }
    };
    let minor = get_opt(m.unit_price_minor.as_ref(), line, |_, v| {
        integer_value(v).and_then(non_negative)
    })?;
    let unit_price_minor = match minor {
        Some(minor) => minor,
        None => {
            let price = get_opt(m.unit_price.as_ref(), line, |_, v| {
                decimal_value(v, currency).and_then(non_negative)
            })?;
            match price {
                Some(minor) => minor,
                None => {
                    let looked_at: Vec<String> = [&m.unit_price_minor, &m.unit_price]
                        .into_iter()
                        .flatten()
                        .map(Field::paths)
                        .collect();
                    return Err(format!("{}: missing", looked_at.join(" or ")));
                }
            }
        }
    };
    Ok(LineValues {
        // Only a GTIN given: a later stage maps it to the SKU.
        sku: sku.unwrap_or_default(),
        gtin,
        qty,
        unit_price_minor,
    })
}
