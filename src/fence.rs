//! Fencing numbers: every acquisition of a lock path gets a number greater
//! than that of every earlier acquisition of the same path, so that a
//! resource can reject work from a holder that has lost the lock without
//! knowing it (stalled, then evicted): it refuses any number lower than one
//! it has already seen.
//!
//! # The counter
//!
//! The directory `<PATH>.fence/` beside the lock holds one file whose *name*
//! is the latest number, e.g. `<PATH>.fence/42`. Taking the next number
//! renames `42` to `43`. A rename whose source is gone fails, so the rename
//! is a compare-and-swap. Two takers that both saw `42` cannot both get
//! `43`: the second finds `42` gone, looks again and renames `43` to `44`. A
//! taker that stalls for any length of time and then wakes cannot set the
//! counter back, because its rename of the old name fails. The numbers live
//! outside the lock file, so they survive its deletion on release, crashes
//! and stale breaks. The first taker finds no directory and makes it, with
//! `0` inside, so the first number is 1.
//!
//! # Why the holder's number is larger than every earlier holder's
//!
//! [`crate::protocol`] takes a number *after* publishing its marker and
//! *before* reading the marker back; only if the read-back finds the marker
//! still in place is the number the holder's. The marker is unique to the
//! holder and, once removed, never comes back, so the holder held the lock
//! over the whole interval from publishing to reading back, and the number
//! was taken inside it. Holders' intervals do not overlap (that is the
//! lock), so a later holder takes its number after an earlier holder took
//! its own, and a later rename of the one counter file yields a larger name.
//! A stalled former holder that wakes up mid-acquire may still take a number,
//! which is larger than everyone's, but its read-back then fails and the
//! number is never used. Numbers are therefore increasing but may skip.
//!
//! The directory appears whole: it is built under a staging name with `0`
//! inside and renamed into place, so there is never an empty counter and
//! never a second file. A name that exists is therefore the counter, and a
//! taker first tries the number it took last (kept per thread, which in the
//! guest is per component instance): one rename, no listing, when nobody
//! else took one since. If someone did, the rename fails and the taker
//! lists the directory. A listing that misses the latest name (a caching
//! network client) makes the rename fail, never succeed wrongly; the taker
//! then tries the numbers above it by name, which such a client looks up
//! afresh, since the counter is past every number it has been.
//!
//! The compare-and-swap needs a rename that fails when its source is gone
//! and never harms its target. smbnetfs renames onto an existing name by
//! deleting it first, so two takers racing for one number there can both
//! fail and leave no counter (21 of 30 such races here). Takers race only
//! when two publishers both believe they may hold the lock: after a
//! verification delay, [`crate::protocol`] reads back before taking a
//! number, so only the last writer of such a race takes one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;

use crate::files::io_error;
use crate::format::{self, Token};
use crate::LockError;

/// How many renames a taker tries before it gives up. Only holders take
/// numbers, one at a time, plus the rare stalled former holder; the bound is
/// for a listing that stays behind (see [`WALK`]).
const MAX_TRIES: usize = 1024;

/// How many numbers a taker tries upwards, one rename each, after a listing
/// whose number was already gone, before it lists again. A caching client
/// (sshfs with `dir_cache`) serves the same stale listing for seconds,
/// while a name looked up directly is fresh; every number a taker tries
/// was the counter's once, so the counter is past it and the next one up is
/// never too far.
const WALK: u32 = 16;

thread_local! {
    /// The number this thread (guest instance) took last, by counter directory.
    static LAST: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// The counter's directory for the lock at `lock`.
pub fn dir(lock: &str) -> String {
    format!("{lock}.fence")
}

/// Takes the next fencing number of the lock at `lock`.
///
/// # Errors
/// An I/O error on the counter's directory, or losing the race
/// [`MAX_TRIES`] times in a row.
pub fn take(lock: &str) -> Result<u64, LockError> {
    take_in(&dir(lock), lock)
}

/// Takes the next number of the counter in `dir`, beside the lock at
/// `lock` (the queue's tickets count this way too: [`crate::queue`]).
pub(crate) fn take_in(dir: &str, lock: &str) -> Result<u64, LockError> {
    take_listing(dir, lock, &latest)
}

/// [`take_in`], listing the directory with `list` (tests give a listing
/// that stays behind, as a caching client's does).
fn take_listing(dir: &str, lock: &str, list: &dyn Fn(&str) -> Result<Option<u64>, LockError>) -> Result<u64, LockError> {
    let dir = dir.to_owned();
    let mut guess = LAST.with_borrow(|last| last.get(&dir).copied());
    // Numbers tried upwards since the last listing; `None` before any.
    let mut walked: Option<u32> = None;
    // Every number tried was the counter's once, and a failed rename says
    // the counter is past it: it is at least this.
    let mut floor = 0;
    for _ in 0..MAX_TRIES {
        let current = match guess.take() {
            Some(n) => n,
            None => match list(&dir)? {
                Some(n) => {
                    walked = Some(0);
                    n.max(floor)
                }
                None => {
                    create(&dir, lock)?;
                    continue;
                }
            },
        };
        match fs::rename(format!("{dir}/{current}"), format!("{dir}/{}", current + 1)) {
            Ok(()) => {
                LAST.with_borrow_mut(|last| last.insert(dir, current + 1));
                return Ok(current + 1);
            }
            // Someone took a number first, or the guess was old. An old own
            // guess: list. After a listing: the counter is past `current`,
            // so try the next number, and list again every WALK of them.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                floor = floor.max(current + 1);
                match walked {
                    Some(steps) if steps < WALK => {
                        walked = Some(steps + 1);
                        guess = Some(floor);
                    }
                    _ => walked = None,
                }
            }
            Err(e) => return Err(io_error(&dir, "take a fencing number in", e)),
        }
    }
    // An emptied counter says so; anything else lost every race.
    list(&dir)?;
    Err(LockError::Io(format!("{dir}: lost the race for a fencing number {MAX_TRIES} times in a row; try again")))
}

