//! The queue of waiters: uuidlock waiters line up in arrival order, the
//! first of them polls the lock, and the others wait their turn at a cost
//! that hardly grows with their number.
//!
//! # On disk
//!
//! `<PATH>.queue/` holds one entry per waiter, named by its ticket, whose
//! bytes (the waiter's UUID and a count) the waiter rewrites every
//! [`REFRESH`] while it waits, staged as `<TICKET>.<UUID>.new` and renamed
//! over it; `tickets/`, the ticket counter: a file named
//! by the last ticket, advanced by rename as the fencing counter is
//! ([`crate::fence`]); and `served`, the last ticket whose waiter took the
//! lock. No step lists the directory: a waiter finds the one ahead of it by
//! looking at the tickets below its own, down to the last one served.
//!
//! # How a waiter waits
//!
//! - An acquire whose first attempt finds the lock free takes it: the queue
//!   costs it nothing (not one filesystem call more).
//! - One that finds the lock busy takes a ticket and writes its entry. Its
//!   *predecessor* is the entry with the largest ticket below its own; with
//!   none, it is the *head*.
//! - The head tries the lock every retry interval, as every waiter did
//!   before the queue, and in between looks three times whether the lock
//!   file is gone, so that it takes a released lock within a quarter of an
//!   interval (`crate::protocol`).
//! - With a retry interval of at least 50 ms, a host may end these waits
//!   as soon as the lock file goes (crate::wake; the project's host does,
//!   on Linux): the head's, and those of the first [`WOKEN_BEHIND`] waiters
//!   behind it, which then look at once. The rest of the line sleeps on,
//!   so a release wakes a handful, never the line.
//! - Any other waiter looks only at the last ticket served (which tells its
//!   place in the line, and whether the waiter just ahead was served),
//!   every retry interval times its place, and at least once per
//!   [`REFRESH`]. The further back, the less often, so all waiters together
//!   look about `ln(N)` times per retry interval instead of trying the lock
//!   `N` times. Once per refresh it also reads its predecessor's entry, to
//!   tell whether that waiter lives.
//! - When the waiter ahead was served, or its entry is gone (it gave up, or
//!   was judged dead), it looks below that ticket for its new predecessor,
//!   or finds itself the head.
//! - A waiter removes its entry when it takes the lock, times out or fails.
//! - A holder that waited in line for the lock *yields*: its next acquire
//!   of that lock, from the same instance and within [`YIELD_FOR`], queues
//!   at the back instead of trying first, so that the head, not the
//!   releaser, takes the lock next. (This costs the release no call.)
//! - One that had not waited, but took the lock twice in a row (fencing
//!   numbers one apart), yields too if anyone waits: its acquire looks
//!   whether the queue's last ticket is above the last one served
//!   ([`keeps_others_waiting`]). Without it, a releaser that takes the lock
//!   again at once keeps it from the head turn after turn.
//!
//! # Crash safety
//!
//! An entry whose bytes have not changed for [`DEAD_AFTER`] (longer with a
//! long retry interval or verification delay: [`dead_after`]), timed by its
//! successor's own clock between two reads, or whose date is that much
//! older than its successor's entry, belongs to a waiter that died
//! (SIGKILL) or is stopped: the successor removes it and moves up. A
//! stopped waiter that wakes to find its entry gone writes it again under
//! its old ticket and keeps its place. A waiter that times out or fails
//! removes its entry; one interrupted in the native binary has it removed
//! with the rest of its undone acquire. So an entry left by a waiter that
//! is gone delays the waiters behind it by at most [`dead_after`] plus one
//! refresh: 2.25 s with short intervals, on any filesystem (the watch does
//! not compare dates; the date test only skips long-dead rows faster).
//!
//! # Why the queue cannot break the lock, nor wedge it
//!
//! 1. *Only the lock file excludes.* The queue decides only which uuidlock
//!    waiter tries, and trying is the attempt of [`crate::protocol`], with
//!    its argument unchanged. Peers that ignore the queue (the Python
//!    libraries, older uuidlock, `timeout 0` callers, arrivals that find the
//!    lock free) are excluded exactly as before; they may overtake the
//!    queue, never break it. Two waiters that both believe they are the head
//!    (see 4) both poll, and the lock file decides between them. A wait
//!    that a host ends early only makes a waiter look or try sooner: how
//!    long waiters pause was never part of the argument.
//! 2. *Nobody waits on the queue for ever.* Every entry ahead of a waiter is
//!    either rewritten (its waiter is alive and waiting, and leaves when it
//!    takes the lock, times out or fails) or removed after [`DEAD_AFTER`].
//!    So every waiter becomes the head within a bounded time after those
//!    ahead of it leave, and the head polls the lock: from there the
//!    lock's own progress (a lock is released, or broken once stale) holds
//!    as before. A waiter's timeout counts throughout.
//! 3. *The queue can cost fairness, never an acquisition.* Any failure of
//!    its own (a counter lost, a directory that cannot be written, a
//!    listing that fails) drops the waiter out of the queue, back to
//!    polling the lock itself.
//! 4. *A client's view may be stale* (a caching network client keeps
//!    names, new or deleted, for seconds). No step lists the directory. A
//!    waiter that misses an entry ahead of it takes itself for the head
//!    sooner and polls the lock: fairness lost, not exclusion. One that
//!    still sees an entry that is gone learns from `served`, whose bytes
//!    are read afresh, that its predecessor was served; an entry that
//!    timed out is judged dead like a killed one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::fence::{self, Start};
use crate::files::{self, Content, DirState, Kind};
use crate::format::Token;
use crate::LockError;

