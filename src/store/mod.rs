//! The SQLite store (SPEC §5): where it lives, opening it with clear errors,
//! the single writer that owns all writes, and the read queries.
//!
//! Only this module speaks SQL. Writes go through `writer` (one thread owns
//! the write connection); readers open their own connections.

pub mod queries;
pub mod schema;
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
                .map_err(|e| StoreError::at(path, "cannot open", e))?
        }
    };
    let path = PathBuf::from(location.display());
    schema::configure(&conn)
        .map_err(|e| StoreError::at(&path, "not a usable SQLite database", e))?;
    schema::migrate(&mut conn)
        .map_err(|e| StoreError::at(&path, "cannot prepare the schema", e))?;
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
