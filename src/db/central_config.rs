//! The `central_config` table: every configuration central sent
//! (spec/fleet.md 4) and what became of it. At most one row is on
//! `trial` (applied, waiting for its devices); the newest `active` row is
//! the one that passed its trial; `retired` ones were replaced;
//! `rejected` and `rolled_back` ones are never tried again. What a start
//! runs is [`running`]: the trial, else the newest active row, else the
//! local file alone.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqlContext, StoreError};

/// A central config on trial: applied, its devices not yet all back.
pub const TRIAL: &str = "trial";
/// Passed its trial; what runs until central sends another.
pub const ACTIVE: &str = "active";
/// Was active, replaced by a newer one that passed its trial.
pub const RETIRED: &str = "retired";
/// Did not validate; never tried.
pub const REJECTED: &str = "rejected";
/// Its devices did not come back within `config_rollback_s`.
pub const ROLLED_BACK: &str = "rolled_back";

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConfig {
    pub id: i64,
    pub version: i64,
    pub sha256: String,
    pub toml: String,
    pub state: String,
    pub problems: Option<String>,
    /// Devices that were up when it was applied: the ones that must come
    /// back for it to pass its trial.
    pub up_before: Vec<String>,
    pub at_ms: i64,
}

const COLUMNS: &str = "id, version, sha256, toml, state, problems, up_before, at_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredConfig> {
    let up: String = r.get(6)?;
    Ok(StoredConfig {
        id: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        toml: r.get(3)?,
        state: r.get(4)?,
        problems: r.get(5)?,
        up_before: serde_json::from_str(&up).unwrap_or_default(),
        at_ms: r.get(7)?,
    })
}

fn one(conn: &Connection, sql: &str) -> Result<Option<StoredConfig>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.query_row([], row).optional())
        .ctx("reading central_config")
}

/// The config a start runs: the one on trial, else the newest active one;
/// `None`: the local file alone.
pub fn running(conn: &Connection) -> Result<Option<StoredConfig>, StoreError> {
    match one(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM central_config WHERE state = 'trial' ORDER BY id DESC LIMIT 1"
        ),
    )? {
        Some(trial) => Ok(Some(trial)),
        None => newest_active(conn),
    }
}

/// The newest config that passed its trial: what a rollback goes back to.
pub fn newest_active(conn: &Connection) -> Result<Option<StoredConfig>, StoreError> {
    one(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM central_config WHERE state = 'active' ORDER BY id DESC LIMIT 1"
        ),
    )
}

/// The newest row of any state: its sha256 is what the agent last got
/// from central (sent as `If-None-Match`, so an unchanged config, refused
/// or not, costs a 304).
pub fn newest(conn: &Connection) -> Result<Option<StoredConfig>, StoreError> {
    one(
        conn,
        &format!("SELECT {COLUMNS} FROM central_config ORDER BY id DESC LIMIT 1"),
    )
}

/// The state of the newest row with this sha256, if central sent it before.
pub fn state_of(conn: &Connection, sha256: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached(
        "SELECT state FROM central_config WHERE sha256 = ?1 ORDER BY id DESC LIMIT 1",
    )
    .and_then(|mut st| st.query_row([sha256], |r| r.get(0)).optional())
    .ctx("reading central_config")
}

/// Whether this config was rejected or rolled back: never to be tried again.
pub fn is_refused(conn: &Connection, sha256: &str) -> Result<bool, StoreError> {
    Ok(matches!(
        state_of(conn, sha256)?.as_deref(),
        Some(REJECTED | ROLLED_BACK)
    ))
}

/// Record a config central sent, in `state`. Returns its id.
pub fn insert(
    conn: &Connection,
    version: i64,
    sha256: &str,
    toml: &str,
    state: &str,
    problems: Option<&str>,
    up_before: &[String],
) -> Result<i64, StoreError> {
    let up = serde_json::to_string(up_before).unwrap_or_else(|_| "[]".into());
    let now = chrono::Utc::now().timestamp_millis();
    if state == TRIAL {
        // A newer config replaces one still on trial: one trial at a time.
        conn.execute(
            "UPDATE central_config SET state = 'retired', decided_ms = ?1 WHERE state = 'trial'",
            [now],
        )
        .ctx("retiring a trial")?;
    }
    conn.prepare_cached(
        "INSERT INTO central_config (version, sha256, toml, state, problems, up_before, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| st.execute(params![version, sha256, toml, state, problems, up, now]))
    .ctx("recording a central config")?;
    Ok(conn.last_insert_rowid())
}

/// A trial ends: `passed` makes it the active config (retiring the one
/// before); otherwise it is rolled back with `why`.
pub fn decide(
    conn: &Connection,
    id: i64,
    passed: bool,
    why: Option<&str>,
) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    if passed {
        conn.execute(
            "UPDATE central_config SET state = 'retired' WHERE state = 'active' AND id <> ?1",
            [id],
        )
        .ctx("retiring the previous central config")?;
    }
    let state = if passed { ACTIVE } else { ROLLED_BACK };
    conn.execute(
        "UPDATE central_config SET state = ?2, problems = COALESCE(?3, problems), decided_ms = ?4 WHERE id = ?1",
        params![id, state, why, now],
    )
    .ctx("deciding a central config's trial")?;
    Ok(())
}

/// The version of the newest row when it was rejected: what the
/// heartbeat reports as `config_rejected_version`.
pub fn rejected_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(newest(conn)?
        .filter(|c| c.state == REJECTED)
        .map(|c| c.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn =
            crate::db::open_write(&dir.path().join("t.db"), crate::config::Durability::Normal)
                .unwrap();
        (dir, conn)
    }

    #[test]
    fn a_trial_runs_until_decided_then_the_active_one() {
        let (_dir, c) = conn();
        assert_eq!(running(&c).unwrap(), None);
        let a = insert(&c, 1, "aa", "x", TRIAL, None, &["d1".into()]).unwrap();
        assert_eq!(running(&c).unwrap().unwrap().up_before, ["d1"]);
        decide(&c, a, true, None).unwrap();
        let b = insert(&c, 2, "bb", "y", TRIAL, None, &[]).unwrap();
        assert_eq!(running(&c).unwrap().unwrap().id, b);
        decide(&c, b, false, Some("d1 did not come back")).unwrap();
        let now = running(&c).unwrap().unwrap();
        assert_eq!((now.id, now.state.as_str()), (a, ACTIVE));
        assert!(is_refused(&c, "bb").unwrap());
        assert!(!is_refused(&c, "aa").unwrap());
        let c3 = insert(&c, 3, "cc", "z", TRIAL, None, &[]).unwrap();
        decide(&c, c3, true, None).unwrap();
        assert_eq!(state_of(&c, "aa").unwrap().as_deref(), Some(RETIRED));
        insert(&c, 4, "dd", "bad", REJECTED, Some("p"), &[]).unwrap();
        assert_eq!(rejected_version(&c).unwrap(), Some(4));
        assert_eq!(running(&c).unwrap().unwrap().version, 3);
    }
}
