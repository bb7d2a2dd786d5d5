//! Host pools (SPEC §10): units of a pool shared by every plandeck run on
//! the machine, whatever its plan, database or working directory.
//!
//! Each unit is a slot file `NAME.N` (N from 0 to capacity - 1) in one
//! per-machine directory; a unit is held by holding an exclusive `flock` on
//! its file. The kernel drops the lock when the holding process dies, so the
//! units of a killed plandeck are free at once: there is no lease to time
//! out and nothing to clean up. While held, the file says who holds it (run,
//! step, plan, pid), for the reason a waiting step shows.
//!
//! The directory is `$PLANDECK_POOL_DIR` when set, else `/run/lock/plandeck`
//! when `/run/lock` is writable, else `plandeck-pools` in the temporary
//! directory. It is created world-writable with the sticky bit (mode 1777,
//! as `/tmp`), slot files are created mode 0666: every local user's
//! plandeck shares the machine's pools, and nobody can delete another's files.
//!
//! Never blocks: every lock is a try-lock; the engine polls a waiting step.
//! Never follows a symlink or locks anything but a regular file. Lock files
//! are opened close-on-exec, so a step never inherits (and never keeps
//! alive) a unit held by its plandeck.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The environment variable that overrides the pool directory.
pub const DIR_ENV: &str = "PLANDECK_POOL_DIR";

/// The most units a host pool may have: each unit is a file.
pub const MAX_CAPACITY: u32 = crate::plan::limits::HOST_CAPACITY.max as u32;

/// One host pool a step needs units of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub pool: String,
    pub capacity: u32,
    pub units: u32,
}

/// Host pools as the run's state machine sees them: take units for a step
/// without waiting (all or nothing), give them back when its attempt ends.
pub trait HostPools: Send {
    /// Take `wants` for step `step` (`step_id` names it to others); on
    /// failure nothing is held and the error says what the step waits for.
    fn try_take(&mut self, step: usize, step_id: &str, wants: &[Want]) -> Result<(), String>;
    /// Give back what step `step` holds (nothing if it holds nothing).
    fn give_back(&mut self, step: usize);
}

/// The machine's pool directory: `$PLANDECK_POOL_DIR`, else `/run/lock/plandeck`
/// when `/run/lock` is writable, else `plandeck-pools` in the temporary directory.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let run_lock = Path::new("/run/lock");
    if nix::unistd::access(run_lock, nix::unistd::AccessFlags::W_OK).is_ok() {
        return run_lock.join("plandeck");
    }
    std::env::temp_dir().join("plandeck-pools")
}

/// Host pools backed by slot files in a directory.
pub struct SlotDir {
    dir: PathBuf,
    /// Written into held slot files: `run ID`, plan and pid.
    holder: String,
    held: HashMap<usize, Vec<Flock<File>>>,
}

impl SlotDir {
    /// Use `dir` (created, mode 1777, when missing) for the pools of run
    /// `run_id` of plan `plan`.
    pub fn open(dir: &Path, run_id: &str, plan: &str) -> Result<SlotDir, String> {
        prepare_dir(dir).map_err(|e| {
            format!(
                "cannot use the host pool directory {}: {e}; make it a directory every plandeck user can write (mode 1777), or set {DIR_ENV} to one",
                dir.display()
            )
        })?;
        let short: String = run_id.chars().take(8).collect();
        Ok(SlotDir {
            dir: dir.to_path_buf(),
            holder: format!("run {short} (plan {plan}, pid {})", std::process::id()),
            held: HashMap::new(),
        })
    }

    fn slot_path(&self, pool: &str, slot: u32) -> PathBuf {
        self.dir.join(format!("{pool}.{slot}"))
    }
}

fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(std::io::Error::other("it is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    // Set after creation: the umask would narrow a mode given to mkdir.
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
                }
                // Another plandeck made it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Open a slot file without following a symlink; a regular file only.
fn open_slot(path: &Path) -> std::io::Result<File> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o666)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => {
            // The umask may have narrowed the mode of a file this call created.
            if let Ok(m) = f.metadata()
                && m.permissions().mode() & 0o777 != 0o666
                && m.uid() == nix::unistd::getuid().as_raw()
            {
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o666));
            }
            f
        }
        // Made by another user with a narrower mode: lock it read-only.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)?,
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Who holds a slot, as its file says.
fn holder_of(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|f| f.take(512).read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        "another plandeck process".into()
    } else {
        text.to_string()
    }
}

