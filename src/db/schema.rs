//! Versioned schema migrations. Migration N brings `PRAGMA user_version`
//! from N-1 to N; a migration, once released, is never edited: changes
//! come as a new one at the end.

pub const MIGRATIONS: &[&str] = &[
    // 1: the journal and the tables every part of the house needs.
    r#"
    -- The journal is the truth and the outbox. AUTOINCREMENT: a seq is
    -- never handed out twice, even after the head was trimmed away.
    CREATE TABLE journal (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_ms  INTEGER NOT NULL,
        device TEXT    NOT NULL,
        kind   TEXT    NOT NULL,
        data   TEXT    NOT NULL
    );
    CREATE INDEX journal_kind ON journal(kind);

    -- Natural keys of events that must be journaled once however often a
    -- device redelivers them; kept longer than the journal itself.
    CREATE TABLE natural_keys (
        key   TEXT PRIMARY KEY,
        seq   INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Input that did not parse, raw bytes and all, for inspection.
    CREATE TABLE quarantine (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms  INTEGER NOT NULL,
        device TEXT    NOT NULL,
        reason TEXT    NOT NULL,
        raw    BLOB    NOT NULL
    );

    -- Exactly one row: where the push to central stands.
    CREATE TABLE sync_state (
        id                   INTEGER PRIMARY KEY CHECK (id = 1),
        last_acked_seq       INTEGER NOT NULL DEFAULT 0,
        price_version        INTEGER NOT NULL DEFAULT 0,
        stock_version        INTEGER NOT NULL DEFAULT 0,
        last_attempt_ms      INTEGER,
        last_success_ms      INTEGER,
        last_error           TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO sync_state (id) VALUES (1);

    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}