/// How many waiters behind the head wake when the lock is released, where
/// the host ends waits early (crate::wake). The head takes the lock; these
/// learn their new places at once, so that a hand-off after a short hold
/// does not wait for a sleeper's next look. A release wakes at most this
/// many more than the head, never the whole line: with 64 waiters a release
/// that woke every one cost more than the polling it saved (docs/src/
/// performance.md, "Waking at a release").
pub const WOKEN_BEHIND: u32 = 7;

/// How often a waiter rewrites its entry, and reads the one ahead of it.
pub const REFRESH: Duration = Duration::from_millis(250);

/// How long an entry may stay unchanged before its successor judges its
/// waiter gone, at least: eight refreshes (see [`dead_after`]).
pub const DEAD_AFTER: Duration = Duration::from_secs(2);

/// How long after an acquire that waited in line the same instance's next
/// acquire yields to those still waiting.
pub const YIELD_FOR: Duration = Duration::from_secs(1);

thread_local! {
    /// This thread's (guest instance's) last turn with each lock it took,
    /// at most [`MAX_TURNS`] of them: what its next acquire of that lock
    /// needs to know to yield.
    static TURNS: RefCell<HashMap<String, Turn>> = RefCell::new(HashMap::new());
}

/// An instance's last turn with one lock.
struct Turn {
    /// Which of the instance's turns it was (the count of them so far), so
    /// that the longest ago can be forgotten.
    order: u64,
    /// The fencing number it took.
    fence: u64,
    /// Whether it had taken the number before this one too.
    in_a_row: bool,
    /// When it took the lock, if it waited in line for it and has not
    /// yielded since (a turn that did not wait replaces it). Only then is
    /// the clock read: a call.
    waited: Option<Instant>,
}

/// How many locks' last turns an instance keeps: one that takes more
/// forgets the longest ago (it may then not yield on that lock once). An
/// instance that takes a new lock for every job keeps no growing list.
const MAX_TURNS: usize = 64;

/// How long an entry may stay unchanged before its successor judges its
/// waiter gone: [`DEAD_AFTER`], or three of a head's attempts (a retry
/// interval and a verification delay, between which it does not write its
/// entry) if that is longer.
pub fn dead_after(retry_interval: Duration, verification_delay: Duration) -> Duration {
    DEAD_AFTER.max(retry_interval.saturating_add(verification_delay).saturating_mul(3))
}

/// The queue's directory for the lock at `lock`.
pub fn dir(lock: &str) -> String {
    format!("{lock}.queue")
}

/// A waiter in the queue of one lock. Dropping it removes its entry.
pub struct Waiter {
    entry: String,
    dir: String,
    ticket: u64,
    uuid: String,
    beats: u64,
    refreshed: Instant,
    /// How long an entry ahead may stay unchanged before it is judged gone.
    dead_after: Duration,
    /// Who is ahead, as last listed; `None` for the head.
    ahead: Option<Ahead>,
    /// Whether `served` was moved up to this waiter's ticket already.
    marked: bool,
}

/// The entry just ahead of a waiter, and what it has seen of it.
struct Ahead {
    ticket: u64,
    entry: String,
    /// About how many waiters are ahead, counting this one: tickets since
    /// the last one served.
    place: u32,
    bytes: Option<Vec<u8>>,
    /// When its bytes were first seen as they are now.
    changed: Instant,
    /// When its bytes were last read.
    read: Instant,
}

