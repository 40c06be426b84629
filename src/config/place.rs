//! Where a problem is in the file: its line and the id of its device, so
//! that `storegate check` says `store.toml:41 device "pos-3": port: ...`
//! instead of a position a technician has to count. The lines come from
//! the spans of the toml crate's own parser (`toml::de::DeTable`).

use toml::de::{DeTable, DeValue};

use super::Problem;

/// `device[3].port` -> `(3, "port")`; `device[3]` -> `(3, "")`.
pub(super) fn device_key(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("device[")?;
    let (index, rest) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    Some((index, rest.strip_prefix('.').unwrap_or(rest)))
}

/// Give each problem its line and, for a device's key, the device's id.
/// Problems whose key is not in the file (a missing key) get the line of
/// the table that lacks it; a whole-file problem gets none.
pub(super) fn locate(text: &str, problems: &mut [Problem]) {
    let Ok(root) = DeTable::parse(text) else {
        return; // not TOML: that problem already names its own line
    };
    let root = DeValue::Table(root.into_inner());
    for p in problems.iter_mut().filter(|p| !p.key.is_empty()) {
        if let Some((index, _)) = device_key(&p.key) {
            p.device = root
                .get("device")
                .and_then(|d| d.get_ref().get(index))
                .and_then(|d| d.get_ref().get("id"))
                .and_then(|id| id.get_ref().as_str().map(str::to_string));
        }
        p.line = span_start(&root, &p.key).map(|at| line_of(text, at));
    }
}

/// The byte offset where the deepest existing part of `key` starts.
/// Name the device of each device problem from the table alone, for a
/// configuration that has no text of its own (central's merged over the
/// local file).
pub(super) fn name_devices(table: &toml::Table, problems: &mut [Problem]) {
    for p in problems.iter_mut() {
        if let Some((index, _)) = device_key(&p.key) {
            p.device = table
                .get("device")
                .and_then(|d| d.as_array()?.get(index))
                .and_then(|d| d.get("id")?.as_str().map(str::to_string));
        }
    }
}

fn span_start(root: &DeValue<'_>, key: &str) -> Option<usize> {
    let mut here = root;
    let mut start = None;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(value) = here.get(name) else { break };
        start = Some(value.span().start);
        here = value.get_ref();
        if let Some(i) = index {
            let Some(item) = here.get(i) else { break };
            start = Some(item.span().start);
            here = item.get_ref();
        }
    }
    start
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The caller's checks of devices (`more`) without the ones that only
/// follow from a problem already reported: a device whose transport or
/// profile is itself wrong is not also checked against its profile.
pub(super) fn without_consequences(more: Vec<Problem>, found: &[Problem]) -> Vec<Problem> {
    let broken = |index: usize| {
        found.iter().any(|p| {
            matches!(device_key(&p.key), Some((i, key)) if i == index && (key == "transport" || key == "profile"))
        })
    };
    more.into_iter()
        .filter(|p| device_key(&p.key).is_none_or(|(i, _)| !broken(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(text: &str, key: &str) -> (Option<usize>, Option<String>) {
        let mut p = [Problem {
            key: key.into(),
            ..Default::default()
        }];
        locate(text, &mut p);
        (p[0].line, p[0].device.clone())
    }

    const TEXT: &str = "store_id = \"s1\"\nlocale = \"xx\"\n\n[[device]]\nid = \"pos-1\"\ntransport = \"mqtt\"\n\n[[device]]\nid = \"pos-3\"\nport = \"/dev/x\"\nslots = { 0 = \"A\" }\n";

    #[test]
    fn keys_are_found_on_their_lines() {
        assert_eq!(located(TEXT, "locale"), (Some(2), None));
        assert_eq!(
            located(TEXT, "device[1].port"),
            (Some(10), Some("pos-3".into()))
        );
        assert_eq!(
            located(TEXT, "device[1].slots.0"),
            (Some(11), Some("pos-3".into()))
        );
    }

    #[test]
    fn a_missing_key_is_on_its_table_line() {
        let (line, id) = located(TEXT, "device[0].profile");
        assert_eq!(id.as_deref(), Some("pos-1"));
        assert!(matches!(line, Some(4 | 5)), "{line:?}");
    }
}
