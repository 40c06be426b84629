//! Central-managed configuration (spec/fleet.md section 4) layered over
//! the local file. The local file is the bootstrap: it alone says who the
//! store is, where its data lives and how it reaches central and its
//! staff ([`BOOTSTRAP_KEYS`]). Central's TOML may set every other
//! top-level key, and each one it sets replaces the local one wholesale:
//! a central `[[device]]` list replaces the local list, a central
//! `[pricing]` table replaces the local `[pricing]` table. Keys central
//! does not set keep their local value.

use sha2::{Digest, Sha256};
use toml::Table;

use super::Problem;

/// Top-level keys only the local file may set: a central config naming
/// one is rejected, never partly applied.
pub const BOOTSTRAP_KEYS: [&str; 4] = ["store_id", "data_dir", "central", "api"];

/// The sha256 of a central config's text, in hex: its identity, sent back
/// as `If-None-Match` and remembered for configs never to try again.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The effective table: `local` with every top-level key of `central`
/// replacing its local value. Every problem of central's text is
/// returned at once: TOML that does not parse, or bootstrap keys.
pub fn merge(local: &Table, central_text: &str) -> Result<Table, Vec<Problem>> {
    let central: Table = central_text.parse().map_err(|e: toml::de::Error| {
        vec![Problem {
            key: String::new(),
            message: format!(
                "central's config is not valid TOML: {}",
                e.to_string().trim_end()
            ),
            ..Default::default()
        }]
    })?;
    let problems: Vec<Problem> = BOOTSTRAP_KEYS
        .iter()
        .filter(|k| central.contains_key(**k))
        .map(|k| Problem {
            key: (*k).to_string(),
            message: "is a bootstrap key: only the store's own file (/etc/storegate/storegate.toml) sets store_id, data_dir, [central] and [api]; remove it from central's config".into(),
            ..Default::default()
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut merged = local.clone();
    for (key, value) in central {
        merged.insert(key, value);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn central_keys_replace_local_ones_wholesale() {
        let local = table(
            "store_id = \"s1\"\nlocale = \"de-DE\"\n[pricing]\nconflict_grace_s = 5\n[[device]]\nid = \"a\"\n[[device]]\nid = \"b\"\n",
        );
        let merged = merge(&local, "locale = \"fr-FR\"\n[[device]]\nid = \"c\"\n").unwrap();
        assert_eq!(merged["store_id"].as_str(), Some("s1"));
        assert_eq!(merged["locale"].as_str(), Some("fr-FR"));
        assert_eq!(merged["pricing"]["conflict_grace_s"].as_integer(), Some(5));
        let devices = merged["device"].as_array().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0]["id"].as_str(), Some("c"));
    }

    #[test]
    fn every_bootstrap_key_is_named() {
        let p = merge(
            &Table::new(),
            "store_id = \"x\"\ndata_dir = \"/tmp\"\n[central]\nurl = \"http://evil\"\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["store_id", "data_dir", "central"]);
        assert!(p[0].message.contains("remove it from central's config"));
    }

    #[test]
    fn bad_toml_is_one_problem_with_its_position() {
        let p = merge(&Table::new(), "locale = \n").unwrap_err();
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("line 1"), "{p:?}");
    }

    #[test]
    fn the_sha_is_of_the_text() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
