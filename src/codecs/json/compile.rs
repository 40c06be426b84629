//! A checked `[json]` table: `compile` turns the profile's table into a
//! `JsonCodec` whose fields are resolved paths, so that decoding looks
//! nothing up by name and every mistake in a profile is found by
//! `storegate check`, not by the first message.

use std::collections::BTreeMap;

use serde_json::Value;

use super::convert::currency_code;
use super::extract::PathTree;
use super::params::{Encoding, FieldSpec, JsonParams, OneOrMany, ProfileKind, Scalar};
use super::path::{Path, Record};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct CompiledSource {
    pub(super) path: Path,
    pub(super) encoding: Option<Encoding>,
    pub(super) scale: Option<f64>,
}

/// A compiled field: its alternatives in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Field {
    pub(super) sources: Vec<CompiledSource>,
}

impl Field {
    /// The first alternative present in `value`. JSON `null` and blank
    /// strings count as absent, so that the next alternative is tried.
    // `#[inline]`: see `decode::tag_read`.
    #[inline]
    pub(super) fn find<'a, R: Record + ?Sized>(
        &'a self,
        record: &'a R,
    ) -> Option<(&'a CompiledSource, &'a Value)> {
        self.sources
            .iter()
            .find_map(|source| match record.at(&source.path) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(found) => Some((source, found)),
            })
    }

    /// The paths looked at, for "missing" messages.
    pub(super) fn paths(&self) -> String {
        let paths: Vec<&str> = self.sources.iter().map(|s| s.path.text.as_str()).collect();
        paths.join(" or ")
    }

    /// The converted value of the first present alternative, `None` if no
    /// alternative is present. A present but invalid value is an error
    /// naming its path; the later alternatives are not tried then.
    #[inline]
    pub(super) fn get<T, R: Record + ?Sized>(
        &self,
        value: &R,
        convert: impl Fn(&CompiledSource, &Value) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.find(value) {
            None => Ok(None),
            Some((source, found)) => convert(source, found)
                .map(Some)
                .map_err(|e| format!("{}: {e}", source.path.text)),
        }
    }

    /// Like [`Field::get`], but absence is an error too.
    #[inline]
    pub(super) fn need<T, R: Record + ?Sized>(
        &self,
        value: &R,
        convert: impl Fn(&CompiledSource, &Value) -> Result<T, String>,
    ) -> Result<T, String> {
        self.get(value, convert)?
            .ok_or_else(|| format!("{}: missing", self.paths()))
    }
}

