//! The lock of an output directory: one search at a time writes a results
//! file. Two array tasks mistakenly given the same `--out` would otherwise
//! interleave their lines; the second is refused instead.
//!
//! The lock is a file beside the results (`results.jsonl.lock`) created
//! atomically (`O_EXCL`), holding the owner's host and pid (and Slurm job
//! id and restart count inside a Slurm job). It is removed when the search
//! ends. A lock left by a process that was killed (SIGKILL after a Slurm
//! cancel or preemption) is taken over when its owner
//! - was on this host and is no longer running, or
//! - was an earlier run of this very Slurm job (same `SLURM_JOB_ID`, lower
//!   `SLURM_RESTART_COUNT`): Slurm starts a requeued job only once the old
//!   one is gone, perhaps on another node.
//!
//! Any other lock of another host is kept, since its owner cannot be
//! checked from here.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::SearchError;

/// Who holds a lock, as written in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// The owner's host name.
    pub host: String,
    /// The owner's process id.
    pub pid: u32,
    /// `SLURM_JOB_ID` of the owner, inside a Slurm job.
    pub slurm_job: Option<String>,
    /// `SLURM_RESTART_COUNT` of the owner (0 before any requeue).
    pub slurm_restart: u64,
}

impl LockOwner {
    /// This process on this host.
    pub fn this_process() -> LockOwner {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        LockOwner {
            host: host_name(),
            pid: std::process::id(),
            slurm_job: var("SLURM_JOB_ID"),
            slurm_restart: var("SLURM_RESTART_COUNT")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        }
    }

    fn to_text(&self) -> String {
        let mut text = format!("host {}\npid {}\n", self.host, self.pid);
        if let Some(job) = &self.slurm_job {
            text += &format!("slurm_job {job}\nslurm_restart {}\n", self.slurm_restart);
        }
        text
    }

    /// Reads `host NAME` and `pid N` lines (and the Slurm ones); `None` if
    /// host or pid is missing.
    fn parse(text: &str) -> Option<LockOwner> {
        let mut host = None;
        let mut pid = None;
        let mut slurm_job = None;
        let mut slurm_restart = 0;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("host", h)) => host = Some(h.trim().to_string()),
                Some(("pid", p)) => pid = p.trim().parse().ok(),
                Some(("slurm_job", j)) => slurm_job = Some(j.trim().to_string()),
                Some(("slurm_restart", r)) => slurm_restart = r.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(LockOwner {
            host: host?,
            pid: pid?,
            slurm_job,
            slurm_restart,
        })
    }

    fn describe(&self) -> String {
        match &self.slurm_job {
            Some(job) => format!(
                "pid {} on host {} (Slurm job {job}, restart {})",
                self.pid, self.host, self.slurm_restart
            ),
            None => format!("pid {} on host {}", self.pid, self.host),
        }
    }

    /// Why `self` may take over a lock held by `old`, if it may.
    fn may_take_over(&self, old: &LockOwner) -> Option<&'static str> {
        if old.host == self.host && process_alive(old.pid) == Some(false) {
            return Some("no longer running on this host");
        }
        if old.slurm_job.is_some()
            && old.slurm_job == self.slurm_job
            && self.slurm_restart > old.slurm_restart
        {
            return Some("an earlier run of this requeued Slurm job");
        }
        None
    }
}

/// The name of this host (the kernel's), or `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a process of this host is running; `None` when that cannot be
/// told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// A held lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct ResultsLock {
    path: PathBuf,
    /// A note for the user when a stale lock was taken over.
    pub took_over: Option<String>,
}

