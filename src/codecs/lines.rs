//! Codec `lines` (spec/profiles.md): a tap on a POS receipt printer's
//! serial line, or a POS printing its journal to a serial port.
//!
//! Bytes go through three stages, all of which keep their state between
//! [`LinesDecoder::feed`] calls so input may be split anywhere:
//! 1. ESC/POS stripping (`escpos.rs`): printer commands, barcodes and
//!    images are removed; text bytes, line feeds and cuts remain.
//! 2. Text decoding (`encoding`, `text.rs`) and line splitting.
//! 3. Receipt assembly (`receipt.rs`): the profile's regular expressions
//!    pick out the receipt id, item lines and the total; at the receipt's
//!    end all of its lines are emitted together, or the whole receipt is
//!    quarantined.
//!
//! The `[lines]` table and its compiled form are in `params.rs`.

mod escpos;
mod params;
mod receipt;
#[cfg(test)]
mod tests;
mod text;

pub use params::{CompiledLines, Encoding, LinesParams};
pub use receipt::LinesDecoder;
