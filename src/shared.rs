//! Shared locks and N-slot semaphores: the holders' directory
//! `<PATH>.shared/`, built on the exclusive lock.
//!
//! # Modes
//!
//! - **Exclusive** (a *writer*): holds `PATH` by the protocol of
//!   [`crate::protocol`], then waits, still holding it, until no live entry
//!   is left in `<PATH>.shared/` (dead ones it breaks).
//! - **Shared** (a *reader*): takes `PATH` as a *gate*, by the same
//!   protocol (queue, fence, stale breaking and all), publishes an entry
//!   `<PATH>.shared/<K>` holding its marker at the smallest free index `K`,
//!   and releases the gate. Readers hold beside each other, never beside a
//!   writer.
//! - **Slots(N)** (a semaphore): as a reader, but only at an index below
//!   `N`; while all `N` are taken it waits holding the gate, so that those
//!   behind it wait in line (the queue) and no writer slips in. The index
//!   is the holder's slot.
//!
//! An entry is a lock file in every respect: the same marker (token and
//! lifetime), its heartbeat, claims and staging files beside it
//! (`<PATH>.shared/<K>.<UUID>.beat`, ...), renewed, released and broken by
//! the very functions that renew, release and break `PATH`, applied to the
//! entry's path. Before publishing at index `K` the registrant makes the
//! *span* files `span1` ... `span<b>` (`b` the bit length of `K`), each by
//! an exclusive create (which a caching client sends to the server, where
//! a look could be answered from a stale cache), so that
//! whoever looks for entries knows every index that may be taken, `K <
//! 2^m` with `span<m>` the last span there, and finds them by looking up
//! names, never by listing the directory (a caching client's listing can
//! be seconds behind: sshfs's `dir_cache`; its lookups of a name are not).
//!
//! # Why it excludes
//!
//! The exclusive protocol's points 1-10 ([`crate::protocol`]) hold for
//! `PATH` and for each entry, which are lock files alike. On top of them:
//!
//! 1. *Entries are published only under the gate.* A registrant publishes
//!    its entry while holding `PATH`, then releases `PATH`; a release reads
//!    `PATH` under its claim before deleting it. If the release finds the
//!    gate no longer ours (broken while the registrant stalled past its
//!    lifetime), the registrant withdraws its entry and starts over, and
//!    never reports holding. So every entry whose holder goes on to hold
//!    was published while its holder held `PATH` without a break, from the
//!    gate's read-back to the release's read (point 3).
//! 2. *A reader never holds beside a writer.* A writer holds `PATH` from
//!    before it looks for entries to its own release, and holds of `PATH`
//!    never overlap (point 1). A reader that registered under an earlier
//!    hold published its entry, and its spans, before releasing `PATH`, so
//!    before the writer could take it: the writer's look finds the entry
//!    (by name: a lookup shows a file made before it, on every share this
//!    runs on, or exclusive create could not work either) and waits until
//!    the reader releases or is broken as dead. A reader arriving later
//!    cannot take the gate until the writer releases `PATH`.
//! 3. *At most N hold slots.* A registrant publishes at index `K < N` with
//!    an exclusive create, which fails while the index is taken (point 1
//!    of the protocol, per entry): two holders never share an index, so at
//!    most `N` hold indexes below `N`. (A semaphore whose users disagree on
//!    `N` admits at most the largest `N`; readers on the same path take
//!    indexes too, and so count against the slots.)
//! 4. *Dead holders are broken as dead locks are.* Only a gate holder (a
//!    writer, or a registrant) breaks an entry, and only under the entry's
//!    claim after seeing it silent for its lifetime (protocol points 4, 8,
//!    10): a live reader's entry is never deleted; an entry without a
//!    lifetime never is. Something no uuidlock process writes at an index
//!    (bytes that are no marker) is broken at once, under a claim named by
//!    what it is; a link, a directory or a FIFO there is refused with an
//!    error naming it, never followed.
//! 5. *Fences.* A reader's or a slot holder's fencing number is the one it
//!    took for the gate: larger than that of every writer (and reader)
//!    before it, smaller than that of every writer after it. A resource
//!    that remembers the largest writer's number can refuse a reader whose
//!    number is smaller (it read before that write); a semaphore's slot
//!    holder passes `(slot, fence)`, and a resource per slot refuses lower
//!    numbers as for a lock.
//! 6. *The lease contract, as for a lock.* A holder of any mode stalled past
//!    its lifetime may be broken, and a conflicting holder admitted; its
//!    next renewal says so, and the fence tells the two apart.
//! 7. *Peers that know only exclusive locks* (uuidlock 0.2,
//!    `filelock.SoftFileLock`, `uuid-filelock`) hold `PATH` and know nothing
//!    of entries: they never overlap with a uuidlock writer (it holds
//!    `PATH`), and readers cannot enter while they hold `PATH`, but they do
//!    not wait for readers already in.
//!
//! Cleaning up: the holders' directory and its spans, once made, stay:
//! uuidlock never removes them. A client that caches names can answer
//! "there" for a name removed through another client, even to `mkdir` and
//! to an exclusive create (sshfs with its `dir_cache` answers the kernel's
//! check from its cache; the create never reaches the server): a span
//! removed by a writer's clean-up could be taken for there, and an entry
//! published beyond the spans, where no writer looks (point 2); a removed
//! directory was taken for there and the entry's create failed (found on
//! the sshfs bed in CI: "cannot create .../contend.lock.shared/0: its
//! directory does not exist"). A span that stays is always true. Spans
//! that are too many (after a crowd of readers, or made by a registrant
//! stalled past its gate) cost lookups, never exclusion. Leftovers beside
//! an entry (a killed holder's staging file, heartbeat or claim) are
//! reclaimed by a later holder of the same index ([`crate::sweep`], with
//! the entry as the lock).

