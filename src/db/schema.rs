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
    // 2: device health, the RFID tag state table and alerts.
    r#"
    -- Persisted copy of the in-memory health board, for `storegate status`
    -- and the API in other processes.
    CREATE TABLE device_health (
        id     TEXT PRIMARY KEY,
        health TEXT NOT NULL   -- JSON of health::DeviceHealth
    ) WITHOUT ROWID;

    -- The RFID tag state table (spec/profiles.md, RFID semantics): where
    -- each EPC was last seen. Kept in step with tag_* events; last_seen is
    -- flushed from memory every few seconds.
    CREATE TABLE tags (
        epc           TEXT PRIMARY KEY,
        zone          TEXT    NOT NULL,
        reader        TEXT    NOT NULL,
        gtin          TEXT,
        serial        TEXT,
        sku           TEXT,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        reads         INTEGER NOT NULL DEFAULT 1,
        best_rssi     INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX tags_zone ON tags(zone, last_seen_ms);

    -- One row per alert; at most one open per code and subject.
    CREATE TABLE alerts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        code         TEXT    NOT NULL,
        subject      TEXT    NOT NULL,
        severity     TEXT    NOT NULL,
        message      TEXT    NOT NULL,
        context      TEXT    NOT NULL DEFAULT '{}',
        opened_seq   INTEGER NOT NULL,
        opened_ms    INTEGER NOT NULL,
        resolved_seq INTEGER,
        resolved_ms  INTEGER
    );
    CREATE UNIQUE INDEX alerts_one_open ON alerts(code, subject) WHERE resolved_seq IS NULL;

    -- The catalog as central's price pull describes it; GTINs are stored
    -- as GTIN-14 so that any of a product's barcodes finds it.
    CREATE TABLE catalog (
        sku           TEXT PRIMARY KEY,
        name          TEXT    NOT NULL,
        unit_weight_g INTEGER,
        min_stock     INTEGER,
        removed       INTEGER NOT NULL DEFAULT 0,
        version       INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE gtins (
        gtin TEXT PRIMARY KEY,
        sku  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX gtins_sku ON gtins(sku);
    "#,
    // 3: the store domain: price book, labels, stock ledger, counts.
    r#"
    -- Price book entries as pulled from central (or imported store-only).
    CREATE TABLE prices (
        sku               TEXT    NOT NULL,
        effective_from_ms INTEGER NOT NULL,
        price_minor       INTEGER NOT NULL,
        currency          TEXT    NOT NULL,
        promo_price_minor INTEGER,
        promo_until_ms    INTEGER,
        version           INTEGER NOT NULL,
        PRIMARY KEY (sku, effective_from_ms)
    ) WITHOUT ROWID;

    -- The effective shelf price as last decided, per SKU, with the price
    -- before the last change and when it changed (for the conflict grace
    -- window and for change detection at promo boundaries).
    CREATE TABLE shelf_prices (
        sku                  TEXT PRIMARY KEY,
        price_minor          INTEGER NOT NULL,
        currency             TEXT    NOT NULL,
        promo                INTEGER NOT NULL DEFAULT 0,
        promo_until_ms       INTEGER,
        label_version        INTEGER NOT NULL,
        previous_price_minor INTEGER,
        changed_at_ms        INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Shelf labels. The price of record is what the label confirmed.
    CREATE TABLE labels (
        label_id              TEXT PRIMARY KEY,
        sku                   TEXT    NOT NULL,
        state                 TEXT    NOT NULL DEFAULT 'pending',  -- pending | ok | failed
        want_version          INTEGER,          -- the update the label should show
        sent_version          INTEGER,
        sent_at_ms            INTEGER,
        attempts              INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms       INTEGER NOT NULL DEFAULT 0,
        confirmed_version     INTEGER,
        confirmed_price_minor INTEGER,
        confirmed_currency    TEXT,
        confirmed_at_ms       INTEGER,
        battery_mv            INTEGER,
        rssi                  INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX labels_sku ON labels(sku);
    CREATE INDEX labels_due ON labels(state, next_attempt_ms);

    -- Every label update content ever decided, so a confirmation of
    -- version V tells which price the label shows.
    CREATE TABLE label_updates (
        label_id   TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        sku        TEXT    NOT NULL,
        content    TEXT    NOT NULL,   -- JSON of codecs::esl::LabelUpdate
        decided_ms INTEGER NOT NULL,
        PRIMARY KEY (label_id, version)
    ) WITHOUT ROWID;

    -- Central's stock baseline per SKU (spec/sync-api.md section 4), with
    -- the store seq it already includes. Per SKU, so that a baseline
    -- listing only some SKUs leaves the others' reckoning intact.
    CREATE TABLE stock_baseline (
        sku         TEXT PRIMARY KEY,
        on_hand     INTEGER NOT NULL,
        through_seq INTEGER NOT NULL,
        version     INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Every local stock move, kept until a baseline includes it: the
    -- ledger reconciliation needs, independent of journal retention.
    CREATE TABLE stock_moves (
        seq   INTEGER PRIMARY KEY,
        sku   TEXT    NOT NULL,
        delta INTEGER NOT NULL
    );
    CREATE INDEX stock_moves_sku ON stock_moves(sku);

    -- On hand per SKU = baseline + moves after its through_seq.
    CREATE TABLE stock (
        sku     TEXT PRIMARY KEY,
        on_hand INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Unacknowledged events dropped under the disk quota: the pusher may
    -- skip these seqs, and says so to central.
    CREATE TABLE dropped_ranges (
        first_seq INTEGER PRIMARY KEY,
        last_seq  INTEGER NOT NULL,
        at_ms     INTEGER NOT NULL
    );

    -- The last count of each SKU, for the staff page.
    CREATE TABLE last_counts (
        sku        TEXT PRIMARY KEY,
        session_id TEXT    NOT NULL,
        zone       TEXT    NOT NULL,
        counted    INTEGER NOT NULL,
        expected   INTEGER NOT NULL,
        method     TEXT    NOT NULL,
        at_ms      INTEGER NOT NULL
    ) WITHOUT ROWID;

    "#,
    // 4: the quarantine keeps only the head of large input; `size` is how
    // large it was (NULL for rows from before).
    r#"
    ALTER TABLE quarantine ADD COLUMN size INTEGER;
    "#,
    // 5: when a label last checked in, as its last `label_health` event
    // said (a projection, like its battery and signal).
    r#"
    ALTER TABLE labels ADD COLUMN last_seen_ms INTEGER;
    "#,
    // 6: configurations central sent (spec/fleet.md 4) and what became of
    // each: the one on trial or active is what a (re)start runs; rejected
    // and rolled back ones are never tried again.
    r#"
    CREATE TABLE central_config (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        version    INTEGER NOT NULL,
        sha256     TEXT    NOT NULL,
        toml       TEXT    NOT NULL,
        state      TEXT    NOT NULL,   -- trial | active | retired | rejected | rolled_back
        problems   TEXT,               -- why it was rejected or rolled back
        up_before  TEXT    NOT NULL DEFAULT '[]',  -- JSON: devices up when it was applied
        at_ms      INTEGER NOT NULL,
        decided_ms INTEGER
    );
    CREATE INDEX central_config_sha256 ON central_config(sha256);
    "#,
    // 7: handheld sled count sessions (POST /v1/counts/epcs) and the
    // distinct tags each has seen. A session row outlives its tags so that
    // its id is never reused and a resent close gets the same answer.
    r#"
    CREATE TABLE sled_sessions (
        session_id  TEXT PRIMARY KEY,
        zone        TEXT    NOT NULL,
        state       TEXT    NOT NULL,   -- open | closed | expired
        opened_ms   INTEGER NOT NULL,
        touched_ms  INTEGER NOT NULL,   -- last request
        products    INTEGER NOT NULL DEFAULT 0,
        non_product INTEGER NOT NULL DEFAULT 0,
        malformed   INTEGER NOT NULL DEFAULT 0,
        result      TEXT,              -- JSON of the closing answer
        tags_dropped INTEGER NOT NULL DEFAULT 0  -- 1 once its sled_tags are gone
    ) WITHOUT ROWID;
    -- Only sessions that still have tags: what expiry looks at, however
    -- many old sessions have piled up.
    CREATE INDEX sled_sessions_live ON sled_sessions(touched_ms) WHERE tags_dropped = 0;

    -- One row per distinct tag (GTIN/serial, non-product hex, or the head
    -- of a malformed line) of a session.
    CREATE TABLE sled_tags (
        session_id TEXT NOT NULL,
        tag        TEXT NOT NULL,
        kind       TEXT NOT NULL,   -- product | non_product | malformed
        gtin       TEXT,            -- products only
        PRIMARY KEY (session_id, tag)
    ) WITHOUT ROWID;
    "#,
    // 8: click-and-collect pickup orders (spec/sync-api.md 6). An order
    // event moves stock for several SKUs (order_handed_over), so a stock
    // move is keyed by seq and SKU from now on.
    r#"
    CREATE TABLE stock_moves_by_sku (
        seq   INTEGER NOT NULL,
        sku   TEXT    NOT NULL,
        delta INTEGER NOT NULL,
        PRIMARY KEY (seq, sku)
    ) WITHOUT ROWID;
    INSERT INTO stock_moves_by_sku (seq, sku, delta) SELECT seq, sku, delta FROM stock_moves;
    DROP TABLE stock_moves;
    ALTER TABLE stock_moves_by_sku RENAME TO stock_moves;
    CREATE INDEX stock_moves_sku ON stock_moves(sku, seq);

    -- Where the orders pull stands (the `since` of the next pull).
    ALTER TABLE sync_state ADD COLUMN orders_version INTEGER NOT NULL DEFAULT 0;

    -- One row per order central sent. The pickup code is kept only as a
    -- keyed hash (domain::pickup::code); state: open (reserved, being
    -- picked) | picked | handed_over | expired | cancelled.
    CREATE TABLE pickup_orders (
        order_id     TEXT PRIMARY KEY,
        code_hash    TEXT    NOT NULL,
        state        TEXT    NOT NULL,
        promised_ms  INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        pulled_ms    INTEGER NOT NULL,
        closed_seq   INTEGER,          -- the event that ended it
        wrong_codes  INTEGER NOT NULL DEFAULT 0,
        locked_until_ms INTEGER,       -- handover refused until then (too many wrong codes)
        return_open  INTEGER NOT NULL DEFAULT 0  -- picked items still to go back to the shelf
    ) WITHOUT ROWID;
    -- Only live orders: what expiry and the reservation sum look at.
    CREATE INDEX pickup_orders_live ON pickup_orders(expires_ms) WHERE state IN ('open', 'picked');

    -- The lines of an order: ordered qty, what the scans picked so far,
    -- and what is reserved (qty until picked, then what was picked).
    CREATE TABLE pickup_lines (
        order_id TEXT    NOT NULL,
        sku      TEXT    NOT NULL,
        qty      INTEGER NOT NULL,
        picked   INTEGER NOT NULL DEFAULT 0,
        reserved INTEGER NOT NULL,
        PRIMARY KEY (order_id, sku)
    ) WITHOUT ROWID;
    CREATE INDEX pickup_lines_sku ON pickup_lines(sku) WHERE reserved > 0;

    -- The RFID tags scanned into an order: one row per item (GTIN and
    -- serial, however the tag was encoded), however often a sled or pad
    -- reads it; `epc` as first read, for the order_picked event.
    CREATE TABLE pickup_epcs (
        order_id TEXT NOT NULL,
        item     TEXT NOT NULL,
        epc      TEXT NOT NULL,
        sku      TEXT NOT NULL,
        PRIMARY KEY (order_id, item)
    ) WITHOUT ROWID;
    CREATE INDEX pickup_epcs_item ON pickup_epcs(item);
    "#,
    // 9: staff tasks (issue 18): the projection of task_* events, one row
    // per task; and the price book's optional `max_stock`, what a refill
    // fills up to.
    r#"
    ALTER TABLE catalog ADD COLUMN max_stock INTEGER;
    CREATE TABLE tasks (
        task_id      TEXT PRIMARY KEY,
        task         TEXT    NOT NULL,   -- refill | relabel | count | check_device
        alert_code   TEXT    NOT NULL,
        subject      TEXT    NOT NULL,
        urgency      INTEGER NOT NULL,   -- 2 critical, 1 warning, 0 info
        opened       TEXT    NOT NULL,   -- JSON of the task_opened data
        zone         TEXT,
        state        TEXT    NOT NULL,   -- open | taken | done | dismissed
        taken_by     TEXT,
        done_by      TEXT,
        confirmed_by TEXT,               -- what the store saw (verification)
        reason       TEXT,               -- dismissal or last reopening
        check_at_ms  INTEGER,            -- a person's done is checked then
        reopened     INTEGER NOT NULL DEFAULT 0,
        opened_seq   INTEGER NOT NULL,
        opened_ms    INTEGER NOT NULL,
        updated_seq  INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tasks_alert ON tasks(alert_code, subject, opened_seq);
    CREATE INDEX tasks_state ON tasks(state, urgency, opened_seq);
    CREATE INDEX tasks_to_check ON tasks(check_at_ms)
        WHERE state = 'done' AND confirmed_by IS NULL;
    "#,
    // 10: who bound a label to its SKU. `bound_by` is `central` (its
    // price book lists the label under the SKU) or `store` (staff bound
    // or unbound it: `label_bound`/`label_unbound`); `central_sku` is what
    // central's book last said about the label, so that a pull overrides
    // a store binding only when central's word about the label changed.
    // A label the store unbound stays as a row in state `unbound` (sku
    // '') while central's book still lists it, so that the next pull of
    // an unchanged book does not bind it again.
    r#"
    ALTER TABLE labels ADD COLUMN bound_by TEXT NOT NULL DEFAULT 'central';
    ALTER TABLE labels ADD COLUMN central_sku TEXT;
    UPDATE labels SET central_sku = sku;
    "#,
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}
