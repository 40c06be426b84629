//! The `[json]` table of a firmware profile as written, and how serde
//! reads it. Nothing here checks the table against a profile kind; that
//! is `compile`'s job, so that its errors can name the offending key.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// The `[json]` table of a firmware profile, as written.
/// [`compile`](super::compile()) checks it against the profile's kind and
/// turns it into a [`JsonCodec`](super::JsonCodec).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonParams {
    /// Where the records are: `"$"` (default) for the message itself, which
    /// may be one record or an array of records, or a path to an array.
    #[serde(default = "root_path")]
    pub records: String,
    /// Keep only records whose value at each path equals the value or one
    /// of the values; other records are ignored silently (not quarantined).
    #[serde(default)]
    pub when: BTreeMap<String, OneOrMany>,
    /// Output field name -> where to find it in a record.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// `pos` only: path of the array of receipt lines within a record.
    #[serde(default)]
    pub lines: Option<String>,
    /// `pos` only: output field name -> where to find it in a line.
    #[serde(default)]
    pub line_fields: BTreeMap<String, FieldSpec>,
    /// `pos` only: ISO 4217 code for receipts that name no currency.
    /// Without it such a receipt is quarantined.
    #[serde(default)]
    pub default_currency: Option<String>,
}

fn root_path() -> String {
    "$".to_string()
}

/// A value a `when` filter compares against.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// A `when` entry: one value or a list of accepted values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// How a string source is turned into an EPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hex digits in either case, normalised to upper case.
    Hex,
    /// Base64, standard or URL-safe alphabet, padded or not; the bytes
    /// become upper-case hex.
    Base64,
}

/// One place a field may come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Dot-separated path within the record (or line).
    pub path: String,
    /// `as = "hex" | "base64"`: only for `epc`.
    pub encoding: Option<Encoding>,
    /// Factor applied to the number found: only for `rssi_dbm`.
    pub scale: Option<f64>,
}

/// Where a field comes from: the alternatives, tried in order until one is
/// present. In TOML a path string, a `{ path, as, scale }` table, or a list
/// of either.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub alternatives: Vec<Source>,
}

/// The table form of a [`Source`], so that serde reports unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    path: String,
    #[serde(rename = "as")]
    encoding: Option<Encoding>,
    scale: Option<f64>,
}

impl From<SourceTable> for Source {
    fn from(t: SourceTable) -> Self {
        Source {
            path: t.path,
            encoding: t.encoding,
            scale: t.scale,
        }
    }
}

impl Source {
    pub(super) fn from_path(path: &str) -> Self {
        Source {
            path: path.to_string(),
            encoding: None,
            scale: None,
        }
    }
}

// Hand-written visitors rather than `#[serde(untagged)]`, whose only error
// is "data did not match any variant": a misspelt key in a field table
// should be reported as such by `storegate check`.
struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = Source;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path string or a table { path, as, scale }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Source, E> {
        Ok(Source::from_path(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Source, A::Error> {
        let table = SourceTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(table.into())
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SourceVisitor)
    }
}

struct FieldSpecVisitor;

impl<'de> Visitor<'de> for FieldSpecVisitor {
    type Value = FieldSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a path string, a table { path, as, scale }, or a list of those")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
        Ok(FieldSpec {
            alternatives: vec![Source::from_path(v)],
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
        Ok(FieldSpec {
            alternatives: vec![SourceVisitor.visit_map(map)?],
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldSpec, A::Error> {
        let mut alternatives = Vec::new();
        while let Some(source) = seq.next_element::<Source>()? {
            alternatives.push(source);
        }
        Ok(FieldSpec { alternatives })
    }
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldSpecVisitor)
    }
}

/// The profile kinds the `json` codec serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Rfid,
    Pos,
}

impl ProfileKind {
    /// The profile's `kind` value; `None` for kinds this codec does not serve.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rfid" => Some(ProfileKind::Rfid),
            "pos" => Some(ProfileKind::Pos),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Rfid => "rfid",
            ProfileKind::Pos => "pos",
        }
    }
}
