//! Codec `m100` (spec/profiles.md).
