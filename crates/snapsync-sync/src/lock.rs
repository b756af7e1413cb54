//! The remote's lock: a lease that keeps a second run (from this machine or another) from writing the
//! same remote at the same time.
//!
//! * **Exclusive on every backend.** The lock is made with [`Store::lock_create`]: of two runs that
//!   create it at once exactly one succeeds (an atomic create-if-absent: a hard link or exclusive open
//!   locally and over SFTP, a conditional put on object stores, a directory creation on FTP).
//! * **Owned.** It holds a token unique to the run, the host, the process id and that process's start
//!   time, when the run started and when it last renewed the lock.
//! * **Renewed.** While the run lives, a heartbeat rewrites the lock every `lock_timeout / 4` (at most
//!   a minute); a heartbeat that finds the lock is no longer its own marks the lease lost, and the run
//!   starts nothing more.
//! * **Taken over only as seen.** A lock is stale when it was not renewed for `lock_timeout`, or when
//!   its run was on this machine and that process is gone (the pid is not running, or runs another
//!   program started at another time: pids are reused), or with `--break-lock`. A run taking over moves
//!   the lock aside to a name of its own (an atomic rename where the store has one) and deletes it only
//!   if it is byte for byte the lock it judged stale; otherwise (renewed or replaced meanwhile) it
//!   puts it back with a create-if-absent and gives up.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use snapsync_store::{Error as StoreError, Store};

use crate::error::{Error, Result};
use crate::state::to_ns;

/// The remote key of the lock a run holds; never synced (nor anything whose name starts with it: a
/// lock moved aside, and the FTP lock's directory).
pub const LOCK_NAME: &str = snapsync_store::LOCK_PREFIX;

/// What a lock says about its run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBody {
    /// Unique to the run.
    #[serde(default)]
    pub token: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When that process started (clock ticks since boot, from `/proc/PID/stat`), to tell a reused
    /// pid from the run's.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// When the run took the lock, nanoseconds since 1970.
    pub started_ns: u64,
    /// When it last renewed it.
    #[serde(default)]
    pub renewed_ns: Option<u64>,
}

impl LockBody {
    fn age(&self, now: u64) -> Duration {
        Duration::from_nanos(now.saturating_sub(self.renewed_ns.unwrap_or(0).max(self.started_ns)))
    }

    /// Whether the run that holds this lock is known to be gone: it ran on this machine and its
    /// process is not there any more (or the pid now belongs to a process started at another time).
    fn dead(&self, host: &str) -> bool {
        if self.host != host || !Path::new("/proc/self").exists() {
            return false;
        }
        match (process_start(self.pid), self.pid_start) {
            (None, _) => true,
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => false,
        }
    }
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), if it exists.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn now_ns() -> u64 {
    to_ns(SystemTime::now())
        .and_then(|ns| u64::try_from(ns).ok())
        .unwrap_or(0)
}

/// A token no other run has: the host, the process, the time and a counter, hashed.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(hostname().as_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&now_ns().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.finalize().to_hex()[..32].to_owned()
}

