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
//! and stale breaks.
//!
//! The first taker finds no directory and makes it, with the filesystem's
//! clock in microseconds inside (the date of the directory it made), so the
//! first number is that plus one: about 1.8 × 10^15 in 2026. That is what
//! keeps numbers rising when the directory is removed (a cleanup script, a
//! neighbour): the counter made again starts above every number the old one
//! handed out, provided the old one handed out fewer than one per
//! microsecond of its life (a lock manages thousands a second) and the
//! filesystem's clock did not go back in between. Where files are dated in
//! whole seconds, a counter removed and made again within one second can
//! repeat numbers. Counters stop at [`MAX`] (2^53 - 1, exact in every
//! language) rather than wrap; only a planted name gets there.
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
//! never a second file. A name that exists is therefore the counter. A
//! taker lists the directory and renames the name it found. A listing that
//! misses the latest name (a caching network client) makes the rename
//! fail, never succeed wrongly; the taker then tries the numbers above it
//! by name, which such a client looks up afresh, since the counter is past
//! every number it has been.
//! A listing that shows no number at all, which a rename under way can
//! cause, is made again before the counter is called lost: the listing
//! only proposes a number, and the rename still decides.
//!
//! A taker never starts from the number it took last without listing,
//! though that would save the listing (three calls) whenever nobody else
//! took one since. Where a rename deletes its target first (smbnetfs,
//! below), that guess is harmful in exactly the common case of one other
//! taker since: the rename of its old `42` onto `43` deletes the counter
//! `43` and then fails, and no counter is left, so every later acquire
//! fails until the directory is removed by hand. The simulator's `smb`
//! profile found it with slot holders taking numbers in turn, with no race
//! at all (`--mode slots --hold 0.5`, seed 701 of the first 1,000), while
//! processes still tried their last number first.
//!
//! The compare-and-swap needs a rename that fails when its source is gone
//! and never harms its target. smbnetfs renames onto an existing name by
//! deleting it first, so two takers racing for one number there can both
//! fail and leave no counter (21 of 30 such races here). Takers race only
//! when two publishers both believe they may hold the lock: after a
//! verification delay, [`crate::protocol`] reads back before taking a
//! number, so only the last writer of such a race takes one.

use std::fs;
use std::io;

use std::time::{Duration, UNIX_EPOCH};

use crate::files::{self, io_error, DirState};
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
    take_in(&dir(lock), lock, Start::Clock)
}

/// Takes the next number of the counter in `dir`, beside the lock at
/// `lock` (the queue's tickets count this way too: [`crate::queue`]).
pub(crate) fn take_in(dir: &str, lock: &str, start: Start) -> Result<u64, LockError> {
    take_listing(dir, lock, start, &latest)
}

/// Where a new counter starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the filesystem's clock, in microseconds: fencing numbers, which
    /// must stay above those of a counter that was removed (see the module
    /// docs).
    Clock,
    /// At 0: the queue's tickets, which only need to be unique while the
    /// queue lives.
    Zero,
}

/// The most entries a counter's directory is listed for.
const MAX_LISTED: usize = 4096;

/// The largest number a counter hands out: 2^53 - 1, the largest integer
/// every language holds exactly (a JavaScript number, a double). A counter
/// at it refuses to go on rather than wrap (only someone planting a name
/// gets it there: at a microsecond clock's start it lasts until 2255).
pub const MAX: u64 = (1 << 53) - 1;