impl Waiter {
    /// Joins the queue of the lock at `lock`: takes a ticket and writes an
    /// entry. `None` if the queue cannot be used here (the caller polls the
    /// lock instead). `retry_interval` and `verification_delay` are the
    /// caller's; waiters ahead are taken to use the same.
    pub fn join(lock: &str, token: &Token, retry_interval: Duration, verification_delay: Duration) -> Option<Waiter> {
        let dir = dir(lock);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return None,
            _ => {}
        }
        // A link, a FIFO or a file planted at the queue's name: no queue
        // here (a lookup inside a FIFO would block, one inside a link follow it).
        if files::dir_state(&dir) != Ok(DirState::Dir) {
            return None;
        }
        // Tickets count apart from the entries, so that taking one lists a
        // directory of one file, not of every waiter.
        let ticket = fence::take_in(&format!("{dir}/tickets"), lock, Start::Zero).ok()?;
        let mut waiter = Waiter {
            entry: format!("{dir}/{ticket}"),
            dir,
            ticket,
            uuid: token.uuid().to_owned(),
            beats: 0,
            refreshed: Instant::now(),
            dead_after: dead_after(retry_interval, verification_delay),
            ahead: None,
            marked: false,
        };
        waiter.write().ok()?;
        waiter.find_ahead(ticket).ok()?;
        Some(waiter)
    }

    /// Whether no live entry is ahead of this one (as far as it knows).
    pub fn is_head(&self) -> bool {
        self.ahead.is_none()
    }

    /// Whether this waiter wakes at a release ([`WOKEN_BEHIND`]): it is
    /// among the first behind the head, as far as it knows (its place may be
    /// behind the truth, which only moves up).
    pub fn wakes_at_release(&self) -> bool {
        self.ahead.as_ref().is_some_and(|ahead| ahead.place <= WOKEN_BEHIND)
    }

    /// How long to sleep before [`Waiter::step`]: the retry interval for
    /// the head; for others, that times their place in the line, never
    /// longer than [`REFRESH`].
    pub fn pause(&self, retry_interval: Duration) -> Duration {
        match &self.ahead {
            None => retry_interval,
            Some(ahead) => retry_interval.saturating_mul(ahead.place).min(REFRESH),
        }
    }

    /// After a pause: rewrites the entry when due, and looks at the one
    /// ahead. `Err` when the queue failed; the caller drops the waiter and
    /// polls the lock.
    pub fn step(&mut self) -> io::Result<()> {
        if self.refreshed.elapsed() >= REFRESH {
            self.write()?;
        }
        let dead_after = self.dead_after;
        let Some(ahead) = &mut self.ahead else { return Ok(()) };
        let now = Instant::now();
        // Once per refresh, the entry ahead is read too, to tell whether its
        // waiter lives.
        if now.duration_since(ahead.read) >= REFRESH {
            ahead.read = now;
            let gone = match files::read_beside_undated(&ahead.entry).map_err(io::Error::other)? {
                None => true,
                // Not a regular file: planted, not a waiter.
                Some(Content { kind: Kind::Special(_), .. }) => {
                    let _ = fs::remove_file(&ahead.entry);
                    true
                }
                Some(Content { bytes, .. }) if Some(&bytes) != ahead.bytes.as_ref() => {
                    (ahead.bytes, ahead.changed) = (Some(bytes), now);
                    false
                }
                Some(_) if now.duration_since(ahead.changed) >= dead_after => {
                    // Unchanged between two looks this far apart: its waiter is
                    // gone (or stopped, and then it writes its entry again when
                    // it wakes).
                    remove_entry(&ahead.entry, ahead.bytes.as_deref().and_then(writer));
                    true
                }
                Some(_) => false,
            };
            if gone {
                let below = ahead.ticket;
                return self.find_ahead(below);
            }
        }
        // Every look reads the last ticket served: whether the waiter ahead
        // was served, and how far back this one stands, which sets the next
        // pause. (A look that skipped it, reading only the entry, left the
        // place as it was at the join: a waiter that joined 62nd slept
        // 62 ms twice and came late to its turn, once per cycle of the line,
        // in every 64-process `contend` run.) Its bytes are read afresh on
        // open, where a caching client (sshfs) can show a deleted entry for
        // seconds. A waiter ahead that left unserved (timed out) is found at
        // the next read of its entry.
        let Some(served) = served(&self.dir) else { return Ok(()) };
        if served >= ahead.ticket {
            let below = ahead.ticket;
            return self.find_ahead(below);
        }
        // The line moves on: look more often as it does.
        ahead.place = place(self.ticket, served);
        Ok(())
    }

    /// Rewrites this waiter's entry (again, if its successor removed it
    /// while this waiter was stopped): staged beside it and renamed over
    /// it, so that readers never see half of it, and so that whatever was
    /// put at its name meanwhile is replaced, never followed or opened.
    fn write(&mut self) -> io::Result<()> {
        self.beats += 1;
        // Ending in a newline, as everything uuidlock writes: its reader
        // then knows it read the whole file in one call (`files::read_whole`).
        let bytes = format!("{} {:020}\n", self.uuid, self.beats);
        files::rewrite(&self.entry, &staged(&self.entry, &self.uuid), bytes.as_bytes()).map_err(io::Error::other)?;
        self.refreshed = Instant::now();
        Ok(())
    }

    /// Finds the waiter just ahead among the tickets below `below`: the
    /// highest one whose entry is there, down to the last ticket served
    /// (taken by a waiter that then held the lock: nobody below it waits,
    /// but for one overtaken, which still waits its turn and polls as a
    /// head). One call per ticket looked at; usually the first is there.
    /// An entry whose date is more than the dead time before this waiter's
    /// own (written at most [`REFRESH`] ago, on the same filesystem clock)
    /// is removed at once and the walk goes on, so that a row of long dead
    /// entries costs one call each, not a dead time each.
    fn find_ahead(&mut self, below: u64) -> io::Result<()> {
        let served = served(&self.dir);
        // Never further than MAX_WALK down: tickets that waiters took and
        // left with (timed out) are gaps, and a gap of any size must not
        // make a step slow. A waiter that finds nobody within reach takes
        // itself for the head and polls the lock: fairness lost, not
        // exclusion; and when it leaves, `served` moves up to it
        // ([`Waiter::mark_served`]), so that the gap is walked once.
        let floor = served.unwrap_or(0).max(below.saturating_sub(MAX_WALK + 1));
        let mut ticket = below;
        // Saturating: `served` may be any number someone put there.
        while ticket > floor.saturating_add(1) {
            ticket -= 1;
            let entry = format!("{}/{ticket}", self.dir);
            match crate::stale::again(|| fs::symlink_metadata(&entry)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
                // Not a waiter's: nothing uuidlock writes there is anything
                // but a regular file.
                Ok(meta) if !meta.is_file() => {
                    let _ = fs::remove_file(&entry);
                    continue;
                }
                Ok(_) if self.dead_by_date(&entry) && remove_dead(&entry) => continue,
                Ok(_) => {
                    let now = Instant::now();
                    // Read at the first look, so that a dead entry is judged from then.
                    let read = now.checked_sub(REFRESH).unwrap_or(now);
                    let place = place(self.ticket, served.unwrap_or(floor));
                    self.ahead = Some(Ahead { ticket, entry, place, bytes: None, changed: now, read });
                    return Ok(());
                }
            }
        }
        self.ahead = None;
        Ok(())
    }

    /// Records, having taken the lock, that this waiter's ticket was served.
    pub fn served(mut self) {
        self.mark_served();
        self.marked = true;
    }

    /// Moves `served` up to this waiter's ticket (written aside and renamed
    /// into place, so that readers never see it half-written; in place
    /// where the share cannot rename over a file being read): when it took
    /// the lock, and when it leaves as the head, so that the tickets below
    /// it, all gone, are never walked again.
    fn mark_served(&self) {
        if served(&self.dir).is_none_or(|served| served < self.ticket) {
            let path = format!("{}/served", self.dir);
            let staged = format!("{path}.{}", self.uuid);
            // A reader that catches an in-place write half done reads no
            // number and looks again.
            let _ = files::rewrite(&path, &staged, format!("{}\n", self.ticket).as_bytes());
        }
    }

    /// Whether the filesystem dates `other`, an entry ahead, more than the
    /// dead time (and the dates' resolution) before this waiter's own.
    fn dead_by_date(&self, other: &str) -> bool {
        let modified = |path: &str| fs::metadata(path).and_then(|meta| meta.modified());
        let (Ok(mine), Ok(theirs)) = (modified(&self.entry), modified(other)) else { return false };
        let whole_seconds = |date: SystemTime| date.duration_since(UNIX_EPOCH).is_ok_and(|d| d.subsec_nanos() == 0);
        let resolution = if whole_seconds(mine) || whole_seconds(theirs) { COARSE } else { FINE };
        mine.duration_since(theirs).is_ok_and(|gap| gap > self.dead_after + resolution)
    }
}

