//! Privacy: no customer personal data is stored. A loyalty member id in a
//! POS payload is replaced by a keyed hash (HMAC-SHA256 in the json codec)
//! under a secret generated once per store and kept in the database, so
//! the same member gives the same hash in this store and the hash cannot be
//! reversed or matched across stores without the key.

use rand::RngCore;
use rusqlite::{Connection, OptionalExtension};

use crate::db::{SqlContext, StoreError, Writer};

/// The store's secret for hashing loyalty member ids. Only [`member_key`]
/// makes one, from the database, so ingest cannot run with a key every
/// store shares (an empty one, as it once did). Its `Debug` shows nothing.
#[derive(Clone)]
pub struct MemberKey(Vec<u8>);

impl MemberKey {
    /// The store's key, created in the database on first use.
    pub async fn load(writer: &Writer) -> Result<MemberKey, StoreError> {
        writer.transact(|w| member_key(w.conn())).await
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemberKey(..)")
    }
}

/// The store's member-id hashing key, created on first use and kept in
/// the `settings` table (so it travels with backups of the database).
pub fn member_key(conn: &Connection) -> Result<MemberKey, StoreError> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'member_key'",
            [],
            |r| r.get(0),
        )
        .optional()
        .ctx("reading the member key")?;
    if let Some(k) = existing
        .and_then(|h| hex::decode(h).ok())
        .filter(|k| k.len() == 32)
    {
        return Ok(MemberKey(k));
    }
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('member_key', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [hex::encode(&key)],
    )
    .ctx("storing the member key")?;
    Ok(MemberKey(key))
}
