//! Leftovers: what killed processes leave beside a lock, and reclaiming it.
//!
//! A process killed at the wrong moment leaves files beside `PATH`, none of
//! which blocks anyone, but which pile up in a shared directory:
//!
//! - a staging file `<PATH>.<UUID>.new`: a marker, claim, heartbeat or
//!   status probe being written, or a fencing counter directory being built
//!   ([`crate::fence`]), when the process died before linking or renaming it
//!   and removing the name;
//! - a heartbeat `<PATH>.<UUID>.beat` of an instance that is gone (its
//!   holder died while renewing, after the lock was broken);
//! - a claim `<PATH>.<UUID>.claim` on an instance that is gone (its
//!   claimant died after removing the instance).
//!
//! A holder reclaims them just after it acquired: when it broke a stale lock
//! on the way (someone died), and at every [`EVERY`]th fencing number. The
//! uncontended acquire pays one directory listing in [`EVERY`].
//!
//! # Why it removes nothing anyone needs
//!
//! 1. *Heartbeats and claims of gone instances.* A heartbeat or a claim
//!    named by token `T` exists only after `T` was published at `PATH`
//!    (only `T`'s holder renews, only a releaser or a breaker that read `T`
//!    there claims). The sweeper lists the directory *first*, then reads
//!    `PATH` and finds its own token. So every instance named in the
//!    listing other than its own was published before its own, and is gone
//!    for good (an instance never comes back: [`crate::protocol`], point
//!    3). Its heartbeat speaks for nobody, and a claim on it guards nothing:
//!    whoever holds such a claim acts only after reading `T` at `PATH`. If a
//!    successor had replaced the sweeper's lock before the listing, the read
//!    after it finds the successor and the sweep removes nothing. Claims on
//!    claims are kept while the claim they guard is there.
//! 2. *Staging files.* A live process's staging file lives for a few file
//!    operations. Only one dated [`MIN_AGE`] or more before the sweeper's own
//!    lock file (both dates from the filesystem's clock) is removed: its
//!    process died, or stalled for seconds in the middle of a step. A stalled
//!    process loses nothing: a link or a rename from a vanished staging file
//!    fails with "not found", and the step is staged again
//!    ([`crate::files::publish`], [`crate::fence`]), or, for a renewal,
//!    retried at the next one.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::format::{Marker, Token};
use crate::{claim, files};

/// Reclaim at every fencing number that is a multiple of this.
pub const EVERY: u64 = 16;

/// How old a staging file must be, by the filesystem's clock, to be taken
/// for a leftover: a hundred thousand times what a step takes.
pub const MIN_AGE: Duration = Duration::from_secs(5);

/// Reclaims the leftovers beside the lock at `lock`, held with `ours`.
/// Best effort: anything it cannot list, date or remove is left.
pub fn reclaim(lock: &str, ours: &Token) {
    let path = Path::new(lock);
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else { return };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(dir) else { return };
    let prefix = format!("{name}.");
    let leftovers: Vec<(String, String, Kind)> = entries
        .filter_map(|entry| {
            let file_name = entry.ok()?.file_name().into_string().ok()?;
            let (uuid, kind) = derived(file_name.strip_prefix(&prefix)?)?;
            Some((dir.join(&file_name).to_str()?.to_owned(), uuid.to_owned(), kind))
        })
        .collect();
    if leftovers.is_empty() {
        return;
    }
    // After the listing: still ours, so everything listed is older (1).
    let Ok(Some(content)) = files::read_dated(lock) else { return };
    if !matches!(content.marker(), Marker::Uuidlock(held) if held.token == *ours) {
        return;
    }
    // Every claim, read once: what it guards, and how long it lives.
    let claims: HashMap<&str, files::Content> = leftovers
        .iter()
        .filter(|(_, _, kind)| *kind == Kind::Claim)
        .filter_map(|(claim, _, _)| Some((claim.as_str(), files::read_claim(claim).ok()??)))
        .collect();
    // The claims that a claim holds: a claim's marker names its claimant,
    // and a claim no uuidlock party wrote is broken under a claim named by
    // what it is (crate::claim::junk_token).
    let guarded: HashSet<String> = claims
        .values()
        .map(|content| match content.marker() {
            Marker::Uuidlock(held) if content.kind == files::Kind::Regular => held.token.uuid().to_owned(),
            _ => claim::junk_token_of(content.kind, &content.bytes, content.modified).uuid().to_owned(),
        })
        .collect();
    for (leftover, uuid, kind) in &leftovers {
        let gone = uuid != ours.uuid();
        match kind {
            Kind::Beat if gone => drop(fs::remove_file(leftover)),
            // A file, or (without hard links) a directory renamed aside whole.
            Kind::Claim
                if gone && !guarded.contains(uuid) && outlived(claims.get(leftover.as_str()), content.modified) =>
            {
                drop(files::remove_within(leftover, Duration::ZERO))
            }
            Kind::Staged if older_than(leftover, content.modified, MIN_AGE) => remove_staged(leftover),
            _ => {}
        }
    }
}