/// The resolution assumed for file dates in whole seconds (sshfs), and for
/// finer ones.
const COARSE: Duration = Duration::from_secs(2);
const FINE: Duration = Duration::from_millis(10);

impl Drop for Waiter {
    /// Leaving (served, timed out, failed): the entry goes; a head that
    /// leaves moves `served` past itself.
    fn drop(&mut self) {
        if self.is_head() && !self.marked {
            self.mark_served();
        }
        remove_entry(&self.entry, Some(&self.uuid));
    }
}

/// How far below its own ticket a waiter looks for the one ahead of it.
const MAX_WALK: u64 = 256;

/// The staging name of the entry `entry` of the waiter `uuid`. It carries
/// the UUID so that an acquire stopped between staging and renaming (an
/// interrupted one, trapped anywhere) has it removed by name when it is
/// undone ([`forget`]), whether or not the entry itself was ever there or
/// the staged bytes ever written.
fn staged(entry: &str, uuid: &str) -> String {
    format!("{entry}.{uuid}.new")
}

/// The UUID of the waiter whose entry holds `bytes` ("UUID COUNT"), if
/// they begin with one (a planted entry's need not).
fn writer(bytes: &[u8]) -> Option<&str> {
    let uuid = std::str::from_utf8(bytes.get(..36)?).ok()?;
    uuid::Uuid::try_parse(uuid).is_ok().then_some(uuid)
}

