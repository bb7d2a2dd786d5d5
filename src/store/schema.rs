//! The database schema as forward migrations keyed on `PRAGMA user_version`,
//! and the connection settings every plandeck connection uses.
//!
//! Migrations only ever move forward; each runs in one transaction. Never
//! edit a released migration: add a new one.

use rusqlite::Connection;

use super::explain;

/// Migrations in order; migration `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: plans, runs, step states, attempts, events.
    "
    CREATE TABLE plans (
        hash        TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        source      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        plan_hash        TEXT NOT NULL REFERENCES plans(hash),
        plan_name        TEXT NOT NULL,
        plan_path        TEXT,
        base_dir         TEXT NOT NULL,
        state            TEXT NOT NULL,
        reason           TEXT,
        inputs           TEXT NOT NULL DEFAULT '{}',
        max_concurrency  INTEGER,
        approved_by      TEXT,
        approved_at      TEXT,
        approved_hash    TEXT,
        owner_pid        INTEGER,
        owner_host       TEXT,
        owner_started_at TEXT,
        heartbeat_at     TEXT,
        created_at       TEXT NOT NULL,
        started_at       TEXT,
        ended_at         TEXT
    );
    CREATE INDEX runs_by_plan ON runs(plan_name, created_at);
    CREATE TABLE steps (
        run_id   TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id  TEXT NOT NULL,
        state    TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason   TEXT,
        PRIMARY KEY (run_id, step_id)
    ) WITHOUT ROWID;
    CREATE TABLE step_attempts (
        run_id           TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        step_id          TEXT NOT NULL,
        attempt          INTEGER NOT NULL,
        role             TEXT NOT NULL DEFAULT 'step',
        state            TEXT NOT NULL,
        pgid             INTEGER,
        started_at       TEXT NOT NULL,
        ended_at         TEXT,
        duration_ms      INTEGER,
        exit_code        INTEGER,
        signal           INTEGER,
        error_class      TEXT,
        message          TEXT,
        outputs          TEXT,
        stdout           TEXT,
        stderr           TEXT,
        stdout_truncated INTEGER NOT NULL DEFAULT 0,
        stderr_truncated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, step_id, attempt)
    );
    CREATE TABLE events (
        run_id  TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq     INTEGER NOT NULL,
        ts      TEXT NOT NULL,
        type    TEXT NOT NULL,
        step_id TEXT,
        payload TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    ",
    // 2: indexes for reports: attempts by state (failed attempts, running ones
    // left behind) and a run's events by type.
    "
    CREATE INDEX step_attempts_by_state ON step_attempts(state);
    CREATE INDEX events_by_type ON events(run_id, type);
    ",
    // 3: the run queue: a queued run's priority and when it joined (both
    // NULL for a run not started through the queue), and stored settings
    // (`queue.parallel`).
    "
    ALTER TABLE runs ADD COLUMN queue_priority INTEGER;
    ALTER TABLE runs ADD COLUMN queued_at TEXT;
    CREATE INDEX runs_in_queue ON runs(state) WHERE queue_priority IS NOT NULL;
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    // 4: ownership fencing. `owner_epoch` moves on with every claim of a
    // run; an owner's writes are refused once it has moved on. The owner's
    // process start time (clock ticks since boot, and the boot it counts
    // from) tells a live owner from a reused pid. `containment` says how the
    // run's processes are held together (shown by `plandeck show`).
    "
    ALTER TABLE runs ADD COLUMN owner_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN owner_start_ticks INTEGER;
    ALTER TABLE runs ADD COLUMN owner_boot_id TEXT;
    ALTER TABLE runs ADD COLUMN containment TEXT;
    ",
    // 5: remote attempts. `remote` is the durable handle (JSON, tagged by
    // `kind`) of an attempt whose process is not a child of the driving
    // plandeck (a detached step's supervisor, ...): a later owner adopts the
    // attempt through it, or records its result, instead of running it again.
    "
    ALTER TABLE step_attempts ADD COLUMN remote TEXT;
    ",
];

/// The schema version this build writes.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings for every connection: WAL, NORMAL sync, foreign keys, a busy timeout.
///
/// `synchronous = NORMAL` in WAL mode: a crash of plandeck loses nothing that
/// was committed; a power loss or kernel crash may lose the last transactions
/// committed before the next WAL sync, never the database's consistency.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;",
    )?;
    Ok(())
}

/// Bring the schema up to `VERSION`. Refuses a database newer than this build.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| explain(&e))?;
    if current > VERSION {
        return Err(format!(
            "the database has schema version {current}, newer than this plandeck understands ({VERSION}); upgrade plandeck"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(|e| explain(&e))?;
        tx.execute_batch(sql)
            .map_err(|e| format!("migration {} failed: {}", i + 1, explain(&e)))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(|e| explain(&e))?;
        tx.commit().map_err(|e| explain(&e))?;
    }
    Ok(())
}
