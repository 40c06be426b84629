//! Codec `lines` (spec/profiles.md).