/// Removes an entry, and what its waiter `uuid` (where known) left staged
/// if it was killed while rewriting it.
fn remove_entry(entry: &str, uuid: Option<&str>) {
    let _ = fs::remove_file(entry);
    if let Some(uuid) = uuid {
        let _ = fs::remove_file(staged(entry, uuid));
    }
}

/// Removes an entry judged dead by its date, reading it first for the name
/// of what its waiter may have left staged; `false` if it could not be
/// removed (then it is taken for alive).
fn remove_dead(entry: &str) -> bool {
    let bytes = files::read_beside_undated(entry).ok().flatten().map(|content| content.bytes);
    if fs::remove_file(entry).is_err() {
        return false;
    }
    if let Some(uuid) = bytes.as_deref().and_then(writer) {
        let _ = fs::remove_file(staged(entry, uuid));
    }
    true
}

/// An entry's ticket: its name, decimal digits.
fn ticket(name: &str) -> Option<u64> {
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten()
}

/// About how many waiters are ahead of `ticket` (at least one): the tickets
/// since the last one served, some of which may have left.
fn place(ticket: u64, served: u64) -> u32 {
    u32::try_from(ticket.saturating_sub(served.saturating_add(1))).unwrap_or(u32::MAX).max(1)
}

/// The last ticket served in the queue `dir`; `None` when none was, or
/// the file cannot be read.
fn served(dir: &str) -> Option<u64> {
    let content = files::read_beside_undated(&format!("{dir}/served")).ok()??;
    let text = std::str::from_utf8(&content.bytes).ok().filter(|_| content.kind == Kind::Regular)?;
    text.trim().parse().ok()
}

/// Notes that this instance took `lock` with the fencing number `fence`,
/// after waiting in line for it if `waited`: its next acquire of `lock`
/// then yields to those still waiting ([`should_yield`]). No call: a
/// releaser does not look, it remembers.
pub fn note_taken(lock: &str, fence: u64, waited: bool) {
    TURNS.with_borrow_mut(|turns| {
        let in_a_row = turns.get(lock).is_some_and(|last| last.fence.checked_add(1) == Some(fence));
        let order = turns.values().map(|turn| turn.order + 1).max().unwrap_or(0);
        if turns.len() >= MAX_TURNS && !turns.contains_key(lock) {
            if let Some(oldest) = turns.iter().min_by_key(|(_, turn)| turn.order).map(|(lock, _)| lock.clone()) {
                turns.remove(&oldest);
            }
        }
        let waited = waited.then(Instant::now);
        turns.insert(lock.to_owned(), Turn { order, fence, in_a_row, waited });
    });
}

/// Whether this instance's acquire of `lock` should yield to its waiters,
/// having taken it after waiting in line within [`YIELD_FOR`] (see
/// [`note_taken`]); asking uses the note up.
pub fn should_yield(lock: &str) -> bool {
    TURNS.with_borrow_mut(|turns| {
        turns.get_mut(lock).and_then(|turn| turn.waited.take()).is_some_and(|at| at.elapsed() < YIELD_FOR)
    })
}