impl ResultsLock {
    /// The lock file of a results file: its name with `.lock` appended.
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_os_string();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of `results` (its directory must exist), or says who
    /// holds it.
    pub fn acquire(results: &Path) -> Result<ResultsLock, SearchError> {
        let path = Self::path_for(results);
        let me = LockOwner::this_process();
        let mut took_over = None;
        // Two rounds: the second after removing a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(me.to_text().as_bytes())
                        .and_then(|_| file.sync_all())
                        .map_err(|source| SearchError::Io {
                            path: path.clone(),
                            source,
                        })?;
                    return Ok(ResultsLock { path, took_over });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(source) => return Err(SearchError::Io { path, source }),
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Released between our two calls: try again.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(source) => return Err(SearchError::Io { path, source }),
            };
            let Some(owner) = LockOwner::parse(&text) else {
                return Err(SearchError::Locked {
                    path,
                    owner: "an unknown owner (the lock file is not `host NAME`, `pid N`)".into(),
                    hint: "if no search uses this directory, remove the lock file".into(),
                });
            };
            let Some(why) = me.may_take_over(&owner) else {
                let hint = if owner.host == me.host {
                    "that process is still running: give this run another --out (each array task its own, e.g. --out runs/shard-$SLURM_ARRAY_TASK_ID)".to_string()
                } else {
                    format!(
                        "its host cannot be checked from here: give this run another --out, or remove the lock file if no process on {} uses it any more{}",
                        owner.host,
                        owner
                            .slurm_job
                            .as_ref()
                            .map(|j| format!(" (`squeue -j {j}` shows nothing)"))
                            .unwrap_or_default()
                    )
                };
                return Err(SearchError::Locked {
                    path,
                    owner: owner.describe(),
                    hint,
                });
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(SearchError::Io { path, source }),
            }
            took_over = Some(format!(
                "took over the stale lock {} of {}: {why}",
                path.display(),
                owner.describe()
            ));
        }
        // Another process took the stale lock first.
        let owner = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| LockOwner::parse(&t))
            .map(|o| o.describe())
            .unwrap_or_else(|| "another process".into());
        Err(SearchError::Locked {
            path,
            owner,
            hint: "another run took it at the same time: give this run another --out".into(),
        })
    }
}

impl Drop for ResultsLock {
    fn drop(&mut self) {
        // Remove only our own lock: a run that lost it must not free another's.
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| LockOwner::parse(&t))
            .is_some_and(|o| o == LockOwner::this_process());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_the_first_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.jsonl");
        let lock = ResultsLock::acquire(&results).unwrap();
        assert!(lock.took_over.is_none());
        let text = std::fs::read_to_string(ResultsLock::path_for(&results)).unwrap();
        assert_eq!(
            LockOwner::parse(&text),
            Some(LockOwner::this_process()),
            "{text}"
        );
        let err = ResultsLock::acquire(&results).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("still running"),
            "{err}"
        );
        drop(lock);
        assert!(!ResultsLock::path_for(&results).exists());
        assert!(ResultsLock::acquire(&results).is_ok());
    }

    #[test]
    fn stale_locks_of_this_host_are_taken_over_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.jsonl");
        let lock_path = ResultsLock::path_for(&results);
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = LockOwner {
            host: host_name(),
            pid: 4_999_999,
            slurm_job: None,
            slurm_restart: 0,
        };
        std::fs::write(&lock_path, dead.to_text()).unwrap();
        let lock = ResultsLock::acquire(&results).unwrap();
        let note = lock.took_over.clone().unwrap();
        assert!(
            note.contains("pid 4999999") && note.contains("no longer running"),
            "{note}"
        );
        drop(lock);

        let elsewhere = LockOwner {
            host: format!("{}-elsewhere", host_name()),
            pid: 4_999_999,
            slurm_job: Some("41".into()),
            slurm_restart: 0,
        };
        std::fs::write(&lock_path, elsewhere.to_text()).unwrap();
        let err = ResultsLock::acquire(&results).unwrap_err().to_string();
        assert!(
            err.contains("-elsewhere (Slurm job 41, restart 0)")
                && err.contains("cannot be checked")
                && err.contains("squeue -j 41"),
            "{err}"
        );
        // The same Slurm job, requeued (perhaps onto another node).
        let requeued = LockOwner {
            host: host_name(),
            pid: std::process::id(),
            slurm_job: Some("41".into()),
            slurm_restart: 1,
        };
        assert!(requeued.may_take_over(&elsewhere).is_some());
        assert!(elsewhere.may_take_over(&requeued).is_none());
        let other_job = LockOwner {
            slurm_job: Some("42".into()),
            ..requeued.clone()
        };
        assert!(other_job.may_take_over(&elsewhere).is_none());
        std::fs::write(&lock_path, "garbage").unwrap();
        let err = ResultsLock::acquire(&results).unwrap_err().to_string();
        assert!(err.contains("unknown owner"), "{err}");
    }
}
