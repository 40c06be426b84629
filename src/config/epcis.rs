//! The `[epcis]` table: where this store is in GS1 terms, for the EPCIS
//! 2.0 output (`storegate export --format epcis`, `GET /v1/epcis/events`).
//! A GLN alone cannot be turned into an SGLN: the split between company
//! prefix and location reference is not in the number, so the length of
//! the GS1 company prefix is asked for too.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::{EpcisConfig, Fields, Problem};

/// Longest SGLN extension (GS1 AI 254 is up to 20 characters).
const MAX_EXTENSION: usize = 20;

pub(super) fn read_epcis(t: &Table, p: &mut Vec<Problem>) -> Option<EpcisConfig> {
    let mut f = Fields::new(t, "epcis");
    let gln = f.required_string(p, "gln", "\"4012345000009\" (the store's 13-digit GLN)");
    let mut ok = !gln.is_empty();
    if ok && !is_gln(&gln) {
        f.problem(
            p,
            "gln",
            format!("{gln:?} is not a GLN: expected 13 digits ending in their GS1 check digit"),
        );
        ok = false;
    }
    let company_prefix_digits = if f.get("company_prefix_digits").is_none() {
        f.problem(
            p,
            "company_prefix_digits",
            "missing; add the length of the GS1 company prefix inside the GLN, e.g. company_prefix_digits = 7 (your GS1 member organisation says which)",
        );
        ok = false;
        0
    } else {
        let before = p.len();
        let n = f.integer(p, "company_prefix_digits", 7, 6..=12) as usize;
        ok &= p.len() == before;
        n
    };
    let mut zones = BTreeMap::new();
    if let Some(table) = f.table(p, "zones") {
        for (zone, v) in table {
            match v {
                Value::String(ext) if is_extension(ext) => {
                    zones.insert(zone.clone(), ext.clone());
                }
                v => {
                    f.problem(
                        p,
                        &format!("zones.{zone}"),
                        format!(
                            "{v} is not an SGLN extension; use 1 to {MAX_EXTENSION} letters, digits, '-', '_' or '.', e.g. zones = {{ salesfloor = \"1\" }}"
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    f.finish(p, "keys of [epcis]");
    ok.then_some(EpcisConfig {
        gln,
        company_prefix_digits,
        zones,
    })
}

/// Whether `s` is a GLN: 13 digits, the last the GS1 mod-10 check digit
/// of the others (weights 3, 1, 3, ... from the right).
fn is_gln(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if s.len() != 13 || digits.len() != 13 {
        return false;
    }
    let weighted: u32 = digits[..12]
        .iter()
        .rev()
        .zip([3, 1].iter().cycle())
        .map(|(d, w)| d * w)
        .sum();
    (10 - weighted % 10) % 10 == digits[12]
}

/// Whether `s` may stand as an SGLN extension in an EPC URI without
/// escaping: the part of the GS1 AI 254 character set that needs none.
pub fn is_extension(s: &str) -> bool {
    (1..=MAX_EXTENSION).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use crate::config::Config;

    fn parse(epcis: &str) -> Result<Config, Vec<String>> {
        let text = format!("store_id = \"s1\"\n[epcis]\n{epcis}");
        Config::parse(&text, Path::new("store.toml"), &BTreeSet::new()).map_err(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()
        })
    }

    #[test]
    fn a_store_location_with_zones() {
        let c = parse("gln = \"0614141000005\"\ncompany_prefix_digits = 7\nzones = { salesfloor = \"1\", backroom = \"BR-2\" }").unwrap();
        let e = c.epcis.unwrap();
        assert_eq!(e.gln, "0614141000005");
        assert_eq!(e.company_prefix_digits, 7);
        assert_eq!(e.zones["backroom"], "BR-2");
        assert!(parse("").is_err());
    }

    #[test]
    fn each_problem_is_named() {
        let p = parse("gln = \"0614141000006\"").unwrap_err();
        assert!(
            p[0].starts_with("epcis.gln: \"0614141000006\" is not a GLN"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("epcis.company_prefix_digits: missing"),
            "{p:?}"
        );
        let p = parse("gln = \"0614141000005\"\ncompany_prefix_digits = 13\nzones = { a = \"x y\" }\nzone = 1").unwrap_err();
        assert!(
            p[0].contains("company_prefix_digits: 13 is out of range"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("epcis.zones.a: \"x y\" is not an SGLN extension"),
            "{p:?}"
        );
        assert!(
            p[2].contains("epcis.zone: unknown key; did you mean \"zones\"?"),
            "{p:?}"
        );
    }
}