/// Whether this instance's acquire of `lock` should yield because it took
/// the lock twice in a row (no one between, by the fencing numbers) and
/// someone waits in line: the queue's last ticket is above the last one
/// served. A releaser that never waited does not yield ([`should_yield`]),
/// and its next acquire, made at once, wins the lock file back before the
/// head's next look far more often than not: one took 38 turns in a row
/// at the start of an 8-process `contend` run, while the head waited
/// 70 ms. The look costs one call (the queue's directory is not there)
/// where the lock was never contended, and is made only after two turns
/// in a row. A link or anything else planted at the queue's name is not
/// looked into: no yield.
pub fn keeps_others_waiting(lock: &str) -> bool {
    if !TURNS.with_borrow(|turns| turns.get(lock).is_some_and(|turn| turn.in_a_row)) {
        return false;
    }
    let dir = dir(lock);
    // Never a look inside a link or a FIFO planted at the queue's name (as
    // `Waiter::join`); a ticket counter that cannot be read: no yield
    // either (the queue orders uuidlock's waiters, exclusion is the lock
    // file's).
    if files::dir_state(&dir) != Ok(DirState::Dir) {
        return false;
    }
    let Ok(Some(ticket)) = fence::latest(&format!("{dir}/tickets")) else { return false };
    served(&dir).is_none_or(|served| ticket > served)
}

/// Removes the entry of the waiter with `token` from the queue of `lock`,
/// if it left one (an interrupted acquire, undone through
/// [`crate::protocol::abandon`]). Looks at no more than [`MAX_FORGET`]
/// entries, reads each as [`files::read_beside_undated`] does (never a link, a FIFO
/// or more than a marker's length) and removes only one that names `token`;
/// and what the waiter staged and never renamed (an entry or `served`),
/// found by the UUID in its name, unread: it may be empty.
pub fn forget(lock: &str, token: &Token) -> Result<(), LockError> {
    let dir = dir(lock);
    if files::dir_state(&dir)? != DirState::Dir {
        return Ok(());
    }
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        entries => entries.map_err(|e| files::io_error(&dir, "read", e))?,
    };
    let (our_staged, our_served) = (format!(".{}.new", token.uuid()), format!("served.{}", token.uuid()));
    for entry in entries.take(MAX_FORGET) {
        let name = entry.map_err(|e| files::io_error(&dir, "read", e))?.file_name().to_string_lossy().into_owned();
        let path = format!("{dir}/{name}");
        // Staged and never renamed (an entry, or `served`): ours by its name alone.
        if name == our_served || name.strip_suffix(&our_staged).is_some_and(|entry| ticket(entry).is_some()) {
            let _ = fs::remove_file(&path);
            continue;
        }
        if ticket(&name).is_none() {
            continue;
        }
        let ours = files::read_beside_undated(&path)?
            .is_some_and(|content| content.kind == Kind::Regular && content.bytes.starts_with(token.uuid().as_bytes()));
        if ours {
            remove_entry(&path, Some(token.uuid()));
        }
    }
    Ok(())
}