/// Whether a claim (read as `claim`) may go: one with a lifetime (a
/// tombstone, or a dead claimant's) once it is older than that lifetime by
/// the filesystem's clock (`now`, the sweeper's own lock's date); an empty
/// one, or one no uuidlock party wrote, at once.
fn outlived(claim: Option<&files::Content>, now: Option<SystemTime>) -> bool {
    let Some(claim) = claim else { return false };
    match claim.marker() {
        Marker::Uuidlock(held) if claim.kind == files::Kind::Regular => match (held.stale_after, claim.modified, now) {
            (None, _, _) => true,
            (Some(lifetime), Some(written), Some(now)) => now.duration_since(written).is_ok_and(|age| age >= lifetime),
            // Undated: kept; a contender breaks it as a dead claimant's.
            (Some(_), _, _) => false,
        },
        _ => true,
    }
}

/// The kinds of names uuidlock derives from a lock file's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Staged,
    Beat,
    Claim,
}

/// Splits `<UUID>.<KIND>` (the part after `<NAME>.`) into the UUID and
/// the kind; `None` for any other name.
fn derived(rest: &str) -> Option<(&str, Kind)> {
    let (uuid, suffix) = rest.split_once('.')?;
    let kind = match suffix {
        "new" => Kind::Staged,
        "beat" => Kind::Beat,
        "claim" => Kind::Claim,
        _ => return None,
    };
    Token::parse(uuid).ok().filter(|token| token.prefix().is_empty()).map(|_| (uuid, kind))
}

/// Whether `path` was written at least `age` before `now` (both by the
/// filesystem's clock); `false` when either date is unknown.
fn older_than(path: &str, now: Option<SystemTime>, age: Duration) -> bool {
    match (files::modified(path), now) {
        (Some(written), Some(now)) => now.duration_since(written).is_ok_and(|elapsed| elapsed >= age),
        _ => false,
    }
}

