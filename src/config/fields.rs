//! Reading one TOML table key by key: typed values, a problem (file
//! section, key, what is wrong, what would be right) for each bad one, and
//! every key nobody asked for reported as unknown.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use toml::{Table, Value};

use super::Problem;

/// Walks one TOML table, handing out typed values and remembering which
/// keys were asked for, so that whatever is left over is reported as an
/// unknown key.
pub(super) struct Fields<'a> {
    table: &'a Table,
    prefix: String,
    used: BTreeSet<&'static str>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(table: &'a Table, prefix: impl Into<String>) -> Self {
        Fields {
            table,
            prefix: prefix.into(),
            used: BTreeSet::new(),
        }
    }

    pub(super) fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub(super) fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.used.insert(name);
        self.table.get(name)
    }

    pub(super) fn problem(
        &self,
        problems: &mut Vec<Problem>,
        name: &str,
        message: impl Into<String>,
    ) {
        problems.push(Problem {
            key: self.key(name),
            message: message.into(),
            ..Default::default()
        });
    }

    pub(super) fn wrong_type(&self, p: &mut Vec<Problem>, name: &str, v: &Value, want: &str) {
        self.problem(
            p,
            name,
            format!("expected {want}, found {} {v}", v.type_str()),
        );
    }

    pub(super) fn string(&mut self, p: &mut Vec<Problem>, name: &'static str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            v => {
                self.wrong_type(p, name, v, "a string");
                None
            }
        }
    }

    pub(super) fn required_string(
        &mut self,
        p: &mut Vec<Problem>,
        name: &'static str,
        hint: &str,
    ) -> String {
        if self.table.get(name).is_none() {
            self.used.insert(name);
            self.problem(p, name, format!("missing; add e.g. {name} = {hint}"));
            return String::new();
        }
        self.string(p, name).unwrap_or_default()
    }

    pub(super) fn integer(
        &mut self,
        p: &mut Vec<Problem>,
        name: &'static str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> u64 {
        match self.get(name) {
            None => default,
            Some(Value::Integer(i)) if *i >= 0 && range.contains(&(*i as u64)) => *i as u64,
            Some(Value::Integer(i)) => {
                self.problem(
                    p,
                    name,
                    format!(
                        "{i} is out of range; use a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            Some(v) => {
                self.wrong_type(p, name, v, "a whole number");
                default
            }
        }
    }

    pub(super) fn float(&mut self, p: &mut Vec<Problem>, name: &'static str) -> Option<f64> {
        match self.get(name)? {
            Value::Integer(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            v => {
                self.wrong_type(p, name, v, "a number");
                None
            }
        }
    }

    pub(super) fn socket_addr(
        &mut self,
        p: &mut Vec<Problem>,
        name: &'static str,
        default: Option<&str>,
    ) -> Option<SocketAddr> {
        let text = match self.string(p, name) {
            Some(s) => s,
            None => default?.to_string(),
        };
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    p,
                    name,
                    format!("{text:?} is not an address; write ip:port, e.g. \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        p: &mut Vec<Problem>,
        name: &'static str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = self.string(p, name) else {
            return default;
        };
        match options.iter().find(|(n, _)| *n == text) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.problem(
                    p,
                    name,
                    format!("{text:?} is not allowed; use one of {}", names.join(", ")),
                );
                default
            }
        }
    }

    pub(super) fn table(&mut self, p: &mut Vec<Problem>, name: &'static str) -> Option<&'a Table> {
        match self.get(name)? {
            Value::Table(t) => Some(t),
            v => {
                self.wrong_type(p, name, v, "a table");
                None
            }
        }
    }

    /// Report every key nobody asked for.
    pub(super) fn finish(self, p: &mut Vec<Problem>, expected: &str) {
        for key in self.table.keys() {
            if !self.used.contains(key.as_str()) {
                let known: Vec<&str> = self.used.iter().copied().collect();
                let hint = match closest(key, &known) {
                    Some(k) => format!("did you mean {k:?}?"),
                    None => format!("{expected} are: {}", known.join(", ")),
                };
                self.problem(p, key, format!("unknown key; {hint}"));
            }
        }
    }
}

/// The candidate within a small edit distance of `word`, for "did you mean".
pub fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}
