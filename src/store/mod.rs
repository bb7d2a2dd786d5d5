//! The SQLite store (SPEC §5): where it lives, opening it with clear errors,
//! the single writer that owns all writes, and the read queries.
//!
//! Only this module speaks SQL. Writes go through `writer` (one thread owns
//! the write connection); readers open their own connections.

pub mod claim;
pub mod maintenance;
pub mod queries;
pub mod queue;
pub mod schema;
pub mod spool;
pub mod writer;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// A store error, worded for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    fn at(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError(format!("store {}: {what}: {e}", path.display()))
    }
}

/// What a SQLite error means for the person running plandeck: the cause in
/// plain words first, SQLite's own wording after it.
pub fn explain(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let Some(code) = e.sqlite_error_code() else {
        return e.to_string();
    };
    let plain = match code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "the database is locked by another process (gave up after waiting 5 s); let it finish or stop it, then try again"
        }
        ErrorCode::NotADatabase => {
            "the file is not a SQLite database (another kind of file, or damaged); pass --db with another path"
        }
        ErrorCode::DiskFull => {
            "the disk is full; free space on the filesystem that holds the database"
        }
        ErrorCode::ReadOnly => {
            "the database is read-only; check the permissions of the file and its directory"
        }
        ErrorCode::PermissionDenied => {
            "permission denied; check the permissions of the file and its directory"
        }
        ErrorCode::DatabaseCorrupt => {
            "the database file is damaged; restore it from a backup or pass --db with another path"
        }
        ErrorCode::SystemIoFailure => "an I/O error occurred reading or writing the file",
        _ => return e.to_string(),
    };
    format!("{plain} ({e})")
}

/// Below this much free space the filesystem counts as full.
const NEARLY_FULL: u64 = 1 << 20;

/// `msg`, with the likely cause added when the filesystem holding `path` is
/// (nearly) full: SQLite then often reports only "disk I/O error", because
/// the WAL index cannot grow.
pub fn note_if_disk_full(path: &Path, msg: String) -> String {
    if path == Path::new(":memory:") || msg.contains("the disk is full") {
        return msg;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match nix::sys::statvfs::statvfs(dir) {
        Ok(st) => {
            let free = st.blocks_available() * st.fragment_size();
            if free < NEARLY_FULL {
                format!(
                    "{msg}; the disk is full: {} KiB free on the filesystem that holds {}",
                    free / 1024,
                    path.display()
                )
            } else {
                msg
            }
        }
        Err(_) => msg,
    }
}

/// Why a database file cannot be opened, from the operating system's side.
fn open_failure(path: &Path, e: &rusqlite::Error) -> String {
    let why = if path.is_dir() {
        Some("it is a directory".to_string())
    } else if path.exists() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .err()
            .map(|e| e.to_string())
    } else {
        // Ask the OS whether the file can be created; leave nothing behind.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => {
                let _ = std::fs::remove_file(path);
                None
            }
            Err(e) => Some(format!("cannot create the file: {e}")),
        }
    };
    match why {
        Some(why) => format!(
            "{why}; check that the directory exists and is writable ({})",
            explain(e)
        ),
        None => explain(e),
    }
}

/// Where the database is: `--db`, else `$PLANDECK_DB`, else
/// `$XDG_DATA_HOME/plandeck/plandeck.db` (`~/.local/share/...` when unset).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PLANDECK_DB").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("plandeck").join("plandeck.db")
}

/// The location of a store: a file, or an in-memory database (`:memory:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Memory,
}

impl Location {
    pub fn from_arg(arg: Option<&Path>) -> Location {
        match arg {
            Some(p) if p == Path::new(":memory:") => Location::Memory,
            Some(p) => Location::File(p.to_path_buf()),
            None => Location::File(default_path()),
        }
    }
    pub fn display(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Memory => ":memory:".into(),
        }
    }
}

/// Open a connection with the settings and schema in place.
pub fn open(location: &Location) -> Result<Connection, StoreError> {
    let mut conn = match location {
        Location::Memory => {
            Connection::open_in_memory().map_err(|e| StoreError(format!("in-memory store: {e}")))?
        }
        Location::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::at(path, "cannot create its directory", e))?;
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(path, flags)
                .map_err(|e| StoreError::at(path, "cannot open", open_failure(path, &e)))?
        }
    };
    let path = PathBuf::from(location.display());
    schema::configure(&conn).map_err(|e| {
        StoreError::at(
            &path,
            "cannot use the database",
            note_if_disk_full(&path, explain(&e)),
        )
    })?;
    schema::migrate(&mut conn).map_err(|e| {
        StoreError::at(
            &path,
            "cannot prepare the schema",
            note_if_disk_full(&path, e),
        )
    })?;
    Ok(conn)
}

/// Open an existing store for reading; a missing file is an error, not a new store.
pub fn open_existing(location: &Location) -> Result<Connection, StoreError> {
    if let Location::File(path) = location
        && !path.exists()
    {
        return Err(StoreError(format!(
            "no store at {}: nothing has run yet with this database (pass --db PATH to use another)",
            path.display()
        )));
    }
    open(location)
}