/// `get` for an optional field.
#[inline]
pub(super) fn get_opt<T, R: Record + ?Sized>(
    field: Option<&Field>,
    value: &R,
    convert: impl Fn(&CompiledSource, &Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match field {
        Some(field) => field.get(value, convert),
        None => Ok(None),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct RfidMapping {
    pub(super) epc: Field,
    pub(super) antenna: Option<Field>,
    pub(super) rssi_dbm: Option<Field>,
    pub(super) ts: Option<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct PosMapping {
    pub(super) receipt_id: Field,
    pub(super) currency: Option<Field>,
    pub(super) pos: Option<Field>,
    pub(super) member_id: Option<Field>,
    pub(super) ts: Option<Field>,
    pub(super) default_currency: Option<String>,
    pub(super) lines: Path,
    pub(super) sku: Option<Field>,
    pub(super) gtin: Option<Field>,
    pub(super) qty: Field,
    pub(super) unit_price_minor: Option<Field>,
    pub(super) unit_price: Option<Field>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Mapping {
    Rfid(RfidMapping),
    // Boxed: a POS mapping is several times the size of an RFID one.
    Pos(Box<PosMapping>),
}

/// A checked `[json]` table, ready to decode messages.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCodec {
    pub(super) records: Path,
    pub(super) when: Vec<(Path, Vec<Scalar>)>,
    pub(super) mapping: Mapping,
    /// The RFID paths as a tree, for the fast parse (records at `"$"`).
    pub(super) extract: Option<PathTree>,
}

const RFID_FIELDS: [&str; 4] = ["epc", "antenna", "rssi_dbm", "ts"];
const POS_FIELDS: [&str; 5] = ["receipt_id", "currency", "pos", "member_id", "ts"];
const POS_LINE_FIELDS: [&str; 5] = ["sku", "gtin", "qty", "unit_price_minor", "unit_price"];

/// Check a `[json]` table against the profile kind and compile it. The
/// error names the offending key, e.g. `json.fields.epc: required for kind
/// = "rfid"`.
pub fn compile(params: &JsonParams, kind: ProfileKind) -> Result<JsonCodec, String> {
    let records = Path::parse(&params.records).map_err(|e| format!("json.records: {e}"))?;

    let mut when = Vec::new();
    for (key, accepted) in &params.when {
        let path = Path::parse(key).map_err(|e| format!("json.when.{key}: {e}"))?;
        let values = match accepted {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(vs) => vs.clone(),
        };
        if values.is_empty() {
            return Err(format!(
                "json.when.{key}: empty list, no record would match"
            ));
        }
        when.push((path, values));
    }

    let mapping = match kind {
        ProfileKind::Rfid => {
            for (key, present) in [
                ("lines", params.lines.is_some()),
                ("line_fields", !params.line_fields.is_empty()),
                ("default_currency", params.default_currency.is_some()),
            ] {
                if present {
                    return Err(format!("json.{key}: only for kind = \"pos\""));
                }
            }
            let mut fields = compile_fields("json.fields", &params.fields, &RFID_FIELDS, kind)?;
            Mapping::Rfid(RfidMapping {
                epc: required(&mut fields, "json.fields", "epc", kind)?,
                antenna: fields.remove("antenna"),
                rssi_dbm: fields.remove("rssi_dbm"),
                ts: fields.remove("ts"),
            })
        }
        ProfileKind::Pos => {
            let mut fields = compile_fields("json.fields", &params.fields, &POS_FIELDS, kind)?;
            let mut line_fields = compile_fields(
                "json.line_fields",
                &params.line_fields,
                &POS_LINE_FIELDS,
                kind,
            )?;
            let lines = match &params.lines {
                Some(text) => Path::parse(text).map_err(|e| format!("json.lines: {e}"))?,
                None => {
                    return Err(
                        "json.lines: required for kind = \"pos\" (path of the array of receipt lines)"
                            .into(),
                    );
                }
            };
            let default_currency = match &params.default_currency {
                Some(code) => {
                    Some(currency_code(code).map_err(|e| format!("json.default_currency: {e}"))?)
                }
                None => None,
            };
            let mapping = PosMapping {
                receipt_id: required(&mut fields, "json.fields", "receipt_id", kind)?,
                currency: fields.remove("currency"),
                pos: fields.remove("pos"),
                member_id: fields.remove("member_id"),
                ts: fields.remove("ts"),
                default_currency,
                lines,
                sku: line_fields.remove("sku"),
                gtin: line_fields.remove("gtin"),
                qty: required(&mut line_fields, "json.line_fields", "qty", kind)?,
                unit_price_minor: line_fields.remove("unit_price_minor"),
                unit_price: line_fields.remove("unit_price"),
            };
            if mapping.sku.is_none() && mapping.gtin.is_none() {
                return Err("json.line_fields.sku: required (or json.line_fields.gtin)".into());
            }
            if mapping.unit_price_minor.is_none() && mapping.unit_price.is_none() {
                return Err(
                    "json.line_fields.unit_price: required (or json.line_fields.unit_price_minor)"
                        .into(),
                );
            }
            Mapping::Pos(Box::new(mapping))
        }
    };

    let mut codec = JsonCodec {
        records,
        when,
        mapping,
        extract: None,
    };
    codec.extract = codec.path_tree();
    Ok(codec)
}

fn required(
    fields: &mut BTreeMap<String, Field>,
    table: &str,
    key: &str,
    kind: ProfileKind,
) -> Result<Field, String> {
    fields
        .remove(key)
        .ok_or_else(|| format!("{table}.{key}: required for kind = \"{}\"", kind.as_str()))
}

fn compile_fields(
    table: &str,
    specs: &BTreeMap<String, FieldSpec>,
    allowed: &[&str],
    kind: ProfileKind,
) -> Result<BTreeMap<String, Field>, String> {
    let mut fields = BTreeMap::new();
    for (key, spec) in specs {
        let name = format!("{table}.{key}");
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "{name}: unknown field for kind = \"{}\" (expected one of: {})",
                kind.as_str(),
                allowed.join(", ")
            ));
        }
        if spec.alternatives.is_empty() {
            return Err(format!("{name}: empty list of alternatives"));
        }
        let mut sources = Vec::new();
        for source in &spec.alternatives {
            let path = Path::parse(&source.path).map_err(|e| format!("{name}: {e}"))?;
            // `as` and `scale` only mean something for these two fields;
            // elsewhere they would be silently ignored, so refuse them.
            if source.encoding.is_some() && key != "epc" {
                return Err(format!("{name}: `as` only applies to epc"));
            }
            if let Some(scale) = source.scale {
                if key != "rssi_dbm" {
                    return Err(format!("{name}: `scale` only applies to rssi_dbm"));
                }
                if !scale.is_finite() || scale == 0.0 {
                    return Err(format!("{name}: scale must be a non-zero number"));
                }
            }
            sources.push(CompiledSource {
                path,
                encoding: source.encoding,
                scale: source.scale,
            });
        }
        fields.insert(key.clone(), Field { sources });
    }
    Ok(fields)
}

impl JsonCodec {
    /// The tree of an RFID codec's record-level paths, each path given its
    /// slot; `None` where the fast parse does not apply.
    fn path_tree(&mut self) -> Option<PathTree> {
        let Mapping::Rfid(m) = &mut self.mapping else {
            return None;
        };
        if !self.records.is_root() {
            return None;
        }
        let mut tree = PathTree::default();
        for (path, _) in &mut self.when {
            tree.insert(path);
        }
        let fields = [
            Some(&mut m.epc),
            m.antenna.as_mut(),
            m.rssi_dbm.as_mut(),
            m.ts.as_mut(),
        ];
        for field in fields.into_iter().flatten() {
            for source in &mut field.sources {
                tree.insert(&mut source.path);
            }
        }
        Some(tree)
    }
}
