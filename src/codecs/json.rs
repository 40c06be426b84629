//! Codec `json` (spec/profiles.md "Codec `json`"): RFID reads and POS
//! receipts that devices publish as JSON over MQTT or HTTP.
//!
//! The codec knows no vendor. A profile's `[json]` table says where the
//! records are, which records to keep and which JSON path feeds which
//! output field, so a new reader or POS needs only a profile file:
//!
//! ```toml
//! [json]
//! records = "$"                          # "$": the message is one record or an array of them;
//!                                        # "a.b": the array (or single object) at that path
//! when = { eventType = "tagInventory" }  # optional: keep only records whose field at that path
//!                                        # equals the value or one of a list of values
//!                                        # (strings, integers, floats, bools); quote dotted
//!                                        # paths: { "data.kind" = ["a", "b"] }
//! default_currency = "EUR"               # pos only: used when a receipt names no currency
//! lines = "lines"                        # pos only: the array of receipt lines, relative to the record
//!
//! [json.fields]                          # output field = source, relative to the record
//! epc = [{ path = "tagInventoryEvent.epcHex", as = "hex" },
//!        { path = "tagInventoryEvent.epc", as = "base64" }]
//! antenna = "tagInventoryEvent.antennaPort"
//! rssi_dbm = { path = "tagInventoryEvent.peakRssiCdbm", scale = 0.01 }
//! ts = "timestamp"
//!
//! [json.line_fields]                     # pos only: per-line fields, relative to the line
//! sku = "sku"
//! qty = "qty"
//! unit_price = "price"
//! ```
//!
//! A source is a path string, a table `{ path, as, scale }`, or a list of
//! those tried in order until one is present (JSON `null` and empty strings
//! count as absent). Paths are dot-separated keys; a numeric segment
//! indexes an array; `"$"` alone is the record itself.
//!
//! Fields by kind:
//! - `rfid`: `fields.epc` (required; `as = "hex"` (the default) or
//!   `"base64"`), `fields.antenna`, `fields.rssi_dbm` (`scale` allowed),
//!   `fields.ts`.
//! - `pos`: `fields.receipt_id` (required), `fields.currency`, `fields.pos`,
//!   `fields.member_id`, `fields.ts`, `lines` (required) and
//!   `line_fields.qty` (required), `line_fields.sku` and/or
//!   `line_fields.gtin` (at least one), `line_fields.unit_price_minor`
//!   and/or `line_fields.unit_price` (at least one).

mod compile;
mod convert;
mod decode;
mod extract;
mod params;
mod path;
mod redact;
#[cfg(test)]
mod tests;

pub use crate::codecs::time::parse_ts;
pub use compile::{JsonCodec, compile};
pub use decode::{DecodeContext, DecodeOutput};
pub use params::{Encoding, FieldSpec, JsonParams, OneOrMany, ProfileKind, Scalar, Source};
