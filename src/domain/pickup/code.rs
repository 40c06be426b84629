//! The customer's pickup code, kept only as a keyed hash: HMAC-SHA256
//! under the store's secret ([`crate::domain::privacy`]), bound to the
//! order id so that the same code on two orders hashes differently. It is
//! compared in constant time and never journaled, logged or pushed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::privacy::MemberKey;

/// A pickup code as central sent it or staff typed it. Its `Debug` shows
/// nothing, so that no log line can carry it.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct PickupCode(String);

impl PickupCode {
    /// Wrap a code typed by staff.
    pub fn new(code: impl Into<String>) -> PickupCode {
        PickupCode(code.into())
    }

    /// Whether the code is usable: 1 to 64 printable characters.
    pub fn is_plausible(&self) -> bool {
        let c = self.0.trim();
        !c.is_empty() && c.len() <= 64 && !c.chars().any(char::is_control)
    }
}

impl std::fmt::Debug for PickupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PickupCode(..)")
    }
}

fn mac(key: &MemberKey, order_id: &str, code: &PickupCode) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the store key is 32 bytes.
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(b"pickup\0");
    mac.update(order_id.as_bytes());
    mac.update(b"\0");
    mac.update(code.0.trim().as_bytes());
    mac
}

/// The hex keyed hash stored for an order's code.
pub fn hash(key: &MemberKey, order_id: &str, code: &PickupCode) -> String {
    hex::encode(mac(key, order_id, code).finalize().into_bytes())
}

/// Whether `code` is the order's code, compared in constant time.
pub fn matches(key: &MemberKey, order_id: &str, code: &PickupCode, stored_hex: &str) -> bool {
    let Ok(stored) = hex::decode(stored_hex) else {
        return false;
    };
    mac(key, order_id, code).verify_slice(&stored).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MemberKey {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::db::schema::MIGRATIONS[0])
            .unwrap();
        crate::domain::privacy::member_key(&conn).unwrap()
    }

    #[test]
    fn the_right_code_matches_and_others_do_not() {
        let k = key();
        let stored = hash(&k, "WEB-1", &PickupCode::new("4711"));
        assert!(!stored.contains("4711"));
        assert!(matches(&k, "WEB-1", &PickupCode::new(" 4711 "), &stored));
        assert!(!matches(&k, "WEB-1", &PickupCode::new("4712"), &stored));
        assert!(!matches(&k, "WEB-2", &PickupCode::new("4711"), &stored));
        assert!(!matches(&k, "WEB-1", &PickupCode::new("4711"), "zz"));
        assert_eq!(format!("{:?}", PickupCode::new("4711")), "PickupCode(..)");
    }
}