/// [`take_in`], listing the directory with `list` (tests give a listing
/// that stays behind, as a caching client's does).
fn take_listing(
    dir: &str,
    lock: &str,
    start: Start,
    list: &dyn Fn(&str) -> Result<Option<u64>, LockError>,
) -> Result<u64, LockError> {
    let dir = dir.to_owned();
    // The number to try without listing: only ever one above a number this
    // taker just failed to rename after a listing (see the module docs).
    let mut guess: Option<u64> = None;
    // Numbers tried upwards since the last listing; `None` before any.
    let mut walked: Option<u32> = None;
    // Every number tried was the counter's once, and a failed rename says
    // the counter is past it: it is at least this.
    let mut floor = 0;
    // Counters this taker found in place but could not see yet.
    let mut unseen = 0;
    for _ in 0..MAX_TRIES {
        let current = match guess.take() {
            Some(n) => n,
            None => match list(&dir)? {
                Some(n) => {
                    walked = Some(0);
                    n.max(floor)
                }
                None => {
                    if create(&dir, lock, start)? == Made::TheirsUnseen {
                        // Another client's counter is in place, and this
                        // client does not show it yet (smbnetfs, a caching
                        // client): look again in a moment, for a while.
                        unseen += 1;
                        if unseen > UNSEEN_TRIES {
                            return Err(LockError::Io(format!(
                                "{dir}: another client made the fencing counter, and this one has not shown it \
                                 for {} s; the share's directory cache is too long for uuidlock (see `uuidlock doctor`)",
                                UNSEEN_PAUSE.as_secs_f64() * UNSEEN_TRIES as f64
                            )));
                        }
                        std::thread::sleep(UNSEEN_PAUSE);
                    }
                    continue;
                }
            },
        };
        if current >= MAX {
            return Err(LockError::Io(format!(
                "{dir} holds the number {current}, the largest uuidlock hands out (2^53 - 1); nothing uuidlock \
                 does gets there, so someone put it there: remove that directory, and the count starts again \
                 from the filesystem's clock"
            )));
        }
        match fs::rename(format!("{dir}/{current}"), format!("{dir}/{}", current + 1)) {
            Ok(()) => return Ok(current + 1),
            // Someone took a number first (a stale handle too: this
            // client's name for it is gone). The counter is past `current`,
            // so try the next number, and list again every WALK of them.
            Err(e) if e.kind() == io::ErrorKind::NotFound || crate::stale::is_stale(&e) => {
                floor = floor.max(current + 1);
                match walked {
                    Some(steps) if steps < WALK => {
                        walked = Some(steps + 1);
                        guess = Some(floor);
                    }
                    _ => walked = None,
                }
            }
            Err(e) => return Err(counter_error(&dir, e)),
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
///
/// A listing made while another taker renames the counter may show
/// neither name: POSIX leaves it open whether a listing under way shows an
/// entry renamed meanwhile. Through the component it does happen: under
/// the queue's crowd of ticket takers, one join in a few hundred met it
/// (`uuidlock contend --processes 64`), where 16,000 native takes by 8
/// threads never did; the layers between (the preview 1 adapter,
/// wasmtime-wasi) handle each entry after reading it, and one renamed in
/// between is not shown. So a listing that shows no number is
/// made again, as [`LISTED_AFTER`] says, before the counter is
/// called lost: a counter that was emptied stays empty, one being renamed
/// shows again at once.
pub(crate) fn latest(dir: &str) -> Result<Option<u64>, LockError> {
    latest_with(dir, &list)
}

/// How long a taker waits before each listing: the first at once; one
/// that showed no number is made again at once, after 1 ms, and after 5 ms.
const LISTED_AFTER: [Duration; 4] =
    [Duration::ZERO, Duration::ZERO, Duration::from_millis(1), Duration::from_millis(5)];

/// [`latest`], listing with `list` (tests give one that misses the counter).
fn latest_with(dir: &str, list: &dyn Fn(&str) -> Result<Listed, LockError>) -> Result<Option<u64>, LockError> {
    for pause in LISTED_AFTER {
        std::thread::sleep(pause);
        match list(dir)? {
            Listed::Absent => return Ok(None),
            Listed::Latest(n) => return Ok(Some(n)),
            Listed::Nothing => {}
        }
    }
    // Never made by uuidlock, which renames the directory into place with
    // its counter inside.
    Err(LockError::Io(format!(
        "{dir} holds no fencing counter: emptied by hand, or lost to a rename that is not atomic on this \
         share (see `uuidlock doctor`; use a verification delay there); remove the directory to start counting again"
    )))
}

/// What one listing of a counter's directory showed.
#[derive(Debug)]
enum Listed {
    /// No directory.
    Absent,
    /// The largest number among its names.
    Latest(u64),
    /// A directory without a number in it.
    Nothing,
}

/// Lists the counter's directory `dir` once.
fn list(dir: &str) -> Result<Listed, LockError> {
    // Listing a FIFO opens it (and blocks), listing a link follows it: look
    // first.
    match files::dir_state(dir)? {
        DirState::Absent => return Ok(Listed::Absent),
        DirState::Dir => {}
        DirState::Other(kind) => return Err(not_a_counter(dir, kind)),
    }
    let entries = match crate::stale::again(|| fs::read_dir(dir)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listed::Absent),
        Err(e) => return Err(counter_error(dir, e)),
    };
    // uuidlock keeps one file there; a directory filled by someone else
    // must not make every acquire list it whole.
    let names: Vec<_> = entries.take(MAX_LISTED + 1).collect();
    if names.len() > MAX_LISTED {
        return Err(LockError::Io(format!(
            "{dir} holds more than {MAX_LISTED} entries, where uuidlock keeps one: someone filled it; remove the \
             directory, and the count starts again from the filesystem's clock"
        )));
    }
    let latest = names.into_iter().filter_map(|entry| number(&entry.ok()?.file_name().to_string_lossy())).max();
    Ok(latest.map_or(Listed::Nothing, Listed::Latest))
}

/// Something that is not a directory at the counter's name `dir`.
fn not_a_counter(dir: &str, kind: &str) -> LockError {
    LockError::Io(format!(
        "{dir} is {kind}, not a directory: uuidlock keeps its counter (fencing numbers, or the queue's tickets) \
         in a directory there, and never makes anything else at that name; remove it"
    ))
}

/// An error using the counter in `dir`, with who must act on a permission.
fn counter_error(dir: &str, e: io::Error) -> LockError {
    // A rename inside a name that is not a directory (replaced since the
    // listing): say what is there.
    if let Ok(DirState::Other(kind)) = files::dir_state(dir) {
        return not_a_counter(dir, kind);
    }
    if e.kind() == io::ErrorKind::PermissionDenied {
        return LockError::Io(format!(
            "cannot use the counter in {dir}: permission denied; it belongs to another user who made it without \
             write access for this one: its owner (or root) must make it writable by every user of this lock \
             (chmod g+rwx, or a+rwx), or remove it"
        ));
    }
    io_error(dir, "take a number in", e)
}

/// What [`create`] found.
#[derive(Debug, PartialEq, Eq)]
enum Made {
    /// Ours is in place, or a counter this client shows.
    InPlace,
    /// Another taker's counter is in place (the rename onto its name
    /// failed), but this client does not show it yet.
    TheirsUnseen,
}

/// How long, and how often, a taker waits for a counter another client
/// made to show.
const UNSEEN_PAUSE: Duration = Duration::from_millis(20);
const UNSEEN_TRIES: u32 = 100;

/// Makes the counter's directory `dir` with its first number inside
/// (`start`): built aside (beside `lock`), renamed into place. If another
/// taker's is there first, ours is removed.
fn create(dir: &str, lock: &str, start: Start) -> Result<Made, LockError> {
    // Named as staged markers are (`<PATH>.<UUID>.new`), which the lock
    // name's length limit already allows for.
    let staged = format::staged_path(lock, &Token::generate("").map_err(LockError::Io)?);
    files::create_dir_fresh(&staged).map_err(|e| io_error(dir, "create", e))?;
    // Made exclusively, so that nothing planted in the staged directory is
    // opened; dated through its own descriptor, by the filesystem's clock
    // (shared by every client of a share, where this machine's may be off),
    // so that a directory swapped in for the staged one cannot lend its
    // date. The counter file is closed before the renames: SMB refuses to
    // rename a directory with a file open inside (EACCES).
    let zero = format!("{staged}/0");
    let made = files::create_fresh(&zero).and_then(|file| file.metadata());
    let first = match (start, &made) {
        (Start::Clock, Ok(meta)) => meta
            .modified()
            .ok()
            .and_then(|date| date.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(MAX).min(MAX / 2)),
        _ => 0,
    };
    let counter = format!("{staged}/{first}");
    let made = made
        .and_then(|_| if first == 0 { Ok(()) } else { fs::rename(&zero, &counter) })
        .and_then(|()| fs::rename(&staged, dir));
    let placed = match made {
        Ok(()) => Ok(Made::InPlace),
        // Our staged directory was reclaimed as a leftover while we stalled
        // (crate::sweep): the caller looks again, and builds another.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Made::InPlace),
        // Someone else's counter is in place (EEXIST or ENOTEMPTY): use it.
        Err(_) if files::dir_state(dir) == Ok(DirState::Dir) => Ok(Made::InPlace),
        // ... though this client does not show it yet.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists || e.kind() == io::ErrorKind::DirectoryNotEmpty => {
            Ok(Made::TheirsUnseen)
        }
        Err(e) => Err(io_error(dir, "create", e)),
    };
    // Left only where the renames failed: emptied through a descriptor
    // that follows no link, as any directory of ours.
    files::remove_dir_whole(&staged);
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
    use std::time::SystemTime;

    /// Takes a number from a counter that starts at 0 (as the queue's
    /// tickets do): the counter's mechanics, with numbers easy to read.
    fn take(lock: &str) -> Result<u64, LockError> {
        take_in(&dir(lock), lock, Start::Zero)
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

    fn micros_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
    }

    // Fencing numbers start at the filesystem's clock, in microseconds.
    #[test]
    fn fencing_numbers_start_at_the_filesystems_clock() {
        let (_dir, lock) = lock();
        let before = micros_now();
        let first = super::take(&lock).unwrap();
        assert!(first > before.saturating_sub(2_000_000) && first <= micros_now() + 2_000_000, "{first}");
        assert_eq!(super::take(&lock).unwrap(), first + 1);
    }

    // Finding 9 of the hostile-directory review: `rm -rf` of the counter
    // while the lock was held restarted the count at 1. A counter made again
    // starts above every number the removed one handed out.
    #[test]
    fn a_removed_counter_starts_again_above_the_old_numbers() {
        let (_dir, lock) = lock();
        let mut last = 0;
        for _ in 0..3 {
            for _ in 0..100 {
                let next = super::take(&lock).unwrap();
                assert!(next > last, "{next} after {last}");
                last = next;
            }
            fs::remove_dir_all(dir(&lock)).unwrap();
            // The file dates' resolution (a kernel tick) must pass.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    // Finding 9: a planted number at the top must not wrap to 0.
    #[test]
    fn a_counter_at_the_top_refuses_rather_than_wraps() {
        let (_dir, lock) = lock();
        take(&lock).unwrap();
        fs::rename(format!("{}/1", dir(&lock)), format!("{}/{}", dir(&lock), u64::MAX)).unwrap();
        let Err(LockError::Io(message)) = take(&lock) else { panic!("took a number past the top") };
        assert!(message.contains("2^53") && message.contains("remove"), "{message}");
        fs::rename(format!("{}/{}", dir(&lock), u64::MAX), format!("{}/{}", dir(&lock), MAX - 1)).unwrap();
        assert_eq!(take(&lock).unwrap(), MAX);
        assert!(take(&lock).is_err());
    }

    // Finding 1 and 10: a FIFO, a file or a link at the counter's name is
    // refused at once, with a message that names it, never listed (which
    // would block on the FIFO) or followed.
    #[test]
    fn anything_but_a_directory_at_the_counters_name_is_refused() {
        let (root, lock) = lock();
        let fifo = std::ffi::CString::new(dir(&lock)).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let Err(LockError::Io(message)) = take(&lock) else { panic!() };
        assert!(message.contains("named pipe") && message.contains("remove it"), "{message}");
        fs::remove_file(dir(&lock)).unwrap();
        fs::write(dir(&lock), b"").unwrap();
        let Err(LockError::Io(message)) = take(&lock) else { panic!() };
        assert!(message.contains("not a directory"), "{message}");
        fs::remove_file(dir(&lock)).unwrap();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("5"), b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir(&lock)).unwrap();
        let Err(LockError::Io(message)) = take(&lock) else { panic!() };
        assert!(message.contains("symbolic link"), "{message}");
        assert!(elsewhere.join("5").exists(), "the link was followed");
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
    fn a_counter_moved_on_by_others_is_listed_first() {
        let (_dir, lock) = lock();
        assert_eq!(take(&lock).unwrap(), 1);
        // Another process moves the counter on; the next take lists it.
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
        // Others took 300 numbers since.
        fs::rename(format!("{}/1", dir(&lock)), format!("{}/301", dir(&lock))).unwrap();
        let stale = |_: &str| Ok(Some(1));
        assert_eq!(take_listing(&dir(&lock), &lock, Start::Zero, &stale).unwrap(), 302);
        assert_eq!(take(&lock).unwrap(), 303);
    }

    // Through the component a listing can miss the counter renamed while
    // it lists: one ticket in a few hundred, with 64 waiters taking them
    // (`uuidlock contend`).
    #[test]
    fn a_listing_that_misses_the_counter_is_made_again() {
        let (_dir, lock) = lock();
        take(&lock).unwrap();
        for misses in 1..LISTED_AFTER.len() {
            let left = std::cell::Cell::new(misses);
            let missing = |dir: &str| match left.get() {
                0 => list(dir),
                n => {
                    left.set(n - 1);
                    Ok(Listed::Nothing)
                }
            };
            let taken = take_listing(&dir(&lock), &lock, Start::Zero, &|dir| latest_with(dir, &missing));
            assert_eq!(taken.unwrap(), misses as u64 + 1, "after {misses} listings without the counter");
        }
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