use std::io;
use std::time::SystemTime;

use crate::claim::{self, Observed, Watch};
use crate::files::{self, Content, Created, DirState, Fallback, Kind};
use crate::format::{self, Held, Marker, Token};
use crate::LockError;

/// The most slots a semaphore may have.
pub const MAX_SLOTS: u32 = 1024;

/// Spans beyond this are never looked for: at most 2^16 holders at once
/// (and a neighbour planting span files costs lookups, at most 2^16).
const MAX_SPAN: u32 = 16;

/// How a lock is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One holder, beside nobody (a writer).
    #[default]
    Exclusive,
    /// Any number of holders beside each other, never beside an exclusive
    /// one (readers).
    Shared,
    /// At most this many holders at once (a semaphore); each learns its slot.
    Slots(u32),
}

impl Mode {
    /// Refuses a semaphore of no slots, or of more than [`MAX_SLOTS`].
    ///
    /// # Errors
    /// [`LockError::InvalidOptions`] naming the limit.
    pub fn check(self) -> Result<(), LockError> {
        match self {
            Mode::Slots(n) if n == 0 || n > MAX_SLOTS => {
                Err(LockError::InvalidOptions(format!("a semaphore has {n} slots; it must have from 1 to {MAX_SLOTS}")))
            }
            _ => Ok(()),
        }
    }
}

/// The holders' directory of the lock at `lock`: `<PATH>.shared`.
pub fn dir(lock: &str) -> String {
    format!("{lock}.shared")
}

/// The entry at `index`: `<PATH>.shared/<index>`.
pub fn entry_path(lock: &str, index: u32) -> String {
    format!("{}/{index}", dir(lock))
}

fn span_path(lock: &str, span: u32) -> String {
    format!("{}/span{span}", dir(lock))
}

/// The bit length of `index`: the spans an entry at `index` needs.
fn spans_for(index: u32) -> u32 {
    u32::BITS - index.leading_zeros()
}

/// Whether anything at all is at `path` (looked at, never followed).
fn exists(path: &str) -> Result<bool, LockError> {
    match crate::stale::again(|| std::fs::symlink_metadata(path)) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(files::io_error(path, "inspect", e)),
    }
}

/// How many indexes may be taken: `2^m`, with `span<m>` the last span
/// there (`None` when there is no holders' directory).
fn bound(lock: &str) -> Result<Option<u32>, LockError> {
    match files::dir_state(&dir(lock))? {
        DirState::Absent => return Ok(None),
        DirState::Other(kind) => return Err(not_a_dir(lock, kind)),
        DirState::Dir => {}
    }
    let mut spans = 0;
    while spans < MAX_SPAN && exists(&span_path(lock, spans + 1))? {
        spans += 1;
    }
    Ok(Some(1 << spans))
}

fn not_a_dir(lock: &str, kind: &str) -> LockError {
    LockError::Io(format!(
        "{} is {kind}, where uuidlock keeps the shared holders of {lock}; nothing uuidlock makes is one, \
         so someone put it there: remove it",
        dir(lock)
    ))
}

