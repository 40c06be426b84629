//! What the quarantine may keep of bad POS input: no customer identity in
//! clear (DESIGN invariant 11), and the keyed hash that replaces it, which
//! is also how a decoded receipt carries its member id.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::compile::PosMapping;

/// Keys of POS input that may hold a customer's identity, besides the
/// profile's own `member_id` path: matched case-insensitively as parts of
/// a key, since a till may send one the profile does not read.
const CUSTOMER_KEY_PARTS: [&str; 4] = ["member", "loyalty", "customer", "card"];

/// The raw bytes of bad POS input as the quarantine keeps them (DESIGN
/// invariant 11): every value under a member id key (the profile's, or a
/// key like [`CUSTOMER_KEY_PARTS`]) replaced by its keyed hash. Input that
/// is not JSON is not kept at all, since a member id in it cannot be found;
/// the reason and the size still say what was wrong.
pub(super) fn redact_pos_raw(raw: &mut Vec<u8>, m: &PosMapping, key: &[u8]) {
    let Ok(mut value) = serde_json::from_slice::<Value>(raw) else {
        raw.clear();
        return;
    };
    let own: Vec<&str> = m
        .member_id
        .iter()
        .flat_map(|f| f.sources.iter())
        .filter_map(|s| s.path.text.rsplit('.').next())
        .collect();
    // Bytes without a customer key stay as the till sent them.
    if redact_customer_values(&mut value, &own, key) {
        *raw = serde_json::to_vec(&value).unwrap_or_default();
    }
}

/// Replace customer values in place; returns whether there were any.
fn redact_customer_values(value: &mut Value, own: &[&str], key: &[u8]) -> bool {
    let mut found = false;
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                let lower = name.to_ascii_lowercase();
                let customer = own.contains(&name.as_str())
                    || CUSTOMER_KEY_PARTS.iter().any(|p| lower.contains(p));
                if customer {
                    let text = match &*v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    *v = Value::String(match keyed_hash(key, &text) {
                        Some(h) => format!("hashed:{h}"),
                        None => "removed".into(),
                    });
                    found = true;
                } else {
                    found |= redact_customer_values(v, own, key);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                found |= redact_customer_values(v, own, key);
            }
        }
        _ => {}
    }
    found
}

/// First 32 hex digits of HMAC-SHA256(key, member id).
pub(super) fn keyed_hash(key: &[u8], member_id: &str) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(member_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    Some(hex::encode(digest.get(..16)?))
}