/// The latest number taken for the lock at `lock`; `None` if none ever was.
///
/// # Errors
/// An I/O error reading the counter's directory.
pub fn current(lock: &str) -> Result<Option<u64>, LockError> {
    Ok(latest(&dir(lock))?.filter(|&n| n > 0))
}

/// The counter in `dir`: `None` when there is no directory yet.
fn latest(dir: &str) -> Result<Option<u64>, LockError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(dir, "read", e)),
    };
    match entries.filter_map(|entry| number(&entry.ok()?.file_name().to_string_lossy())).max() {
        Some(n) => Ok(Some(n)),
        // Never made by uuidlock, which renames the directory into place
        // with its counter inside.
        None => Err(LockError::Io(format!(
            "{dir} holds no fencing counter: emptied by hand, or lost to a rename that is not atomic on this \
             share (see `uuidlock doctor`; use a verification delay there); remove the directory to start counting again"
        ))),
    }
}

/// Makes the counter's directory `dir` with `0` inside: built aside (beside
/// `lock`), renamed into place. If another taker's is there first, ours is
/// removed.
fn create(dir: &str, lock: &str) -> Result<(), LockError> {
    // Named as staged markers are (`<PATH>.<UUID>.new`), which the lock
    // name's length limit already allows for.
    let staged = format::staged_path(lock, &Token::generate("").map_err(LockError::Io)?);
    fs::create_dir(&staged).map_err(|e| io_error(dir, "create", e))?;
    // The counter file is closed before the rename: SMB refuses to rename a
    // directory with a file open inside (EACCES).
    let made = fs::File::create(format!("{staged}/0")).map(drop).and_then(|()| fs::rename(&staged, dir));
    let placed = match made {
        Ok(()) => Ok(()),
        // Our staged directory was reclaimed as a leftover while we stalled
        // (crate::sweep): the caller looks again, and builds another.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Someone else's counter is in place (EEXIST or ENOTEMPTY): use it.
        Err(_) if fs::metadata(dir).is_ok_and(|meta| meta.is_dir()) => Ok(()),
        Err(e) => Err(io_error(dir, "create", e)),
    };
    let _ = fs::remove_file(format!("{staged}/0"));
    let _ = fs::remove_dir(&staged);
    placed
}

/// A counter file's name: decimal digits without a leading zero (or `0`).
fn number(name: &str) -> Option<u64> {
    let canonical =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && (name == "0" || !name.starts_with('0'));
    canonical.then(|| name.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scratch::lock;

    #[test]
    fn numbers_start_at_one_and_increase() {
        let (_dir, lock) = lock();
        assert_eq!(current(&lock).unwrap(), None);
        assert_eq!((take(&lock).unwrap(), take(&lock).unwrap(), take(&lock).unwrap()), (1, 2, 3));
        assert_eq!(current(&lock).unwrap(), Some(3));
        // One file: the counter.
        assert_eq!(fs::read_dir(dir(&lock)).unwrap().count(), 1);
    }

    #[test]
    fn a_stale_taker_cannot_set_the_counter_back() {
        let (_dir, lock) = lock();
        for _ in 0..5 {
            take(&lock).unwrap();
        }
        // A taker that saw 2 and wakes up now: its rename must fail.
        let stale = fs::rename(format!("{}/2", dir(&lock)), format!("{}/3", dir(&lock)));
        assert_eq!(stale.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(take(&lock).unwrap(), 6);
    }

    #[test]
    fn an_old_guess_falls_back_to_the_listing() {
        let (_dir, lock) = lock();
        assert_eq!(take(&lock).unwrap(), 1);
        // Another process moves the counter on; this thread's guess is old.
        fs::rename(format!("{}/1", dir(&lock)), format!("{}/9", dir(&lock))).unwrap();
        assert_eq!(take(&lock).unwrap(), 10);
        assert_eq!(take(&lock).unwrap(), 11);
    }

    #[test]
    fn an_emptied_counter_is_an_error_not_a_restart() {
        let (_dir, lock) = lock();
        take(&lock).unwrap();
        fs::remove_file(format!("{}/1", dir(&lock))).unwrap();
        assert!(matches!(take(&lock), Err(LockError::Io(_))));
        assert!(matches!(current(&lock), Err(LockError::Io(_))));
    }

    // A caching client (sshfs with dir_cache) lists the counter as it was
    // seconds ago, again and again: the taker walks up from there by name.
    // Relisting alone lost the race 64 times in a row on the test bed.
    #[test]
    fn a_listing_that_stays_behind_is_walked_past() {
        let (_dir, lock) = lock();
        take(&lock).unwrap();
        // Others took 300 numbers since; this instance's guess is old too.
        fs::rename(format!("{}/1", dir(&lock)), format!("{}/301", dir(&lock))).unwrap();
        LAST.with_borrow_mut(|last| last.clear());
        let stale = |_: &str| Ok(Some(1));
        assert_eq!(take_listing(&dir(&lock), &lock, &stale).unwrap(), 302);
        assert_eq!(take(&lock).unwrap(), 303);
    }

    #[test]
    fn concurrent_takers_never_share_a_number() {
        let (_dir, lock) = lock();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || (0..50).map(|_| take(&lock).unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 400, "a number was handed out twice");
        assert_eq!(current(&lock).unwrap(), Some(400));
    }
}