/// Makes the holders' directory, if it is not there.
fn make_dir(lock: &str) -> Result<(), LockError> {
    let dir = dir(lock);
    for _ in 0..3 {
        let Err(e) = std::fs::create_dir(&dir) else { return Ok(()) };
        // Whatever the error, look: sftp answers "exists" as EPERM, for
        // `mkdir` as for an exclusive create (found by the simulator's
        // sshfs profile), so only what is there tells.
        match files::dir_state(&dir)? {
            DirState::Dir => return Ok(()),
            DirState::Other(kind) => return Err(not_a_dir(lock, kind)),
            // Removed just now (by hand: uuidlock never removes it): make
            // it again.
            DirState::Absent if e.kind() == io::ErrorKind::AlreadyExists => continue,
            DirState::Absent => return Err(files::io_error(&dir, "create", e)),
        }
    }
    Err(LockError::Io(format!(
        "cannot create {dir}: it was there and gone three times in a row; someone keeps removing it"
    )))
}

/// Takes the smallest free index below `limit` (none: any) for `token`,
/// holding the gate: publishes the entry there, and returns its index;
/// `None` when every index below `limit` is taken by a live holder. Dead
/// holders on the way are broken, junk removed.
pub fn occupy(
    lock: &str,
    token: &Token,
    lifetime: Option<std::time::Duration>,
    limit: Option<u32>,
    watch: &mut Watch,
) -> Result<Option<u32>, LockError> {
    make_dir(lock)?;
    let marker = Held::new(token.clone(), lifetime).encode();
    let limit = limit.unwrap_or(1 << MAX_SPAN);
    let mut index = 0;
    // The spans made (or found there) by this call.
    let mut spans = 0;
    let mut restarts = 0;
    // Entries that were "there" to the create and gone to the read after.
    let mut vanished = 0;
    while index < limit {
        // Spans first: whoever finds the entry must know to look there.
        // Each by an exclusive create, never "look, then make": on NFS the
        // create goes to the server, where a look is answered from the
        // attribute cache (found by the simulator's nfs profile, while
        // writers still removed spans: a writer beside a live reader).
        // Spans now stay once made ("Cleaning up"), so a client that
        // answers even the create from its cache (sshfs) is right too.
        while spans < spans_for(index) {
            match files::create_empty(&span_path(lock, spans + 1)) {
                Ok(_) => spans += 1,
                // The directory removed by hand (uuidlock never removes
                // it): make it all again (a few times: more is someone
                // removing it on purpose).
                Err(_) if restarts < 3 && !exists(&dir(lock))? => {
                    restarts += 1;
                    make_dir(lock)?;
                    (index, spans) = (0, 0);
                }
                Err(e) => return Err(e),
            }
        }
        let entry = entry_path(lock, index);
        match files::publish(&entry, &format::staged_path(&entry, token), &marker, Fallback::Allowed)? {
            Created::Yes => return Ok(Some(index)),
            // Left just now: try it again. A few times only: a caching
            // client can go on answering "there" for an entry removed
            // through another one (see "Cleaning up"); any free index
            // will do, so the next is tried.
            Created::Exists { there: None, .. } if vanished < 3 => vanished += 1,
            Created::Exists { there: None, .. } => (index, vanished) = (index + 1, 0),
            Created::Exists { there: Some(there), now } => {
                if !break_if_dead(&entry, there, now, watch)? {
                    (index, vanished) = (index + 1, 0);
                }
            }
        }
    }
    Ok(None)
}