/// This machine's name.
pub(crate) fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A lock this run holds, renewed in the background until [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn Store>,
    body: Arc<std::sync::Mutex<Bytes>>,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// What taking the lock found.
#[derive(Debug)]
pub struct Taken {
    /// The lease.
    pub lease: Lease,
    /// The lock of a run that died (or was broken) that this run took over.
    pub took_over: Option<LockBody>,
}

impl Lease {
    /// Takes the lock of `store`: `break_lock` takes over a live one too.
    ///
    /// # Errors
    /// [`Error::Locked`] when another run holds it; the store's error when it cannot be made.
    pub async fn take(store: Arc<dyn Store>, lock_timeout: Duration, break_lock: bool) -> Result<Taken> {
        let host = hostname();
        let token = new_token();
        let pid = std::process::id();
        let body = LockBody {
            token: token.clone(),
            host: host.clone(),
            pid,
            pid_start: process_start(pid),
            started_ns: now_ns(),
            renewed_ns: None,
        };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut took_over = None;
        for _ in 0..3 {
            match store.lock_create(LOCK_NAME, bytes.clone()).await {
                Ok(()) => {
                    // The lock is on the remote, nothing else is done.
                    snapsync_core::chaos::point("lock");
                    let lease = Lease::start(store, bytes, lock_timeout);
                    return Ok(Taken { lease, took_over });
                }
                Err(StoreError::AlreadyExists { location }) => {
                    let Some((seen, holder)) = read(&*store).await? else {
                        continue; // gone meanwhile: try again
                    };
                    let now = now_ns();
                    let stale = break_lock
                        || if let Some(h) = &holder {
                            h.dead(&host) || h.age(now) > lock_timeout
                        } else {
                            // Unreadable, or still being written: judged again a moment later.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            matches!(read(&*store).await?, Some((again, None)) if again == seen)
                        };
                    if !stale {
                        let holder = describe(holder.as_ref(), now);
                        return Err(Error::Locked { location, holder });
                    }
                    // Changed between the look and the move (renewed, or another run's now): look
                    // again.
                    if take_over(&*store, &seen, &token).await? {
                        took_over = holder;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Locked {
            location: store.url().with_key(LOCK_NAME),
            holder: "other runs taking it at the same moment".into(),
        })
    }

    fn start(store: Arc<dyn Store>, bytes: Bytes, lock_timeout: Duration) -> Lease {
        let body = Arc::new(std::sync::Mutex::new(bytes));
        let lost = Arc::new(AtomicBool::new(false));
        let every = (lock_timeout / 4).clamp(Duration::from_millis(200), Duration::from_mins(1));
        let heartbeat = tokio::spawn({
            let (store, body, lost) = (Arc::clone(&store), Arc::clone(&body), Arc::clone(&lost));
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    if !renew(&*store, &body).await {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
        Lease {
            store,
            body,
            lost,
            heartbeat,
        }
    }

    /// Whether the lock was found to be no longer this run's (taken over, removed): the run must
    /// start nothing more.
    #[must_use]
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and removes the lock, if it is still this run's.
    pub async fn release(mut self) {
        self.heartbeat.abort();
        let _ = (&mut self.heartbeat).await;
        let ours = self
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Ok(Some((seen, _))) = read(&*self.store).await
            && seen == ours
        {
            let _ = self.store.lock_remove(LOCK_NAME).await;
        }
    }
}

impl Drop for Lease {
    /// A run dropped without [`Lease::release`] (a cancelled future, an embedding program that gave
    /// up) stops renewing: its lock then goes stale after the lock timeout, as a killed run's does,
    /// instead of being renewed by a heartbeat nobody owns.
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// Who holds a lock, as an error says it.
fn describe(holder: Option<&LockBody>, now: u64) -> String {
    holder.map_or_else(
        || "an unreadable lock".to_owned(),
        |h| {
            format!(
                "host {}, process {}, renewed {} s ago",
                h.host,
                h.pid,
                h.age(now).as_secs()
            )
        },
    )
}

/// A lock [`remove_stale`] removed (or, for a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedLock {
    /// Where it was (the store's URL and the lock's key, without a password).
    pub location: String,
    /// What it said about its run; `None` for a lock whose body did not parse.
    pub holder: Option<LockBody>,
    /// How long it had gone without being renewed.
    pub age: Duration,
    /// Why it was judged to belong to no live run.
    pub reason: String,
}

/// Removes the lock of `store` if it belongs to a run that is gone, as a run taking over judges it
/// (see the module's documentation): its process was on this machine and is not running any more, or
/// it was not renewed for `lock_timeout` (a live run renews it every `lock_timeout / 4`, at most every
/// minute), or its body does not parse and stays the same for a second. It is then moved aside and
/// removed only if it is byte for byte the lock judged stale, exactly as a takeover does, so a lock
/// renewed meanwhile is put back. `Ok(None)` when there is no lock; with `dry_run` nothing is removed.
///
/// # Errors
/// [`Error::Locked`] when the lock belongs to a live run (or was renewed while it was being removed);
/// the store's error when the lock cannot be read or removed.
pub async fn remove_stale(
    store: &dyn Store,
    lock_timeout: Duration,
    dry_run: bool,
) -> Result<Option<RemovedLock>> {
    let location = store.url().with_key(LOCK_NAME);
    let Some((seen, holder)) = read(store).await? else {
        return Ok(None);
    };
    let now = now_ns();
    let reason = match &holder {
        Some(h) if h.dead(&hostname()) => {
            Some(format!("its process ({}) is not running on this machine", h.pid))
        }
        Some(h) if h.age(now) > lock_timeout => Some(format!(
            "not renewed for {} s (more than the lock timeout, {} s)",
            h.age(now).as_secs(),
            lock_timeout.as_secs()
        )),
        Some(_) => None,
        None => {
            // Unreadable, or still being written: judged again a moment later.
            tokio::time::sleep(Duration::from_secs(1)).await;
            match read(store).await? {
                Some((again, None)) if again == seen => {
                    Some("its body is unreadable and did not change".to_owned())
                }
                Some((_, again)) => {
                    return Err(Error::Locked {
                        location,
                        holder: describe(again.as_ref(), now_ns()),
                    });
                }
                None => return Ok(None),
            }
        }
    };
    let Some(reason) = reason else {
        return Err(Error::Locked {
            location,
            holder: describe(holder.as_ref(), now),
        });
    };
    let age = holder.as_ref().map_or(Duration::ZERO, |h| h.age(now));
    if !dry_run && !take_over(store, &seen, &new_token()).await? {
        // Renewed (or replaced) between the look and the move: a live run's.
        return Err(Error::Locked {
            location,
            holder: "a run that renewed it while it was being removed".into(),
        });
    }
    Ok(Some(RemovedLock {
        location,
        holder,
        age,
        reason,
    }))
}

/// Rewrites the lock with a new renewal time if it is still `body`; false when it is not.
async fn renew(store: &dyn Store, body: &std::sync::Mutex<Bytes>) -> bool {
    let ours = body
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match read(store).await {
        Ok(Some((seen, _))) if seen == ours => {}
        // A failed read is not proof the lock was lost: try again at the next beat.
        Err(_) => return true,
        Ok(_) => return false,
    }
    let Ok(mut parsed) = serde_json::from_slice::<LockBody>(&ours) else {
        return false;
    };
    parsed.renewed_ns = Some(now_ns());
    let fresh = Bytes::from(serde_json::to_vec(&parsed).unwrap_or_default());
    match store.lock_update(LOCK_NAME, fresh.clone()).await {
        Ok(()) => {
            *body.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
            true
        }
        Err(_) => true,
    }
}

/// The lock's bytes and what they say (`None` for a body that does not parse, or is still being
/// written); `None` altogether when there is no lock.
async fn read(store: &dyn Store) -> Result<Option<(Bytes, Option<LockBody>)>> {
    match store.lock_read(LOCK_NAME).await {
        Ok(bytes) => {
            let body = serde_json::from_slice(&bytes).ok();
            Ok(Some((bytes, body)))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the stale lock `seen`, only if the lock is still exactly that: true when it was removed
/// (or was gone already), false when it had changed (it is then put back).
async fn take_over(store: &dyn Store, seen: &Bytes, token: &str) -> Result<bool> {
    let aside = format!("{LOCK_NAME}.{token}.stale");
    match store.lock_rename(LOCK_NAME, &aside).await {
        Ok(()) => {}
        Err(StoreError::NotFound { .. }) => return Ok(true),
        Err(e) => return Err(e.into()),
    }
    let moved = store.lock_read(&aside).await.ok();
    if moved.as_ref() == Some(seen) {
        store.lock_remove(&aside).await?;
        return Ok(true);
    }
    // Renewed or replaced between the look and the move: it belongs to a live run. Back it goes,
    // unless yet another run made a lock meanwhile (then that one stands, and this one lost it).
    if let Some(moved) = moved {
        let _ = store.lock_create(LOCK_NAME, moved).await;
    }
    let _ = store.lock_remove(&aside).await;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_start_time_tells_a_reused_pid() {
        let me = std::process::id();
        let started = process_start(me).expect("this process has a start time");
        let body = |pid, pid_start| LockBody {
            token: "t".into(),
            host: hostname(),
            pid,
            pid_start,
            started_ns: 0,
            renewed_ns: None,
        };
        assert!(!body(me, Some(started)).dead(&hostname()));
        assert!(body(me, Some(started + 1)).dead(&hostname()), "a reused pid");
        assert!(
            !body(me, None).dead(&hostname()),
            "an old lock without a start time"
        );
        assert!(body(u32::MAX - 1, None).dead(&hostname()));
        assert!(!body(u32::MAX - 1, None).dead("another-host"));
    }

    #[test]
    fn locks_written_by_the_earlier_format_still_read() {
        let old: LockBody = serde_json::from_str(r#"{"host":"h","pid":42,"started_ns":5}"#).unwrap();
        assert_eq!((old.pid, old.started_ns, old.renewed_ns), (42, 5, None));
        assert_eq!(old.age(5 + 7), Duration::from_nanos(7));
    }
}