/// Removes a staging file, or a staged directory: a fencing counter's with
/// the counter inside, or a claim's (without hard links) with its marker
/// (what a directory holds beyond a file or two stays, renamed aside).
fn remove_staged(path: &str) {
    if fs::remove_file(path).is_ok() || files::dir_state(path) != Ok(files::DirState::Dir) {
        return;
    }
    // Renamed aside whole first, never emptied in place: a process stalled
    // before renaming its staged claim into place then finds it gone and
    // stages again, where emptied in place it would publish an empty
    // directory, which anyone may break as junk (found in review).
    let _ = files::remove_within(path, Duration::ZERO);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format;

    #[test]
    fn only_derived_names_are_leftovers() {
        let uuid = "7c9e6679-7425-40de-944b-e07a4b7b7bd1";
        assert_eq!(derived(&format!("{uuid}.new")), Some((uuid, Kind::Staged)));
        assert_eq!(derived(&format!("{uuid}.beat")), Some((uuid, Kind::Beat)));
        assert_eq!(derived(&format!("{uuid}.claim")), Some((uuid, Kind::Claim)));
        for other in ["fence", "bak", &format!("{uuid}.old"), "not-a-uuid.new", &format!("x-{uuid}.new"), ".new"] {
            assert_eq!(derived(other), None, "{other}");
        }
    }

    #[test]
    fn the_format_names_are_the_ones_swept() {
        let token = Token::generate("").unwrap();
        let lock = "/d/job.lock";
        for (name, kind) in [
            (format::staged_path(lock, &token), Kind::Staged),
            (format::beat_path(lock, &token), Kind::Beat),
            (format::claim_path(lock, &token), Kind::Claim),
        ] {
            let rest = name.strip_prefix("/d/job.lock.").unwrap();
            assert_eq!(derived(rest), Some((token.uuid(), kind)));
        }
    }

    /// A lock held in a directory of its own: the directory, the lock's path
    /// and the holder's token.
    fn held() -> (tempfile::TempDir, String, Token) {
        let dir = crate::scratch::tempdir();
        let lock = dir.path().join("job.lock").to_str().unwrap().to_owned();
        let options = crate::Options { verification_delay: Duration::ZERO, ..crate::Options::default() };
        let ours = crate::protocol::acquire(&lock, &options).unwrap().token;
        (dir, lock, ours)
    }

    fn write_dated(path: &str, bytes: &[u8], ago: Duration) {
        fs::write(path, bytes).unwrap();
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    // What crashed processes left is reclaimed; what the live holder, a
    // process in the middle of a step, or a claim on a claim still needs is
    // kept.
    #[test]
    fn leftovers_are_reclaimed_and_live_files_kept() {
        let (dir, lock, ours) = held();
        let other = || Token::generate("").unwrap();
        let (dead_staged, fresh_staged, dead_beat, our_beat) = (
            format::staged_path(&lock, &other()),
            format::staged_path(&lock, &other()),
            format::beat_path(&lock, &other()),
            format::beat_path(&lock, &ours),
        );
        write_dated(&dead_staged, b"x", Duration::from_secs(60));
        write_dated(&fresh_staged, b"x", Duration::ZERO);
        write_dated(&dead_beat, b"x", Duration::ZERO);
        write_dated(&our_beat, b"x", Duration::ZERO);
        // A dead claimant's claim on a gone instance, and a claim on that
        // claim (kept while the claim it guards is there).
        let (claimant, guard) = (other(), other());
        let gone_claim = format::claim_path(&lock, &other());
        let claim_on_claim = format::claim_path(&lock, &claimant);
        fs::write(&gone_claim, crate::format::Held::new(claimant, Some(Duration::from_secs(1))).encode()).unwrap();
        write_dated(&gone_claim, &fs::read(&gone_claim).unwrap(), Duration::from_secs(60));
        fs::write(&claim_on_claim, crate::format::Held::new(guard, Some(Duration::from_secs(1))).encode()).unwrap();
        write_dated(&claim_on_claim, &fs::read(&claim_on_claim).unwrap(), Duration::from_secs(60));
        // A tombstone younger than its lifetime (a breaker's claim on an
        // instance just broken): kept until every ghost is gone.
        let tombstone = format::claim_path(&lock, &other());
        fs::write(&tombstone, crate::format::Held::new(other(), Some(Duration::from_secs(60))).encode()).unwrap();
        let staged_dir = format::staged_path(&lock, &other());
        fs::create_dir(&staged_dir).unwrap();
        write_dated(&format!("{staged_dir}/0"), b"", Duration::ZERO);
        let unrelated = dir.path().join("job.lock.notes").to_str().unwrap().to_owned();
        fs::write(&unrelated, b"mine").unwrap();
        let dir_date = fs::File::open(&staged_dir).unwrap();
        dir_date.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();

        reclaim(&lock, &ours);
        let exists = |path: &str| fs::exists(path).unwrap();
        assert!(!exists(&dead_staged) && !exists(&dead_beat) && !exists(&gone_claim) && !exists(&staged_dir));
        assert!(exists(&fresh_staged) && exists(&our_beat) && exists(&claim_on_claim) && exists(&unrelated));
        assert!(exists(&tombstone), "a young tombstone was removed");
        assert!(exists(&lock));
        reclaim(&lock, &ours);
        assert!(!exists(&claim_on_claim), "a claim on a claim that is gone is reclaimed next time");
    }

    // A staged directory is renamed aside whole, never emptied in place: a
    // claimant stalled before its rename then finds its staged directory
    // gone and stages again, where emptied in place it would publish an
    // empty directory, junk that anyone breaks while it holds the claim
    // (found in review). Its name is free even when what it holds cannot
    // be removed (a directory inside).
    #[test]
    fn a_staged_directory_is_renamed_aside_never_emptied_in_place() {
        let (dir, lock, ours) = held();
        let staged = format::staged_path(&lock, &Token::generate("").unwrap());
        fs::create_dir(&staged).unwrap();
        fs::create_dir(format!("{staged}/inside")).unwrap();
        fs::File::open(&staged).unwrap().set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
        reclaim(&lock, &ours);
        assert!(!fs::exists(&staged).unwrap(), "the staged name is still taken");
        let aside: Vec<_> =
            fs::read_dir(dir.path()).unwrap().flatten().filter(|entry| entry.path().join("inside").exists()).collect();
        assert_eq!(aside.len(), 1, "what it held was not kept aside");
    }

    // A sweeper that lost its lock before listing (it stalled past its
    // lifetime and a successor took over) removes nothing.
    #[test]
    fn a_sweeper_that_no_longer_holds_the_lock_removes_nothing() {
        let dir = crate::scratch::tempdir();
        let lock = dir.path().join("job.lock").to_str().unwrap().to_owned();
        let options = crate::Options { verification_delay: Duration::ZERO, ..crate::Options::default() };
        let successor = crate::protocol::acquire(&lock, &options).unwrap().token;
        let beat = format::beat_path(&lock, &successor);
        fs::write(&beat, b"x").unwrap();
        reclaim(&lock, &Token::generate("").unwrap());
        assert!(fs::exists(&beat).unwrap());
    }
}