/// Breaks the entry at `entry`, read as `there`, if its holder is dead or it
/// is junk; returns whether it is gone.
fn break_if_dead(entry: &str, there: Content, now: Option<SystemTime>, watch: &mut Watch) -> Result<bool, LockError> {
    if let Kind::Special(kind) = there.kind {
        return Err(LockError::Io(format!(
            "{entry} is {kind}, where uuidlock keeps a shared holder's entry; nothing uuidlock makes is one, \
             so someone put it there: remove it"
        )));
    }
    let junk = there.kind == Kind::Regular && !matches!(there.marker(), Marker::Uuidlock(_));
    // Dated as the breaker's second look dates it (only a lifetime's).
    let there = match junk {
        true => match files::read_if_lifetime(entry)? {
            Some(again) => again,
            None => return Ok(true),
        },
        false => there,
    };
    let observed = Observed::new(entry, there)?;
    let stale = if junk {
        // Entries are linked in whole, or (without hard links) created and
        // written by a registrant holding the gate: bytes that are no
        // marker (an empty entry: a registrant killed in between) were
        // written by nobody who holds. A registrant merely stalled there
        // was broken off the gate to let this breaker in, and its release
        // of the gate tells it so: it withdraws and never holds (point 1).
        Held::new(claim::junk_token(&observed), Some(format::MIN_STALE_AFTER))
    } else {
        match watch.stale(entry, &observed, now) {
            Some(stale) => stale,
            None => return Ok(false),
        }
    };
    claim::break_stale(entry, &observed, &stale, watch, now)
}

/// The live entries of the lock at `lock` (dead ones broken on the way), by
/// index: what a writer holding `PATH` waits on.
pub fn live(lock: &str, watch: &mut Watch) -> Result<Vec<u32>, LockError> {
    let Some(bound) = bound(lock)? else { return Ok(Vec::new()) };
    // The filesystem's "now", read once, and only if an entry needs it.
    let mut now: Option<Option<SystemTime>> = None;
    let mut live = Vec::new();
    for index in 0..bound {
        let entry = entry_path(lock, index);
        let Some(there) = files::read_beside(&entry)? else { continue };
        let dated = matches!(there.marker(), Marker::Uuidlock(Held { stale_after: Some(_), .. }));
        let now = *now.get_or_insert_with(|| if dated { fs_now(lock) } else { None });
        if !break_if_dead(&entry, there, now, watch)? {
            live.push(index);
        }
    }
    Ok(live)
}

/// The filesystem's clock, read by writing a probe beside the lock.
fn fs_now(lock: &str) -> Option<SystemTime> {
    files::clock(&format::staged_path(lock, &Token::generate("").ok()?))
}

/// The entry of the lock at `lock` that holds `token`, if any.
pub fn find(lock: &str, token: &Token) -> Result<Option<String>, LockError> {
    let Some(bound) = bound(lock)? else { return Ok(None) };
    for index in 0..bound {
        let entry = entry_path(lock, index);
        if let Some(Content { kind: Kind::Regular, bytes, .. }) = files::read_beside(&entry)? {
            if matches!(format::parse(&bytes), Marker::Uuidlock(held) if held.token == *token) {
                return Ok(Some(entry));
            }
        }
    }
    Ok(None)
}

/// Every entry of the lock at `lock`, by index, with what it holds.
pub fn entries(lock: &str) -> Result<Vec<(u32, String)>, LockError> {
    let Some(bound) = bound(lock)? else { return Ok(Vec::new()) };
    let mut found = Vec::new();
    for index in 0..bound {
        let entry = entry_path(lock, index);
        if exists(&entry)? {
            found.push((index, entry));
        }
    }
    Ok(found)
}