/// The most entries [`forget`] looks at: a queue that long is planted.
pub const MAX_FORGET: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::scratch::lock;

    fn token() -> Token {
        Token::generate("").unwrap()
    }

    /// Lines up with `token`, polling every millisecond, no delay.
    fn join_as(lock: &str, token: &Token) -> Waiter {
        Waiter::join(lock, token, Duration::from_millis(1), Duration::ZERO).unwrap()
    }

    fn join(lock: &str) -> Waiter {
        join_as(lock, &token())
    }

    #[test]
    fn waiters_line_up_in_arrival_order() {
        let (_dir, lock) = lock();
        let first = join(&lock);
        let mut second = join(&lock);
        let mut third = join(&lock);
        assert!(first.is_head() && !second.is_head() && !third.is_head());
        assert_eq!(third.ahead.as_ref().map(|a| (a.place, a.entry.clone())), Some((2, second.entry.clone())));
        // The further back, the longer between looks.
        let interval = Duration::from_millis(1);
        assert_eq!((second.pause(interval), third.pause(interval)), (interval, interval * 2));
        // Each takes the lock in turn.
        first.served();
        second.step().unwrap();
        third.step().unwrap();
        assert!(second.is_head() && !third.is_head());
        second.served();
        third.step().unwrap();
        assert!(third.is_head());
    }

    // The first look after a join reads the entry ahead; it must read
    // `served` too. One that did not slept its join-time pause twice, and
    // a waiter that joined 62nd came late to its turn by up to 13 ms, once
    // per cycle of the line.
    #[test]
    fn every_look_sees_how_far_the_line_moved() {
        let (_dir, lock) = lock();
        let (first, second, third) = (join(&lock), join(&lock), join(&lock));
        let mut fourth = join(&lock);
        let interval = Duration::from_millis(1);
        assert_eq!(fourth.pause(interval), interval * 3);
        first.served();
        second.served();
        fourth.step().unwrap();
        assert_eq!(fourth.ahead.as_ref().map(|a| a.entry.clone()), Some(third.entry.clone()));
        assert_eq!(fourth.pause(interval), interval, "the line moved up by two");
        fourth.step().unwrap();
        assert_eq!(fourth.pause(interval), interval);
    }

    #[test]
    fn an_instance_that_took_the_lock_twice_in_a_row_yields_only_to_waiters() {
        let (_dir, lock) = lock();
        note_taken(&lock, 7, false);
        assert!(!keeps_others_waiting(&lock), "one turn is not a row");
        note_taken(&lock, 8, false);
        assert!(!keeps_others_waiting(&lock), "nobody waits: there is no queue");
        let waiter = join(&lock);
        assert!(keeps_others_waiting(&lock), "someone waits");
        waiter.served();
        assert!(!keeps_others_waiting(&lock), "the one who waited was served");
        let _waiter = join(&lock);
        note_taken(&lock, 10, false);
        assert!(!keeps_others_waiting(&lock), "someone else took number 9");
        // Another lock taken between (a lock nested in this one) is no turn
        // of this lock's.
        note_taken("/other.lock", 11, false);
        note_taken(&lock, 11, false);
        assert!(keeps_others_waiting(&lock), "another lock's turn broke the row");
    }

    #[test]
    fn a_link_at_the_queues_name_is_not_looked_into() {
        let (_elsewhere, other) = lock();
        let (_dir, lock) = lock();
        let _waiter = join(&other);
        std::os::unix::fs::symlink(dir(&other), dir(&lock)).unwrap();
        note_taken(&lock, 1, false);
        note_taken(&lock, 2, false);
        assert!(!keeps_others_waiting(&lock), "it followed the link to another queue");
    }

    #[test]
    fn a_waiter_that_leaves_ahead_is_skipped() {
        let (_dir, lock) = lock();
        let first = join(&lock);
        let second = join(&lock);
        let mut third = join(&lock);
        drop(second); // timed out
        third.step().unwrap();
        assert_eq!(third.ahead.as_ref().map(|a| a.entry.clone()), Some(first.entry.clone()));
    }

    #[test]
    fn a_dead_waiter_is_skipped_after_its_entry_stops_changing() {
        let (_dir, lock) = lock();
        let dead = join(&lock);
        std::mem::forget(dead); // SIGKILLed: its entry stays, never rewritten
        let mut next = join(&lock);
        next.step().unwrap();
        assert!(!next.is_head());
        std::thread::sleep(DEAD_AFTER / 2);
        next.step().unwrap();
        assert!(!next.is_head(), "judged dead too soon");
        std::thread::sleep(DEAD_AFTER / 2 + Duration::from_millis(50));
        next.step().unwrap();
        assert!(next.is_head());
        // Its entry is gone; ours is the only one.
        assert_eq!(
            fs::read_dir(dir(&lock)).unwrap().filter_map(|e| ticket(&e.ok()?.file_name().to_string_lossy())).count(),
            1
        );
    }

    #[test]
    fn a_row_of_long_dead_waiters_is_skipped_at_once() {
        let (_dir, lock) = lock();
        for _ in 0..3 {
            let dead = join(&lock);
            // Killed long ago: dated well before any live waiter's entry.
            let old = SystemTime::now() - DEAD_AFTER * 5;
            fs::File::options().write(true).open(&dead.entry).unwrap().set_modified(old).unwrap();
            std::mem::forget(dead);
        }
        let next = join(&lock);
        assert!(next.is_head(), "three dead entries ahead were not skipped");
    }

    #[test]
    fn a_live_waiter_keeps_its_place_by_rewriting_its_entry() {
        let (_dir, lock) = lock();
        let mut alive = join(&lock);
        let mut next = join(&lock);
        let start = Instant::now();
        while start.elapsed() < DEAD_AFTER * 2 {
            std::thread::sleep(REFRESH / 2);
            alive.step().unwrap();
            next.step().unwrap();
            assert!(!next.is_head(), "a live waiter was judged dead");
        }
        // Removed while it was stopped, it writes its entry again.
        fs::remove_file(&alive.entry).unwrap();
        std::thread::sleep(REFRESH);
        alive.step().unwrap();
        assert!(fs::exists(&alive.entry).unwrap());
    }

    #[test]
    fn an_acquire_that_waited_makes_the_next_one_yield_once() {
        let (_dir, lock) = lock();
        assert!(!should_yield(&lock));
        note_taken(&lock, 1, true);
        assert!(should_yield(&lock));
        assert!(!should_yield(&lock), "the note is used up");
        assert!(!should_yield("/other.lock"));
        note_taken(&lock, 5, true);
        note_taken(&lock, 6, false);
        assert!(!should_yield(&lock), "its last turn came without waiting");
    }

    #[test]
    fn an_instance_keeps_the_last_turns_of_a_bounded_number_of_locks() {
        let (_dir, lock) = lock();
        note_taken(&lock, 1, true);
        for other in 0..MAX_TURNS {
            note_taken(&format!("/other-{other}.lock"), 1, false);
            assert!(TURNS.with_borrow(HashMap::len) <= MAX_TURNS);
        }
        assert!(!should_yield(&lock), "the turn taken longest ago was forgotten");
        note_taken("/other-0.lock", 2, true);
        note_taken("/other-new.lock", 1, false);
        let kept = |lock: &str| TURNS.with_borrow(|turns| turns.contains_key(lock));
        assert!(kept("/other-0.lock") && !kept("/other-1.lock"), "a lock taken again is the newest");
        assert!(should_yield("/other-0.lock"));
    }

    // `served` is anyone's to write: the largest number there must not
    // overflow a waiter's arithmetic (a panic natively, a walk of every
    // ticket in the guest).
    #[test]
    fn a_served_ticket_at_the_largest_number_leaves_the_waiter_the_head() {
        let (_dir, lock) = lock();
        let _first = join(&lock);
        let mut second = join(&lock);
        assert!(!second.is_head());
        fs::write(format!("{}/served", dir(&lock)), format!("{}\n", u64::MAX)).unwrap();
        second.step().unwrap();
        assert!(second.is_head(), "nobody waits below the last ticket served");
        assert_eq!(place(3, u64::MAX), 1);
    }

    #[test]
    fn forget_removes_only_that_token_s_entry() {
        let (_dir, lock) = lock();
        let (mine, theirs) = (token(), token());
        let kept = join_as(&lock, &theirs);
        std::mem::forget(join_as(&lock, &mine));
        forget(&lock, &mine).unwrap();
        let entries: Vec<String> = fs::read_dir(dir(&lock))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| ticket(name).is_some())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(kept.entry.ends_with(&format!("/{}", entries[0])));
    }

    #[test]
    fn forget_removes_what_that_token_staged_and_never_renamed() {
        let (_dir, lock) = lock();
        let (mine, theirs) = (token(), token());
        let kept = join_as(&lock, &theirs);
        let dir = dir(&lock);
        // Stopped (an interrupt traps anywhere) after staging, before the
        // rename: an entry staged empty or whole, `served` staged.
        let left = [staged(&format!("{dir}/7"), mine.uuid()), format!("{dir}/served.{}", mine.uuid())];
        fs::write(&left[0], "").unwrap();
        fs::write(&left[1], "6").unwrap();
        let theirs_staged = staged(&kept.entry, theirs.uuid());
        fs::write(&theirs_staged, format!("{} 2", theirs.uuid())).unwrap();
        forget(&lock, &mine).unwrap();
        for path in &left {
            assert!(fs::symlink_metadata(path).is_err(), "{path} was left");
        }
        assert!(fs::symlink_metadata(&theirs_staged).is_ok(), "another waiter's staging file was removed");
        assert!(fs::symlink_metadata(&kept.entry).is_ok());
    }

    #[test]
    fn a_waiter_whose_predecessors_were_served_is_the_head() {
        let (_dir, lock) = lock();
        let first = join(&lock);
        let second = join(&lock);
        let mut third = join(&lock);
        // The second timed out; the first took the lock.
        drop(second);
        first.served();
        third.step().unwrap();
        assert!(third.is_head());
        assert_eq!(served(&dir(&lock)), Some(1));
    }

    #[test]
    fn only_digits_name_entries() {
        assert_eq!(ticket("12"), Some(12));
        for name in ["", "tickets", "served", "12.x", "1a"] {
            assert_eq!(ticket(name), None, "{name}");
        }
    }
}
