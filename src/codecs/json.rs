//! Codec `json` (spec/profiles.md).