impl HostPools for SlotDir {
    fn try_take(&mut self, step: usize, step_id: &str, wants: &[Want]) -> Result<(), String> {
        let mut got: Vec<Flock<File>> = Vec::new();
        for w in wants {
            let mut have = 0;
            let mut holders: Vec<String> = Vec::new();
            for slot in 0..w.capacity.min(MAX_CAPACITY) {
                if have == w.units {
                    break;
                }
                let path = self.slot_path(&w.pool, slot);
                let file = open_slot(&path).map_err(|e| {
                    format!(
                        "host pool '{}': cannot open {}: {e}; check the directory's permissions or set {DIR_ENV}",
                        w.pool,
                        path.display()
                    )
                })?;
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => {
                        have += 1;
                        got.push(lock);
                    }
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                        let h = holder_of(&path);
                        if !holders.contains(&h) {
                            holders.push(h);
                        }
                    }
                    Err((_, e)) => {
                        return Err(format!(
                            "host pool '{}': cannot lock {}: {e}",
                            w.pool,
                            path.display()
                        ));
                    }
                }
            }
            if have < w.units {
                // `got` drops here: whatever was taken is free again.
                return Err(format!(
                    "waiting for host pool '{}' (capacity {}): held by {}",
                    w.pool,
                    w.capacity,
                    holders.join("; ")
                ));
            }
        }
        let line = format!("step '{step_id}' of {}\n", self.holder);
        for lock in &got {
            let _ = lock.set_len(0);
            let _ = lock.write_all_at(line.as_bytes(), 0);
        }
        self.held.entry(step).or_default().extend(got);
        Ok(())
    }

    fn give_back(&mut self, step: usize) {
        for lock in self.held.remove(&step).unwrap_or_default() {
            // Say nothing stale while the slot is free; the lock goes with the file.
            let _ = lock.set_len(0);
        }
    }
}

/// What a run with no host pools uses: everything fits at once.
pub struct NoHostPools;

impl HostPools for NoHostPools {
    fn try_take(&mut self, _: usize, _: &str, _: &[Want]) -> Result<(), String> {
        Ok(())
    }
    fn give_back(&mut self, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(units: u32) -> Vec<Want> {
        vec![Want {
            pool: "apt".into(),
            capacity: 2,
            units,
        }]
    }

    #[test]
    fn units_are_shared_between_holders_and_freed_on_give_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pools = dir.path().join("pools");
        let mut a = SlotDir::open(&pools, "aaaaaaaa-1", "one").expect("opens");
        let mut b = SlotDir::open(&pools, "bbbbbbbb-2", "two").expect("opens");
        let mode = std::fs::metadata(&pools)
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        a.try_take(0, "x", &want(2)).expect("both units free");
        let why = b.try_take(0, "y", &want(1)).expect_err("pool is full");
        assert!(
            why.contains("held by step 'x' of run aaaaaaaa (plan one"),
            "{why}"
        );
        a.give_back(0);
        b.try_take(0, "y", &want(1)).expect("a unit is free again");
        // All or nothing: one unit is left, two are asked for.
        let why = a.try_take(1, "z", &want(2)).expect_err("only one left");
        assert!(why.contains("step 'y' of run bbbbbbbb"), "{why}");
        a.try_take(1, "z", &want(1))
            .expect("the unit the failed try took was given back");
        drop(b);
        a.try_take(2, "w", &want(1))
            .expect("a dropped holder frees its units");
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").expect("written");
        std::os::unix::fs::symlink(&target, dir.path().join("apt.0")).expect("symlink");
        let mut p = SlotDir::open(dir.path(), "r", "p").expect("opens");
        let why = p.try_take(0, "x", &want(1)).expect_err("refused");
        assert!(why.contains("cannot open"), "{why}");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me");
    }
}
