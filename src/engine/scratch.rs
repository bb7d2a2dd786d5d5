//! A run's private scratch directory, where its attempts write their
//! outputs files: `$TMPDIR/plandeck-<run id>`, mode 0700, each file in it
//! 0600, so another user cannot read an output while a step runs.
//!
//! Created with `mkdir` (which fails on anything already there, so nobody
//! can slip a directory or symlink in first) and files with `O_EXCL`.
//! Removed on every exit path: just before the run's end is committed (a
//! kill right after that commit must not leave it: an ended run is never
//! resumed), when the run's driver stops otherwise (`Scratch` removes it on
//! drop), from the panic hook (`remove_all_now`), and by whoever ends a run
//! whose owner is gone (`remove_for`). A driver fenced off by a new owner
//! leaves it to that owner (`leave`). Never removes what another user owns
//! or a symlink.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// Scratch directories of this process's runs, for the panic hook.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Where a run's scratch directory is.
pub fn path_for(run_id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("plandeck-{run_id}"))
}

/// Whether `path` is a real directory (not a symlink) of this user.
fn ours(path: &Path) -> Option<bool> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw())
}

/// Remove a run's scratch directory, if it is there and this user's (a
/// previous owner's, left by a crash). Says why when it cannot.
pub fn remove_for(run_id: &str) -> Result<(), String> {
    let path = path_for(run_id);
    match ours(&path) {
        None => Ok(()),
        Some(true) => std::fs::remove_dir_all(&path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display())),
        Some(false) => Err(format!(
            "{} exists but is not a directory of this user; remove it",
            path.display()
        )),
    }
}

/// The process is dying: remove every scratch directory it made.
pub fn remove_all_now() {
    let live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    for p in live.iter() {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// A run's scratch directory, removed when this is dropped (unless left).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    left: bool,
}

impl Scratch {
    /// Make the run's directory afresh (a stale one of this user is removed first).
    pub fn create(run_id: &str) -> Result<Scratch, String> {
        remove_for(run_id)?;
        let path = path_for(run_id);
        DirBuilder::new().mode(0o700).create(&path).map_err(|e| {
            format!(
                "cannot create the scratch directory {}: {e}",
                path.display()
            )
        })?;
        // The umask may take bits away, never add them; make it exactly 0700.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", path.display()))?;
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path.clone());
        Ok(Scratch { path, left: false })
    }

    /// The run belongs to another process now, which made this directory
    /// its own: forget it here without removing it.
    pub fn leave(mut self) {
        self.left = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.left {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        LIVE.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| *p != self.path);
    }
}

/// Create an empty file only this user can read, failing if anything is
/// already at `path`.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directory_and_files_removed_on_drop() {
        let id = format!("test-{}", uuid::Uuid::new_v4());
        let s = Scratch::create(&id).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).ok();
        assert_eq!(mode(s.path()), Some(0o700));
        let f = s.path().join("a.out");
        create_private_file(&f).expect("file created");
        assert_eq!(mode(&f), Some(0o600));
        assert!(
            create_private_file(&f).is_err(),
            "never opens what is there"
        );
        let path = s.path().to_path_buf();
        drop(s);
        assert!(!path.exists());
    }

    #[test]
    fn a_left_directory_stays_for_its_new_owner() {
        let id = format!("test-{}", uuid::Uuid::new_v4());
        let s = Scratch::create(&id).expect("created");
        let path = s.path().to_path_buf();
        s.leave();
        assert!(path.is_dir());
        assert!(!LIVE.lock().expect("live").contains(&path));
        remove_for(&id).expect("removed");
    }

    #[test]
    fn a_symlink_in_its_place_is_refused_not_followed() {
        let id = format!("test-{}", uuid::Uuid::new_v4());
        let target = tempfile::tempdir().expect("a directory");
        std::os::unix::fs::symlink(target.path(), path_for(&id)).expect("symlink");
        let err = Scratch::create(&id).expect_err("refused");
        assert!(err.contains("not a directory of this user"), "{err}");
        assert!(target.path().exists());
        std::fs::remove_file(path_for(&id)).expect("symlink removed");
    }
}
