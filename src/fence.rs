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
//! and stale breaks. The first taker finds the directory empty (or missing)
//! and creates `1` exclusively.
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
//! A listing of the directory that misses the latest name (a caching network
//! client) makes a rename fail, never succeed wrongly. A stray second file
//! (two first takers racing on an empty directory, one of them stalled) is
//! harmless: the largest name is the counter, and smaller ones are removed
//! when seen.

use std::fs::{self, OpenOptions};
use std::io;

use crate::files::io_error;
use crate::LockError;

/// How many times a taker looks again after losing a race. Only holders take
/// numbers, one at a time, plus the rare stalled former holder, so this is
/// never reached in practice.
const MAX_TRIES: usize = 64;

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
    let dir = dir(lock);
    for _ in 0..MAX_TRIES {
        let taken = match latest(&dir)? {
            None => OpenOptions::new().write(true).create_new(true).open(format!("{dir}/1")).map(|_| 1),
            Some(n) => fs::rename(format!("{dir}/{n}"), format!("{dir}/{}", n + 1)).map(|()| n + 1),
        };
        match taken {
            // A first `1` made after someone had already moved the counter
            // on (our listing was older than their rename) is a stray: the
            // counter file always exists once made, so a look now shows it.
            Ok(1) if latest(&dir)? != Some(1) => continue,
            Ok(number) => return Ok(number),
            // Someone took a number first: look again.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists) => continue,
            Err(e) => return Err(io_error(&dir, "take a fencing number in", e)),
        }
    }
    Err(LockError::Io(format!("{dir}: lost the race for a fencing number {MAX_TRIES} times in a row; try again")))
}

/// The latest number taken for the lock at `lock`; `None` if none ever was.
///
/// # Errors
/// An I/O error reading the counter's directory.
pub fn current(lock: &str) -> Result<Option<u64>, LockError> {
    match fs::read_dir(dir(lock)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&dir(lock), "read", e)),
        Ok(entries) => Ok(entries.filter_map(|entry| number(&entry.ok()?.file_name().to_string_lossy())).max()),
    }
}

/// The largest number in `dir`, creating the directory if it is missing and
/// removing stray smaller numbers (a stray `1` is removed by the next look).
fn latest(dir: &str) -> Result<Option<u64>, LockError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::create_dir(dir) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(io_error(dir, "create", e)),
            };
        }
        Err(e) => return Err(io_error(dir, "read", e)),
    };
    let mut numbers: Vec<u64> =
        entries.filter_map(|entry| number(&entry.ok()?.file_name().to_string_lossy())).collect();
    numbers.sort_unstable();
    let latest = numbers.pop();
    for stray in numbers {
        let _ = fs::remove_file(format!("{dir}/{stray}"));
    }
    Ok(latest)
}

/// A counter file's name: decimal digits without a leading zero.
fn number(name: &str) -> Option<u64> {
    let canonical = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0');
    canonical.then(|| name.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("job.lock").to_str().unwrap().to_owned();
        (dir, lock)
    }

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
    fn a_stray_smaller_number_is_ignored_and_removed() {
        let (_dir, lock) = lock();
        take(&lock).unwrap();
        take(&lock).unwrap();
        fs::write(format!("{}/1", dir(&lock)), "").unwrap(); // a stalled first taker's create
        assert_eq!(current(&lock).unwrap(), Some(2));
        assert_eq!(take(&lock).unwrap(), 3);
        assert_eq!(fs::read_dir(dir(&lock)).unwrap().count(), 1);
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
