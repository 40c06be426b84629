//! Codecs: what the bytes of a device mean. A firmware profile names a
//! codec and gives it parameters; the codec turns raw input into typed
//! output for the journal (spec/profiles.md).

pub mod esl;
pub mod json;
pub mod lines;
pub mod llrp;
pub mod m100;
pub mod registers;
pub(crate) mod time;

// The types codecs produce belong to the house's vocabulary, so that the
// domain never depends on codecs.
pub use crate::event::device::{Decoded, TagRead};