/// Removes what an interrupted acquire with `token` may have left in the
/// holders' directory besides its entry: its staging files and heartbeats.
pub fn forget(lock: &str, token: &Token) -> Result<(), LockError> {
    let Some(bound) = bound(lock)? else { return Ok(()) };
    for index in 0..bound {
        let entry = entry_path(lock, index);
        files::remove(&format::staged_path(&entry, token))?;
        files::remove(&format::beat_path(&entry, token))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, Options};
    use crate::scratch;
    use std::time::{Duration, Instant};

    fn fast(mode: Mode) -> Options {
        Options {
            verification_delay: Duration::ZERO,
            retry_interval: Duration::from_millis(5),
            mode,
            ..Options::default()
        }
    }

    fn within(mode: Mode, timeout: f64) -> Options {
        Options { timeout: Some(Duration::from_secs_f64(timeout)), ..fast(mode) }
    }

    fn take(lock: &str, options: &Options) -> Result<protocol::Acquired, LockError> {
        protocol::acquire(lock, options)
    }

    #[test]
    fn readers_hold_together_and_a_writer_waits_for_them() {
        let (_dir, lock) = scratch::lock();
        let r1 = take(&lock, &fast(Mode::Shared)).unwrap();
        let r2 = take(&lock, &fast(Mode::Shared)).unwrap();
        assert_eq!((r1.slot, r2.slot), (None, None));
        assert!(r2.fence > r1.fence);
        assert!(protocol::holds(&lock, r1.token.as_str()).unwrap());
        assert_eq!(protocol::holders(&lock).unwrap().len(), 2);
        assert_eq!(take(&lock, &within(Mode::Exclusive, 0.2)), Err(LockError::Timeout));
        // The writer that gave up left nothing: readers still come in.
        let r3 = take(&lock, &within(Mode::Shared, 1.0)).unwrap();
        for reader in [&r1, &r2, &r3] {
            protocol::release(&lock, reader.token.as_str()).unwrap();
        }
        let writer = take(&lock, &within(Mode::Exclusive, 1.0)).unwrap();
        assert!(writer.fence > r3.fence);
        // No shared holder left; the directory and its spans stay (see
        // "Cleaning up"), empty of entries.
        assert!(live(&lock, &mut Watch::default()).unwrap().is_empty());
        assert!(exists(&dir(&lock)).unwrap() && exists(&span_path(&lock, 1)).unwrap());
        assert_eq!(take(&lock, &within(Mode::Shared, 0.1)).map(|_| ()), Err(LockError::Timeout));
        protocol::release(&lock, writer.token.as_str()).unwrap();
    }

    #[test]
    fn a_waiting_writer_keeps_new_readers_out_and_is_served_first() {
        let (_dir, lock) = scratch::lock();
        let reader = take(&lock, &fast(Mode::Shared)).unwrap();
        let writer = {
            let lock = lock.clone();
            std::thread::spawn(move || take(&lock, &within(Mode::Exclusive, 5.0)))
        };
        // The writer holds the lock file while it waits for the reader.
        let start = Instant::now();
        while !exists(&lock).unwrap() {
            assert!(start.elapsed() < Duration::from_secs(5), "the writer never took the lock file");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(take(&lock, &within(Mode::Shared, 0.2)).map(|_| ()), Err(LockError::Timeout));
        protocol::release(&lock, reader.token.as_str()).unwrap();
        let writer = writer.join().unwrap().unwrap();
        assert!(writer.fence > reader.fence);
        protocol::release(&lock, writer.token.as_str()).unwrap();
        take(&lock, &within(Mode::Shared, 1.0)).unwrap();
    }

    #[test]
    fn a_semaphore_admits_n_holders_in_distinct_slots() {
        let (_dir, lock) = scratch::lock();
        let held: Vec<_> = (0..3).map(|_| take(&lock, &fast(Mode::Slots(3))).unwrap()).collect();
        let mut slots: Vec<_> = held.iter().map(|held| held.slot.unwrap()).collect();
        slots.sort_unstable();
        assert_eq!(slots, [0, 1, 2]);
        assert_eq!(take(&lock, &within(Mode::Slots(3), 0.2)).map(|_| ()), Err(LockError::Timeout));
        protocol::release(&lock, held[1].token.as_str()).unwrap();
        let next = take(&lock, &within(Mode::Slots(3), 1.0)).unwrap();
        assert_eq!(next.slot, held[1].slot);
        // A writer waits for all of them.
        assert_eq!(take(&lock, &within(Mode::Exclusive, 0.1)).map(|_| ()), Err(LockError::Timeout));
        let status: Vec<u32> = protocol::holders(&lock).unwrap().into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(status, [0, 1, 2]);
    }

    #[test]
    fn a_dead_shared_holder_is_broken_and_a_renewing_one_never() {
        let (_dir, lock) = scratch::lock();
        let lifetime = Duration::from_millis(500);
        let options = |mode| Options { stale_after: Some(lifetime), ..fast(mode) };
        let live = take(&lock, &options(Mode::Shared)).unwrap();
        let dead = take(&lock, &options(Mode::Shared)).unwrap();
        let renewer = {
            let (lock, token) = (lock.clone(), live.token.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(1500) {
                    protocol::refresh(&lock, token.as_str()).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        assert_eq!(
            take(&lock, &Options { timeout: Some(Duration::from_secs(1)), ..options(Mode::Exclusive) }).map(|_| ()),
            Err(LockError::Timeout)
        );
        renewer.join().unwrap();
        // The dead one was broken on the way; the live one stopped renewing.
        assert_eq!(protocol::refresh(&lock, dead.token.as_str()), Err(LockError::NotOwner));
        let writer =
            take(&lock, &Options { timeout: Some(Duration::from_secs(3)), ..options(Mode::Exclusive) }).unwrap();
        assert_eq!(protocol::refresh(&lock, live.token.as_str()), Err(LockError::NotOwner));
        protocol::release(&lock, writer.token.as_str()).unwrap();
    }

    #[test]
    fn release_refresh_holds_and_abandon_find_the_entry() {
        let (_dir, lock) = scratch::lock();
        let reader = take(&lock, &Options { stale_after: Some(Duration::from_secs(5)), ..fast(Mode::Shared) }).unwrap();
        let token = reader.token.as_str();
        assert!(protocol::holds(&lock, token).unwrap());
        protocol::refresh(&lock, token).unwrap();
        protocol::release(&lock, token).unwrap();
        assert!(!protocol::holds(&lock, token).unwrap());
        assert_eq!(protocol::release(&lock, token), Err(LockError::NotOwner));
        let other = take(&lock, &fast(Mode::Slots(2))).unwrap();
        protocol::abandon(&lock, other.token.as_str()).unwrap();
        assert!(protocol::holders(&lock).unwrap().is_empty());
        assert_eq!(
            protocol::acquire_as(&lock, other.token.clone(), &fast(Mode::Shared)).map(|held| held.token),
            Ok(other.token.clone())
        );
        assert!(matches!(
            protocol::acquire_as(&lock, other.token.clone(), &fast(Mode::Shared)),
            Err(LockError::AlreadyHeld(_))
        ));
    }

    #[test]
    fn junk_at_an_index_is_removed_and_anything_else_refused_unfollowed() {
        let (dir_, lock) = scratch::lock();
        std::fs::create_dir(dir(&lock)).unwrap();
        std::fs::write(entry_path(&lock, 0), "not a marker").unwrap();
        let writer = take(&lock, &within(Mode::Exclusive, 1.0)).unwrap();
        protocol::release(&lock, writer.token.as_str()).unwrap();
        // A FIFO at an index: an error naming it, at once (never opened).
        std::fs::create_dir_all(dir(&lock)).unwrap();
        scratch::mkfifo(&entry_path(&lock, 0));
        let lock2 = lock.clone();
        let failed = scratch::within(Duration::from_secs(5), "acquire beside a FIFO", move || {
            take(&lock2, &within(Mode::Exclusive, 1.0))
        });
        assert!(
            matches!(&failed, Err(LockError::Io(why)) if why.contains("/0 is") && why.contains("remove it")),
            "{failed:?}"
        );
        assert!(!exists(&lock).unwrap(), "the failed writer left the lock file");
        std::fs::remove_file(entry_path(&lock, 0)).unwrap();
        // The holders' directory swapped for a link to elsewhere, or a file.
        let elsewhere = dir_.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_dir_all(dir(&lock)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir(&lock)).unwrap();
        for mode in [Mode::Exclusive, Mode::Shared] {
            let failed = take(&lock, &within(mode, 1.0));
            assert!(matches!(&failed, Err(LockError::Io(why)) if why.contains("a symbolic link")), "{failed:?}");
        }
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "something was made through the link");
    }

    #[test]
    fn an_exclusive_only_peer_keeps_readers_out() {
        let (_dir, lock) = scratch::lock();
        // filelock.SoftFileLock: an exclusive create of the lock file.
        std::fs::write(&lock, "12345\n").unwrap();
        assert_eq!(take(&lock, &within(Mode::Shared, 0.2)).map(|_| ()), Err(LockError::Timeout));
        assert_eq!(take(&lock, &within(Mode::Slots(4), 0.2)).map(|_| ()), Err(LockError::Timeout));
        std::fs::remove_file(&lock).unwrap();
        take(&lock, &within(Mode::Shared, 1.0)).unwrap();
    }

    #[test]
    fn spans_cover_every_index() {
        for index in 0..5000u32 {
            assert!(index < 1 << spans_for(index), "{index}");
        }
        assert_eq!(spans_for(0), 0);
        assert_eq!(spans_for(1), 1);
        assert_eq!(spans_for(4), 3);
    }

    #[test]
    fn slots_out_of_range_are_refused() {
        assert!(Mode::Slots(0).check().is_err());
        assert!(Mode::Slots(MAX_SLOTS + 1).check().is_err());
        assert!(Mode::Slots(1).check().is_ok());
        assert!(Mode::Slots(MAX_SLOTS).check().is_ok());
        assert!(Mode::Shared.check().is_ok());
    }
}
