//! Paths into a record (`"a.b.0"`), split once at compile time, and the
//! `Record` trait both the full parse and the fast parse read them through.

use serde_json::Value;

/// A dot-separated path, split once at compile time.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Path {
    pub(super) text: String,
    /// Empty for `"$"`, the record itself.
    pub(super) segments: Vec<String>,
    /// Where an extracted record keeps this path's value (record-level
    /// paths of an RFID codec; see `extract`).
    pub(super) slot: usize,
}

impl Path {
    pub(super) fn parse(text: &str) -> Result<Path, String> {
        let rest = if text == "$" {
            ""
        } else {
            text.strip_prefix("$.").unwrap_or(text)
        };
        if text.is_empty() {
            return Err("empty path".into());
        }
        let segments: Vec<String> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').map(str::to_string).collect()
        };
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!("path {text:?} has an empty segment"));
        }
        Ok(Path {
            text: text.to_string(),
            segments,
            slot: 0,
        })
    }

    pub(super) fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The value at this path, if any. A numeric segment indexes an array
    /// (and is an ordinary key in an object).
    pub(super) fn lookup<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |current, segment| step(current, segment))
    }
}

/// One segment of a path into `value`.
pub(super) fn step<'a>(value: &'a Value, segment: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
        _ => None,
    }
}

/// A record the fields are read from: a parsed JSON value, or the values
/// an RFID codec extracted for its paths.
pub(super) trait Record {
    fn at(&self, path: &Path) -> Option<&Value>;
}

impl Record for Value {
    fn at(&self, path: &Path) -> Option<&Value> {
        path.lookup(self)
    }
}
