//! The lock protocol: publish a marker exclusively, take a fencing number,
//! verify, retry; renew through a heartbeat that never touches the lock
//! file; release or break a lock only while holding its claim.
//!
//! Plain `std::fs`, so the same code runs natively and in the wasm32-wasip1
//! guest (WASI preview 1 has exclusive create, hard links, rename and file
//! times; no file locks, no process ids).
//!
//! # The protocol
//!
//! **Acquire.** Write the marker (the owner token, and the lifetime if one is
//! asked for) to a staging file `<PATH>.<UUID>.new`, hard-link it to `PATH`
//! (which fails if anything is there), and remove the staging name. Wait
//! `verification_delay`, then read `PATH` back: if it holds our token we hold
//! the lock. Otherwise sleep `retry_interval` and try again until `timeout`.
//! Where the filesystem has no hard links, the lock is created exclusively
//! (`O_EXCL`) and written instead, and the claims below are directories
//! (point 11). A link reported as failing with "exists" whose target holds
//! our own bytes was ours (an NFS server answering a retransmission).
//!
//! **Wait in line.** An acquire whose first attempt finds the lock busy
//! joins the queue of waiters ([`crate::queue`]) and makes further attempts
//! only as its head; the others watch the waiter ahead of them. One that
//! waited in line queues behind the others at its next acquire. An acquire
//! that finds the lock free, or has a zero timeout, never touches the queue.
//!
//! **Fence.** Between publishing and the read-back, take the next fencing
//! number of the path ([`crate::fence`]). The number is ours only if the
//! read-back then finds our marker.
//!
//! **Renew** (refresh). A holder with a lifetime rewrites its own heartbeat
//! file `<PATH>.<UUID>.beat` (named by the holder's token: in place, over
//! the old bytes of the same length, so that a renewal needs no new block
//! and works on a full disk; the first one staged and renamed into place),
//! then reads `PATH`: if it no longer holds our token, the
//! renewal reports [`LockError::NotOwner`] and removes the heartbeat it
//! wrote. A renewal takes no claim and never writes `PATH`.
//!
//! **Release.** A lock is released only while holding its claim
//! `<PATH>.<UUID>.claim` ([`crate::claim`]): read it, claim it exclusively,
//! read it again, delete it (and its heartbeat). If the claim is taken, the
//! lock is being broken or released by someone else: the call reports
//! [`LockError::NotOwner`] and touches nothing. The claim on a lock without
//! a lifetime is an empty file, so releasing one works on a full disk and
//! without hard links. Such a lock is never broken, so where its delete did
//! nothing (a stale handle) and our token is still there, the caller's
//! release says so (an I/O error: release again) rather than "not the
//! owner".
//!
//! **Break.** A contender judges a lock with a lifetime dead when it has
//! gone that lifetime without a sign of life (its lock file or heartbeat
//! written), by either of two clocks:
//!
//! - *the filesystem's.* Every attempt writes a staging file just before it
//!   reads `PATH`, so the staging file's date is the filesystem's "now", on
//!   the same clock (the server's, on a share) that dated the lock file and
//!   the heartbeat. No two machines' clocks are compared. A lock silent for
//!   *two* lifetimes by that clock is broken at once, however late the
//!   contender arrives (two, so that a forward step of the clock shorter
//!   than 5/3 of a lifetime cannot make a live holder look dead); `status`
//!   judges the same way (its probe file is the staging file);
//! - *its own watch:* the same bytes at `PATH` and the same heartbeat for the
//!   lifetime, timed on the contender's monotonic clock. This is the
//!   fallback where the filesystem dates files wrongly (a date after "now")
//!   or not at all.
//!
//! It then takes the instance's claim, observes the lock and the heartbeat
//! again, and deletes `PATH` (and the heartbeat) only if neither changed.
//!
//! **Leftovers.** A holder reclaims what killed processes left beside the
//! lock (staging files, heartbeats and claims of gone instances) now and
//! then, just after acquiring ([`crate::sweep`], with its own argument).
//!
//! **Modes.** Everything above is the exclusive lock. Shared holders
//! (readers) and a semaphore's holders take `PATH` by it, write an entry in
//! `<PATH>.shared/` and let `PATH` go; an exclusive holder (a writer) takes
//! `PATH` and then waits for the entries to go. Their argument, on top of
//! the one below, is in [`crate::shared`].
//!
//! # Why it is exclusive
//!
//! The peers are uuidlock processes, plus programs that create exclusively
//! and never delete what they did not create (`filelock.SoftFileLock`). The
//! filesystem's exclusive create and hard link must be atomic, as they are
//! on local filesystems, NFSv3 and later, and SFTP.
//!
//! 1. *At most one creator per instance.* `link` and `O_EXCL` succeed only
//!    when nothing is at `PATH`, so every file at `PATH` has exactly one
//!    creator. Only that creator reads its own random token back, so at most
//!    one process holds any one instance.
//! 2. *A complete marker from the first instant.* A linked file was
//!    written in full before it appeared. No reader ever sees a uuidlock lock
//!    that is empty or half-written, and a crash cannot leave one.
//! 3. *An instance never comes back.* Nobody but its creator writes an
//!    instance's bytes (they carry its random token), and its creator writes
//!    them once, at publish: `PATH` is never rewritten while held. So once an
//!    instance is gone it stays gone, and a holder that reads its token back
//!    held the lock over the whole time since publishing.
//! 4. *Only a claimant removes an instance.* Removing an instance requires
//!    its claim, which one party holds at a time (exclusive create). The
//!    holder of the claim observes `PATH` after taking it and acts only on
//!    the instance it just observed. A breaker therefore never deletes a
//!    fresh lock that replaced the stale one; two breakers of one instance
//!    cannot both delete: the second finds the claim taken, or `PATH`
//!    changed; and two releases with the same token (a script's trap and
//!    its normal exit) cannot both delete: the second finds the claim
//!    taken, or `PATH` no longer ours. A lock with no lifetime is never
//!    broken, so its claim is only ever taken by its releasers and is never
//!    broken either: nothing but its own release deletes it, however long
//!    that release stalls. (uuidlock 0.1 released such a lock by reading and
//!    deleting it: a second release stalled in between deleted the
//!    successor's lock.)
//! 5. *A renewal cannot harm anyone else, however late it runs.* It writes
//!    only the heartbeat named by its own token, which speaks for its own
//!    instance and for no successor, and it reads `PATH`. A renewer stalled
//!    for any length of time, past its lifetime and past a break and a new
//!    holder, wakes to write a heartbeat nobody watches (and removes it),
//!    and is told [`LockError::NotOwner`]. It never overwrites, resurrects
//!    or deletes a successor's lock. (uuidlock 0.1 renewed by renaming a new
//!    marker over `PATH` under the claim: a renewer stalled there past the
//!    lifetime put its old marker back over a successor's.)
//! 6. *A holder learns when it has lost the lock.* Every renewal and release
//!    reads `PATH` after acting; a holder whose lock was broken gets
//!    [`LockError::NotOwner`] at its next renewal.
//! 7. *Fencing numbers increase with the holders.* By 3, a holder held the
//!    lock from publishing to its read-back, and its number was taken in
//!    between; by 1, holders' intervals do not overlap; the counter only
//!    moves forward ([`crate::fence`]). So every holder's number is larger
//!    than every earlier holder's, also when a stalled former holder wakes
//!    in the middle of any step: a number it takes then fails its
//!    read-back and is never used, and nothing else it does moves the
//!    counter.
//! 8. *Judging by the filesystem's clock breaks only what the lease contract
//!    gave up.* The contender's staging file was written before it read the
//!    lock and the heartbeat, so their dates are those of writes made no
//!    later than that read, on the same clock as "now". If the later of them
//!    is two lifetimes before "now" (less the clock's resolution), the
//!    holder wrote no heartbeat for a whole lifetime up to a moment the
//!    contender has already seen: it broke the lease contract, which is what
//!    staleness means. A renewal after that moment changes the heartbeat's
//!    bytes, so the re-observation under the claim sees it and nothing is
//!    deleted. A lifetime counts from when the marker is written, so an
//!    acquire that stalls between writing and publishing (past the
//!    lifetime) publishes a lock already stale: that is a holder stalled
//!    past its lifetime, and the fencing number tells the two apart, as for
//!    any other. If that acquirer's read-back fails and it publishes the
//!    same marker again, the new instance has the same bytes but a later
//!    date, and the re-observation under a claim compares dates too: a
//!    breaker that judged the first instance never deletes the second.
//! 9. *The queue adds no assumption.* It only decides when a uuidlock
//!    waiter makes the attempt above; what an attempt does, and so points
//!    1-8, is unchanged, and peers that ignore the queue are excluded by the
//!    lock file as before. Its own argument (no wedge: every entry ahead is
//!    rewritten by a live waiter or removed once dead; any failure of the
//!    queue falls back to polling) is in [`crate::queue`].
//! 10. *A ghost cannot delete anything.* A caching share's client may go on
//!     showing an instance for a while after another client removed it (a
//!     ghost: GlusterFS with default caches serves a removed file's bytes
//!     for about a second, and its removal by name removes what is there
//!     now). Suppose every ghost is gone within `G`, and lifetimes are
//!     longer than `3G` (the doctor measures `G` and says so). A party
//!     deletes by name only under the claim on the instance it re-observed
//!     (point 4). If the instance is a ghost, it was removed by a claimant
//!     at some time `t`. (a) A breaker always, and a releaser whose
//!     lock file was published half its lifetime ago or more, leaves its
//!     claim as a *tombstone*: nobody takes that claim until it is older
//!     than its lifetime (the sweep) or has been watched unchanged for one
//!     (a breaker of a dead claimant); either comes after `t + G`, so the
//!     re-observation under the claim is no ghost, and finds the instance
//!     gone. (b) A releaser that removed its claim had published its lock
//!     file within half a lifetime; a ghost of it shows a lock file at most
//!     `L/2 + G < L` old, and is never judged dead (by its watch, nor by
//!     dates, which need `2L`), whatever the ghost shows of its heartbeat.
//!     So a ghost is never deleted by name, and so never a successor
//!     behind it. A renewal that reads a ghost of its own lock learns of
//!     the loss up to `G` later (the fence still tells). The releaser
//!     learns the lock file's age from the share's dates (its claim's
//!     against the lock file's), which move with the share's clock as a
//!     ghost's age does. Where they are unknown (an `ESTALE` hid one), it
//!     leaves a tombstone, unless it published the instance itself in the
//!     same call (a shared holder letting its gate go, or withdrawing the
//!     entry it has just made, [`crate::shared`]): then its own clocks,
//!     read before that publish, tell, and less than `L/2` by both the
//!     monotonic clock (which a step cannot move) and the wall clock
//!     (which runs on while the machine sleeps) is (b)'s premise, measured
//!     in real time. (Until this release such a party left a tombstone of
//!     an entry it had just made, and its retry, with the same token, took
//!     that tombstone for a second release's claim: the holder's release
//!     answered "not the owner", `uuidlock simulate --profile sshfs --mode
//!     slots --hold 0.5 --duration 10 --seed 519`.)
//!     (Until this release, (b) counted the heartbeat's date too: a lock
//!     held for two lifetimes and renewed was released without a
//!     tombstone. But the release deletes the heartbeat as well, and a
//!     client that polled the lock file (so shows its ghost) but had not
//!     looked the heartbeat up finds it missing at once: the ghost then
//!     showed a lock file two lifetimes old and no heartbeat, dead by its
//!     dates, and the contender deleted the next holder's lock by name.
//!     `uuidlock simulate --profile gluster --faults none --seeds 20
//!     --duration 10` found it in 10 of 20 seeds; seed 4 replays it, and
//!     `simulate::gluster_ghost_of_a_long_hold_deletes_nothing` keeps it.)
//! 11. *Without hard links, claims are directories, and points 1-10 hold
//!     for them unchanged.* A claim is then a directory holding the
//!     claimant's marker in a file `marker`, made under the claimant's own
//!     staging name and renamed onto the claim's name
//!     ([`crate::files::publish`]). (a) A rename of a directory fails where
//!     a file or a directory that is not empty is at the target, so two
//!     claimants cannot both take one claim: point 4's "one party at a
//!     time". This is what exclusive create cannot give on smbnetfs (both
//!     clients won 18 of 20 races), and what `uuidlock doctor DIR DIR2`
//!     races across the clients (both won 0 of 40 on the bed, and 0 of 840
//!     raced directly). (b) The claim is complete from the instant its name
//!     exists, as a linked file is (point 2): a claimant that dies leaves a
//!     claim with a marker and a lifetime, judged and broken as any claim,
//!     never an empty one that would be taken for junk and broken at once.
//!     (c) A claim is removed by renaming it whole to a fresh staging name
//!     (then emptied through a descriptor opened without following links,
//!     so that nothing outside the lock's directory is touched): its name
//!     never shows a directory half emptied, which a rename onto it would
//!     replace, and, like an unlink by name, it acts on what is there now,
//!     under the claim on what was observed (point 4). The sweep too
//!     renames a staged directory aside whole, never empties it in place:
//!     a claimant stalled before its rename then finds its staged directory
//!     gone and stages again (emptied in place, it would have published an
//!     empty directory, junk to anyone, while believing it held the claim;
//!     found in review). A claimant reads its claim back after the rename
//!     and takes it only if it holds its own marker. An empty directory at
//!     a claim's name is therefore nobody's claim, and a rename that
//!     replaces it replaces nothing held. (d) The claim is read through its
//!     marker, whose bytes carry a fresh random token, so a claim replaced
//!     since it was observed never compares equal (the re-observation of
//!     point 4); only a claim's name is read through a directory, and a
//!     directory anywhere else (the lock path, an entry, a heartbeat) stays
//!     what it is. (e) The lock file itself stays a file that every peer can
//!     read: it is created and then written, and its exclusion on a share
//!     whose create is not atomic rests on the read-back, as it did without
//!     a lifetime; a lifetime changes only who may remove it, which goes
//!     through the claims above. So does a shared holder's entry, which only
//!     the holder of the gate writes: an empty one is junk, broken by the
//!     next holder of the gate ([`crate::shared`], point 1 there). The one
//!     new gap is a kill between the lock file's create and its write: the
//!     empty file left is nobody's marker, broken by a contender with a
//!     lifetime as point 12 says (without one it stays, as a dead holder's
//!     lock does). A write that fails there withdraws the file while it is
//!     still empty, and within half the shortest delay a share without
//!     atomic creates is given (a client that won the same create and wrote
//!     since holds only after its read-back, a delay after its write), so an
//!     error leaves nothing (found by the simulator's `smb` profile, seed
//!     106).
//! 12. *An empty lock file is nobody's lock, and a contender with a lifetime
//!     breaks it once it has stayed empty for that lifetime.* (a) Nobody
//!     holds an empty file: a uuidlock process holds only once its
//!     read-back finds its marker, and a marker is never empty; the peers
//!     (`uuid-filelock`, `filelock.SoftFileLock`) write theirs right after
//!     their create too. An empty file is a creator between its create and
//!     its write (microseconds), or one that died there (without hard links,
//!     a kill there is all it takes: 7 of 1,983 kills in the simulator's
//!     `smb` profile wedged the lock for good before this point). (b) The
//!     contender judges it as a lock declaring the contender's own lifetime
//!     (by dates, empty since two lifetimes; or watched unchanged for one),
//!     takes the claim named by what it saw (the empty file and its date,
//!     [`crate::claim::junk_token`], as for a claim no uuidlock party
//!     wrote, so every breaker of that file takes the same claim), observes
//!     `PATH` again under it (still empty, same date) and deletes it: point
//!     4 unchanged, so two breakers never both delete, and a file that was
//!     written since is kept. (c) A creator alive but stalled between its
//!     create and its write for a whole lifetime has published nothing yet:
//!     its write lands in the deleted file, or (SMB) the delete of its open
//!     file is busy and nothing is deleted; either way its read-back, by
//!     name, finds its marker only where no one else's is, and point 1
//!     holds. That stall is a holder's stall past its lifetime, the lease
//!     contract's case. (d) Without a lifetime, a contender never breaks an
//!     empty file, as it never breaks anything.
//!
//! The read-back after `verification_delay` is what keeps the lock
//! exclusive against peers whose create is *not* atomic, such as
//! the Python `uuid-filelock` package (it checks that the file is absent,
//! then truncates and writes its own token). Such a peer can overwrite our
//! marker just after we publish it. The read-back after the delay sees its
//! token and we back off. This works only if the peer's check-then-write
//! window is shorter than the delay, which is why the default delay equals
//! that package's (0.1 s). With only exclusive-create peers, 0 is safe.
//!
//! The same read-back is all that protects on a share whose exclusive
//! create is *not* atomic across clients (smbnetfs: two clients racing for
//! one name both won 18 of 20 races here). Both creators then write their
//! markers into one file and the later write stays; each reads back after
//! the delay and only the later writer finds its token, provided the delay
//! is longer than one client's write takes to reach the other's read (the
//! seed's rule). `uuidlock doctor DIR DIR2` measures that lag and names the
//! delay. Markers of different lengths (different prefixes) can mix into a
//! file holding neither token: it is foreign, so it waits, never breaks.
//!
//! # The lease contract, and other caveats
//!
//! - A lock with a lifetime is a lease. Its holder must renew it before the
//!   lifetime runs out (every third of it is a good rhythm; the host's
//!   `Lease` does it in the background). A holder stopped (SIGSTOP, a paused
//!   VM, a machine under swap) for longer than the lifetime loses the lock,
//!   and until its next renewal it believes it still holds it: that is what
//!   the fencing number is for. Pass it to the resource, which refuses a
//!   number lower than one it has seen.
//! - A *breaker* or a *releaser* stopped for longer than the lifetime while
//!   holding a claim can still delete a successor's lock: its claim goes
//!   stale, is broken, the lock is broken and taken again, and then it wakes
//!   and deletes. Deleting by name after a check is all that a filesystem
//!   without locks offers, so no such scheme can close this window. It is
//!   a few file operations wide, and the fencing number still tells the
//!   resource apart. Lifetimes should be far longer than any stall the
//!   machines see. The minimum is [`MIN_STALE_AFTER`]; a second or more is
//!   wise.
//! - A lifetime counts from when the marker is written, by the filesystem's
//!   clock. After a verification delay, acquire renews once, so the caller
//!   gets the whole lifetime from its return; so that it can, a lifetime
//!   must be at least twice the verification delay.
//! - A holder that dies leaves a lock with a lifetime to be broken by the
//!   first contender that tries once it has been silent for two lifetimes
//!   (plus the filesystem clock's resolution: 10 ms, or 2 s where files are
//!   dated in whole seconds), or by a contender that has watched it for one. Where dates are not trusted (after the filesystem's
//!   "now"), a contender watches for a lifetime first. A lock with no
//!   lifetime stays until someone deletes it by hand.
//! - A forward step of the filesystem's clock (an NTP step, a VM resumed on
//!   another host) longer than 5/3 of a lifetime makes live holders look
//!   dead, and they are evicted (the fencing number tells them apart).
//! - Judging by the filesystem's clock assumes that a file's date is as
//!   fresh as its bytes when it is read through an open file: true locally,
//!   on NFS (close-to-open) and on sshfs without attribute caching. A share
//!   that caches dates longer than data needs lifetimes longer than its
//!   cache timeout.
//! - A release killed while holding the claim on a lock without a lifetime
//!   leaves the lock and its empty claim: like any lock without a lifetime
//!   whose holder died, it stays until deleted by hand (both files).
//! - A release, and the break of a stale lock, need a claim file. The claim
//!   on a lock with a lifetime holds a marker, so on a full disk such a lock
//!   cannot be released (the error says "no space left on device", and the
//!   lock is intact); once space returns, its holder's release or, after the
//!   lifetime, a contender frees it. A lock without a lifetime is released
//!   on a full disk (its claim is empty).
//! - Where the filesystem has no hard links, locks fall back to an exclusive
//!   create and a write. There, a process killed in between leaves an empty
//!   lock file, broken by a contender with a lifetime (point 12); without
//!   one it stays until deleted by hand. Claims are directories there (point
//!   11), so locks with a lifetime work, in every mode (a shared holder's
//!   empty entry is junk, broken by the next holder of the gate:
//!   [`crate::shared`]).
//! - An empty file that another program holds as its lock (`touch`, a
//!   shell's `set -C`) is broken by a contender with a lifetime once it has
//!   stayed empty for that lifetime (point 12). Such programs share a path
//!   with uuidlock only through locks without a lifetime.
//! - Fencing numbers are found by listing the counter's directory; a
//!   listing that is behind (a caching network client) makes the rename
//!   fail, never succeed with a stale number, and the taker then tries the
//!   numbers above by name ([`crate::fence`]).
//! - A symbolic link, a directory, a FIFO, a socket or a device at the lock
//!   path is refused ([`LockError::InvalidPath`]), never opened, followed or
//!   deleted. In the guest, the file's type is checked just before it is
//!   opened (WASI cannot open without blocking on a FIFO): someone who can
//!   write the lock directory and swaps a FIFO in between can still wedge
//!   a call.
//! - A lock file this user may not read (another user's, mode 600) is a
//!   lock held by someone else: waited for, never deleted, and reported as
//!   unreadable.

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use crate::claim::{self, Observed, Watch};
use crate::files::{self, Created, Fallback};
use crate::format::{self, Held, Marker, Token};
use crate::planted::planted;
use crate::shared::{self, Mode};
use crate::{fence, queue, stale, sweep, wake, LockError};

/// A duration in whole nanoseconds, as WIT carries them; saturates at
/// `u64::MAX` (about 584 years).
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The longest verification delay or retry interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

pub use crate::format::MIN_STALE_AFTER;

/// The longest lock file name accepted: the names uuidlock derives from it
/// (`<NAME>.<UUID>.claim`) must fit the usual 255-byte limit.
pub const MAX_NAME_LEN: usize = 255 - claim::DERIVED_NAME_EXTRA;

/// How to acquire a lock. [`Options::default`] documents the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Put before the random UUID in the owner token, to say who holds the
    /// lock. Default: empty.
    pub prefix: String,
    /// How long to wait after writing before reading the token back.
    /// Default: 0.1 s, as the Python `uuid-filelock` package, so that its
    /// non-atomic writers are detected; every acquisition costs this much.
    pub verification_delay: Duration,
    /// How long to sleep between attempts. Default: 0.1 s.
    pub retry_interval: Duration,
    /// How long to keep trying: `None` waits forever, zero tries once.
    /// Default: `None`.
    pub timeout: Option<Duration>,
    /// The lock's lifetime: once it has gone this long without a
    /// [`refresh`], contenders may break it. `None` (the default): never
    /// broken, so a holder that never refreshes is never evicted. From 0.5 s
    /// to one day; rounded up to whole milliseconds.
    pub stale_after: Option<Duration>,
    /// Wait in the queue of waiters ([`crate::queue`]) when the lock is
    /// busy: in arrival order, only the first waiter polling the lock.
    /// Default: `true`.
    pub queue: bool,
    /// How far apart the clocks that date the lock's files may be: on a
    /// share whose files are dated by each client's own clock (GlusterFS),
    /// a contender whose clock is ahead sees locks older than they are. A
    /// lock is then taken for dead by the files' dates only once it has
    /// been silent for two lifetimes plus this (its own watch, which needs
    /// no dates, still breaks it after one lifetime). At most one day.
    /// Default: 0, for a share dated by one clock (the server's, or a local
    /// disk's).
    pub max_clock_skew: Duration,
    /// How the lock is held ([`crate::shared`]): alone (a writer, the
    /// default), beside other shared holders (a reader), or in one of `N`
    /// slots (a semaphore).
    pub mode: Mode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: String::new(),
            verification_delay: Duration::from_millis(100),
            retry_interval: Duration::from_millis(100),
            timeout: None,
            stale_after: None,
            queue: true,
            max_clock_skew: Duration::ZERO,
            mode: Mode::Exclusive,
        }
    }
}

impl Options {
    /// Checks the options without touching the filesystem.
    ///
    /// # Errors
    /// [`LockError::InvalidOptions`] naming the option and the limit.
    pub fn check(&self) -> Result<(), LockError> {
        format::check_prefix(&self.prefix).map_err(LockError::InvalidOptions)?;
        self.mode.check()?;
        for (name, value) in [("verification delay", self.verification_delay), ("retry interval", self.retry_interval)]
        {
            if value > MAX_INTERVAL {
                return Err(LockError::InvalidOptions(format!(
                    "the {name} is {value:?}; at most {}s is allowed",
                    MAX_INTERVAL.as_secs()
                )));
            }
        }
        if self.max_clock_skew > format::MAX_STALE_AFTER {
            return Err(LockError::InvalidOptions(format!(
                "the maximum clock skew is {:?}; at most {}s is allowed",
                self.max_clock_skew,
                format::MAX_STALE_AFTER.as_secs()
            )));
        }
        match self.stale_after {
            Some(lifetime) if lifetime < MIN_STALE_AFTER || lifetime > format::MAX_STALE_AFTER => {
                Err(LockError::InvalidOptions(format!(
                    "the stale-after lifetime is {lifetime:?}; it must be from {MIN_STALE_AFTER:?} to {}s",
                    format::MAX_STALE_AFTER.as_secs()
                )))
            }
            // A lifetime counts from the write; the holder renews once it
            // has verified, which must leave it time to spare.
            Some(lifetime) if self.verification_delay.saturating_mul(2) > lifetime => {
                Err(LockError::InvalidOptions(format!(
                    "the stale-after lifetime ({lifetime:?}) must be at least twice the verification delay \
                     ({:?}): a lifetime counts from when the lock is written, and the holder first renews \
                     after verifying",
                    self.verification_delay
                )))
            }
            _ => Ok(()),
        }
    }
}

/// What `status` reports about a held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Who holds it.
    pub marker: Marker,
    /// How long ago the lock file was written, by the filesystem's clock.
    pub age: Duration,
    /// How long ago the holder last renewed (its heartbeat), by the
    /// filesystem's clock; `None` before the first renewal, or without a
    /// lifetime.
    pub renewed: Option<Duration>,
    /// Whether the lock has gone two lifetimes without a renewal, by the
    /// filesystem's clock: the next `acquire` breaks it at once.
    pub stale: bool,
    /// The latest fencing number taken for this path: the holder's, unless a
    /// stalled former holder woke up and took one since (then larger).
    pub fence: Option<u64>,
}

/// A lock just taken: the owner token that [`release`] needs, and the
/// fencing number of this acquisition ([`crate::fence`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub token: Token,
    pub fence: u64,
    /// The slot of a semaphore's holder ([`Mode::Slots`]): from 0 to N - 1,
    /// never shared by two holders at once. `None` in the other modes.
    pub slot: Option<u32>,
}

/// Takes the lock at `path`, waiting as `options` say, and returns the owner
/// token that [`release`] needs with the acquisition's fencing number.
///
/// # Errors
/// [`LockError::Timeout`] when the lock stayed held until the timeout; an
/// invalid path or options; the sandbox refusing the path; an I/O error.
pub fn acquire(path: &str, options: &Options) -> Result<Acquired, LockError> {
    stale::begin();
    check_lock_path(path)?;
    options.check()?;
    let token = Token::generate(&options.prefix).map_err(LockError::InvalidOptions)?;
    take_in_mode(path, token, options)
}

/// As [`acquire`], with a token the caller made (a fresh one, from
/// [`Token::generate`]; `options.prefix` is then not used). The caller knows
/// the token before the call, so if the call is cut short it can undo
/// whatever the call left: [`abandon`] with that token.
///
/// # Errors
/// As [`acquire`]; [`LockError::InvalidToken`] if the token's UUID is not
/// a random (version 4) one, which two callers could share;
/// [`LockError::AlreadyHeld`] if the lock already holds `token`.
pub fn acquire_as(path: &str, token: Token, options: &Options) -> Result<Acquired, LockError> {
    stale::begin();
    check_lock_path(path)?;
    options.check()?;
    if !token.is_random() {
        return Err(LockError::InvalidToken(format!(
            "{token:?} does not end in a random UUID (version 4), which acquire-as needs so that no \
             two callers share a token; make one with a UUIDv4 generator (Token::generate)"
        )));
    }
    // A fresh token never holds the lock; a caller-made one might.
    if held_by(path, &token).is_ok() || shared::find(path, &token).is_ok_and(|entry| entry.is_some()) {
        return Err(LockError::AlreadyHeld(format!("{path} is already held with token {token}; release it first")));
    }
    take_in_mode(path, token, options)
}

/// Takes the lock in the mode `options` ask for ([`crate::shared`]): `PATH`
/// by [`take`], then, for a writer, waits until no shared holder is left;
/// for a reader or a semaphore's holder, takes an entry and lets `PATH` go.
/// Starts over if `PATH` was lost meanwhile (broken while this stalled).
fn take_in_mode(path: &str, token: Token, options: &Options) -> Result<Acquired, LockError> {
    // A shared holder releases what this call published: its gate, and an
    // entry it withdraws. Nothing holds `token` yet (a fresh one, or
    // checked by acquire_as), so all of it is younger than this.
    let started = (options.mode != Mode::Exclusive).then(Started::now);
    let deadline = options.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        let timeout = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let gate = take(path, token.clone(), &Options { timeout, ..options.clone() })?;
        let held = match options.mode {
            Mode::Exclusive => wait_for_shared(path, &token, options, deadline).map(|held| held.then_some(None)),
            Mode::Shared => enter(path, &token, options, gate.fence, None, Since { started, deadline }),
            Mode::Slots(n) => enter(path, &token, options, gate.fence, Some(n), Since { started, deadline }),
        };
        match held {
            Ok(Some(slot)) => return Ok(Acquired { slot, ..gate }),
            Ok(None) => continue,
            Err(e) => {
                // Whatever happened, `PATH` is ours no longer.
                let _ = release_published(path, &token, started);
                return Err(e);
            }
        }
    }
}

/// When an acquire began, and when it must end.
#[derive(Clone, Copy)]
struct Since {
    /// Before anything with the acquire's token was published.
    started: Option<Started>,
    deadline: Option<Instant>,
}

/// When a call began, by both of this process's clocks: the monotonic one
/// stands still while the machine is suspended, and the wall clock can be
/// stepped, so a time since is taken as short only when both say so.
#[derive(Clone, Copy)]
struct Started {
    monotonic: Instant,
    wall: SystemTime,
}

impl Started {
    fn now() -> Started {
        Started { monotonic: Instant::now(), wall: SystemTime::now() }
    }

    /// Whether less than `span` has passed since, by both clocks.
    fn within(&self, span: Duration) -> bool {
        self.monotonic.elapsed() < span && self.wall.elapsed().is_ok_and(|since| since < span)
    }
}

/// A gate holder's wait, holding `PATH`: renews it as its lifetime asks,
/// and says when the deadline passed ([`LockError::Timeout`]) or `PATH`
/// was lost (`false`).
struct GateWait {
    renewed: Instant,
}

impl GateWait {
    fn new() -> GateWait {
        GateWait { renewed: Instant::now() }
    }

    fn pause(
        &mut self,
        path: &str,
        token: &Token,
        options: &Options,
        deadline: Option<Instant>,
    ) -> Result<bool, LockError> {
        let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            return Err(LockError::Timeout);
        }
        sleep(left.map_or(options.retry_interval, |left| left.min(options.retry_interval)));
        match options.stale_after {
            Some(lifetime) if self.renewed.elapsed() >= lifetime / 3 => {
                self.renewed = Instant::now();
                match renew(path, token, &|_| ()) {
                    Ok(()) => Ok(true),
                    Err(LockError::NotOwner) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(true),
        }
    }
}

/// A writer holding `PATH` waits until no live shared holder is left
/// ([`shared::live`], which breaks dead ones); `false` if `PATH` was lost.
fn wait_for_shared(path: &str, token: &Token, options: &Options, deadline: Option<Instant>) -> Result<bool, LockError> {
    // Planted bug (tests only): a writer takes the lock file and never looks for shared holders.
    if planted("writer-ignores-readers") {
        return Ok(true);
    }
    let mut watch = Watch::with_skew(options.max_clock_skew);
    let mut wait = GateWait::new();
    while !shared::live(path, &mut watch)?.is_empty() {
        if !wait.pause(path, token, options, deadline)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A reader or a semaphore's holder (`limit` slots) holding `PATH` takes an
/// entry, waiting (holding `PATH`) while every slot is taken, then lets
/// `PATH` go: `Some(slot)` (a semaphore's; `None` for a reader) when it
/// holds, `None` when `PATH` was lost on the way and nothing is held.
fn enter(
    path: &str,
    token: &Token,
    options: &Options,
    fence: u64,
    limit: Option<u32>,
    Since { started, deadline }: Since,
) -> Result<Option<Option<u32>>, LockError> {
    // Planted bug (tests only): a semaphore's holder takes any free index, past its N.
    let limit = if planted("slots-unbounded") { limit.map(|n| n.saturating_mul(2)) } else { limit };
    let mut watch = Watch::with_skew(options.max_clock_skew);
    let mut wait = GateWait::new();
    // `occupy` creates the entry it returns (exclusively), after `entered`.
    let (index, entered) = loop {
        let entering = Started::now();
        if let Some(index) = shared::occupy(path, token, options.stale_after, limit, &mut watch)? {
            break (index, Some(entering));
        }
        if !wait.pause(path, token, options, deadline)? {
            return Ok(None);
        }
    };
    let entry = shared::entry_path(path, index);
    // Point 1 of crate::shared: an entry counts only if `PATH` was ours
    // from before the look to after the publish. An entry withdrawn was
    // published by this very call, whose clocks tell how young it is where
    // the share's dates cannot (an ESTALE): a young one leaves no
    // tombstone, which the retry, with the same token, would take for a
    // second release's claim (point 10).
    match release_published(path, token, started) {
        Ok(()) => {}
        Err(LockError::NotOwner) => {
            let _ = release_published(&entry, token, entered);
            return Ok(None);
        }
        Err(e) => {
            let _ = release_published(&entry, token, entered);
            return Err(e);
        }
    }
    if watch.broke || fence.is_multiple_of(sweep::EVERY) {
        sweep::reclaim(&entry, token);
    }
    if options.stale_after.is_some() {
        // A lifetime counts from the write: give the caller all of it.
        match renew(&entry, token, &|_| ()) {
            Ok(()) => {}
            Err(LockError::NotOwner) => return Ok(None),
            Err(e) => {
                let _ = release_published(&entry, token, entered);
                return Err(e);
            }
        }
    }
    Ok(Some(limit.map(|_| index)))
}

/// The acquire loop, for a valid path and options and a token that does not
/// hold the lock.
fn take(path: &str, token: Token, options: &Options) -> Result<Acquired, LockError> {
    let marker = Held::new(token.clone(), options.stale_after).encode();
    // No deadline when there is no timeout, or when it is too far to compute.
    let deadline = options.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    let mut watch = Watch::with_skew(options.max_clock_skew);
    // Busy at the first attempt, a waiter joins the queue, and tries again
    // only as its head (crate::queue). One that waited last time joins at
    // once, behind the others, instead of trying first.
    let mut line: Option<queue::Waiter> = None;
    // Whether this acquire waited in line, and was served.
    let mut waited = false;
    // When to (try to) join next: ticket races under a crowd of arrivals can
    // fail a join, and the queue can fail a waiter; both poll meanwhile.
    let mut join_at = options.queue.then(Instant::now);
    let mut yielding = options.queue
        && options.timeout != Some(Duration::ZERO)
        && (queue::should_yield(path) || queue::keeps_others_waiting(path));
    loop {
        let attempt = if yielding || !line.as_ref().is_none_or(queue::Waiter::is_head) {
            None
        } else {
            try_once(path, &token, &marker, options, &mut watch)?
        };
        if let Some(fence) = attempt {
            // Out of the line first, so that the next waiter moves up now;
            // having waited, yield to the others at the next acquire (even
            // if this take is undone below and the lock taken again).
            waited |= line.take().map(queue::Waiter::served).is_some();
            queue::note_taken(path, fence, waited);
            if watch.broke || fence.is_multiple_of(sweep::EVERY) {
                sweep::reclaim(path, &token);
                // A long listing must not eat into the caller's lifetime.
                if options.stale_after.is_some() {
                    match renew(path, &token, &|_| ()) {
                        Ok(()) => {}
                        Err(LockError::NotOwner) => continue,
                        Err(e) => {
                            let _ = release_token(path, &token);
                            return Err(e);
                        }
                    }
                }
            }
            return Ok(Acquired { token, fence, slot: None });
        }
        // How long until the timeout, if there is one.
        let left = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LockError::Timeout);
                }
                Some(left)
            }
        };
        let within = |pause: Duration| left.map_or(pause, |left| left.min(pause));
        if line.is_none() && join_at.is_some_and(|at| at <= Instant::now()) {
            line = queue::Waiter::join(path, &token, options.retry_interval, options.verification_delay);
            if line.is_none() {
                join_at = Some(Instant::now() + queue::REFRESH);
            }
        }
        yielding = false;
        // Whether this wait may end at a release (crate::wake): with short
        // retry intervals the waiters look often enough, and waking them
        // costs more than it saves.
        let wakes = options.retry_interval >= wake::FROM_INTERVAL;
        match &line {
            Some(waiter) if waiter.is_head() => sleep_watching(path, within(options.retry_interval), wakes),
            // The first few behind the head wake at a release too
            // (queue::WOKEN_BEHIND): one of them is the head once the head
            // takes the lock. The rest of the line sleeps.
            Some(waiter) if wakes && waiter.wakes_at_release() => {
                wake::until_released_or(within(waiter.pause(options.retry_interval)))
            }
            Some(waiter) => sleep(within(waiter.pause(options.retry_interval))),
            None => sleep(within(options.retry_interval)),
        }
        if let Some(waiter) = &mut line {
            if waiter.step().is_err() {
                // The queue failed here: poll the lock, as without it, and
                // line up again a little later.
                line = None;
                join_at = Some(Instant::now() + queue::REFRESH);
            }
        }
    }
}

/// The head of the queue's pause: a retry interval, in which it looks
/// whether the lock file is gone (one call) three times, and ends the pause
/// at once if it is. The lock then passes to the head within a quarter of a
/// retry interval of its release, not a whole one; the head is the only
/// waiter that does this, so it costs three calls per interval in all.
/// With `wakes`, a host may end any of its waits early (crate::wake); the
/// project's host does when the lock file goes, and the head then looks,
/// or after the last wait attempts, at once.
fn sleep_watching(path: &str, pause: Duration, wakes: bool) {
    let wait = if wakes { wake::until_released_or } else { sleep };
    let slice = pause / 4;
    for _ in 0..3 {
        wait(slice);
        if fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            return;
        }
    }
    wait(pause.saturating_sub(slice * 3));
}

/// Refuses a path that can never name a lock file, or whose name leaves no
/// room for the names uuidlock derives from it.
fn check_lock_path(path: &str) -> Result<(), LockError> {
    files::check_path(path)?;
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.len() > MAX_NAME_LEN {
        return Err(LockError::InvalidPath(format!(
            "the lock file name in {path} is {} bytes long; at most {MAX_NAME_LEN} are allowed, \
             because uuidlock keeps files named <NAME>.<UUID>.claim beside it",
            name.len()
        )));
    }
    Ok(())
}

/// One attempt: publish, wait, verify; the fencing number if we hold the
/// lock, `None` when someone else does. A stale lock found on the way is
/// broken and the attempt made again at once.
fn try_once(
    path: &str,
    token: &Token,
    marker: &[u8],
    options: &Options,
    watch: &mut Watch,
) -> Result<Option<u64>, LockError> {
    // Without hard links the lock file is created and then written: a crash
    // in between leaves an empty file, which a contender with a lifetime
    // breaks (point 12). Its claims are directories.
    // Each attempt has its own budget for stale handles.
    stale::begin();
    for _ in 0..2 {
        // Planted bug (tests only): the fencing number is taken before publishing, and used if verified.
        let early = if planted("fence-before-publish") { Some(fence::take(path)?) } else { None };
        let published =
            files::publish(path, &format::staged_path(path, token), marker, Fallback::Allowed).map_err(|e| {
                // A directory or a link at the path explains the failure best.
                files::check_not_link_or_dir(path).err().unwrap_or(e)
            });
        match published? {
            Created::Yes => return verify(path, token, options, early),
            // Released just now: try again at once.
            Created::Exists { there: None, .. } => continue,
            Created::Exists { there: Some(files::Content { kind: files::Kind::Special(kind), .. }), .. } => {
                return Err(files::not_a_lock_file(path, kind))
            }
            Created::Exists { there: Some(there), now } => {
                let observed = Observed::new(path, there)?;
                let stale = watch
                    .stale(path, &observed, now)
                    .or_else(|| watch.empty(path, &observed, now, options.stale_after));
                let Some(stale) = stale else { return Ok(None) };
                if !claim::break_stale(path, &observed, &stale, watch, now)? {
                    return Ok(None);
                }
                watch.broke = true;
            }
        }
    }
    Ok(None)
}

/// Reads our freshly published lock back after the verification delay,
/// taking a fencing number just before: if the read-back finds our marker,
/// we held the lock when the number was taken (see [`crate::fence`]).
/// `early` is always `None` but for a planted bug (`fence-before-publish`).
fn verify(path: &str, token: &Token, options: &Options, early: Option<u64>) -> Result<Option<u64>, LockError> {
    // Planted bug (tests only): a successful publish is taken as holding the lock: no delay, no read-back.
    if planted("skip-readback") {
        return fence::take(path).map(Some).inspect_err(|_| drop(release_token(path, token)));
    }
    let delay = options.verification_delay;
    if !delay.is_zero() {
        sleep(delay);
        // Where exclusive create is not atomic (smbnetfs), every publisher
        // of a race gets here; only the last writer still finds its marker.
        // The others stop before taking a number, so that takers do not race
        // for it: smbnetfs renames onto an existing name by deleting it
        // first, which lost the counter in 21 of 30 such races. One read,
        // against a delay that is far longer.
        match still_ours(path, token) {
            Err(LockError::NotOwner) => return Ok(None),
            Err(e) => {
                let _ = release_token(path, token);
                return Err(e);
            }
            Ok(_) => {}
        }
    }
    let read_back =
        early.map_or_else(|| fence::take(path), Ok).and_then(|fence| still_ours(path, token).map(|held| (fence, held)));
    match read_back {
        // A lifetime counts from when contenders first see the marker; after
        // a delay, renew once so that the caller gets all of it. Losing the
        // lock in between is possible only if the delay outlasted the
        // lifetime, and then the renewal says so.
        Ok((fence, held)) if held.stale_after.is_some() && !delay.is_zero() => match renew(path, token, &|_| ()) {
            Ok(()) => Ok(Some(fence)),
            Err(LockError::NotOwner) => Ok(None),
            Err(e) => {
                // As below: nobody would ever get the token to release it.
                let _ = release_token(path, token);
                Err(e)
            }
        },
        Ok((fence, _)) => Ok(Some(fence)),
        Err(LockError::NotOwner) => Ok(None),
        Err(e) => {
            // Our marker may be on disk, and the caller never gets the token
            // that would release it: release it here, if it is still ours.
            let _ = release_token(path, token);
            Err(e)
        }
    }
}

/// Releases the lock at `path` if it holds `token`; otherwise deletes
/// nothing and reports [`LockError::NotOwner`].
///
/// # Errors
/// [`LockError::NotOwner`] when the file is absent, holds anything else, or
/// is being broken as stale; a malformed token; an invalid path; the sandbox
/// refusing the path; an I/O error.
pub fn release(path: &str, token: &str) -> Result<(), LockError> {
    stale::begin();
    files::check_path(path)?;
    let token = Token::parse(token).map_err(LockError::InvalidToken)?;
    match release_asked(path, &token) {
        // Not the lock file's: a shared holder's entry, perhaps.
        Err(LockError::NotOwner) => match shared::find(path, &token)? {
            Some(entry) => release_asked(&entry, &token),
            None => Err(LockError::NotOwner),
        },
        other => other,
    }
}

fn release_token(path: &str, token: &Token) -> Result<(), LockError> {
    release_instance(path, token, None, Asked::No, &|| ())
}

/// [`release_token`] for a caller that asked for the release, and can be
/// told to ask again ([`Asked`]).
fn release_asked(path: &str, token: &Token) -> Result<(), LockError> {
    release_instance(path, token, None, Asked::Yes, &|| ())
}

/// Whether a release was asked for by the caller, who can be told to
/// release again where a delete of a lock without a lifetime did nothing;
/// a release made inside another call (letting a gate go, undoing an
/// acquire) answers "not the owner" there, as before, and the call goes on
/// as it does after losing what it held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    Yes,
    No,
}

/// [`release_token`] of an instance that this very call published, after
/// `started` by this process's own clocks where it kept that (a shared
/// holder's acquire): see point 10 (b).
fn release_published(path: &str, token: &Token, started: Option<Started>) -> Result<(), LockError> {
    release_instance(path, token, started, Asked::No, &|| ())
}

/// [`release_token`], with a `pause` between the first read and the claim
/// (tests hold a release back there).
#[cfg(test)]
pub(crate) fn release_paused(path: &str, token: &Token, pause: &dyn Fn()) -> Result<(), LockError> {
    release_instance(path, token, None, Asked::No, pause)
}

/// Releases the instance of `path` that holds `token`: published after
/// `started`, if the caller knows (it published it itself).
fn release_instance(
    path: &str,
    token: &Token,
    started: Option<Started>,
    asked: Asked,
    pause: &dyn Fn(),
) -> Result<(), LockError> {
    let (held, dated) = held_dated(path, token)?;
    pause();
    // Planted bug (tests only): our lock is deleted directly, with no claim (as uuidlock 0.1 did).
    if planted("release-without-claim") {
        let _ = files::remove(&format::beat_path(path, token));
        let removed = files::remove_within(path, files::busy_retry(held.stale_after))?;
        return if removed { Ok(()) } else { Err(LockError::NotOwner) };
    }
    // Under the claim nobody else removes this instance: a breaker needs the
    // claim too, and so does a second release with the same token.
    claim::with_claim_as_holder(path, token, held.stale_after, dated, || {
        // A lock without a lifetime is retried longer on a busy share (SMB),
        // as nobody breaks it; one with a lifetime for a tenth of it.
        let bound = files::busy_retry(held.stale_after);
        let Some(lifetime) = held.stale_after else {
            held_for_release(path, token)?;
            let removal = files::remove_unless_stale(path, bound)?;
            // The delete met a stale handle (or an EIO, as WASI passes one
            // on) and did nothing, and the lock still holds our token.
            // Nobody breaks a lock without a lifetime, and no party removes
            // our instance while we hold its claim (point 4), so "not the
            // owner" would leave it for good: the caller is told to release
            // it again. Only on a stale handle: a file found gone was
            // removed by someone (a person deleting it by hand), and a read
            // of it now may be a caching share's ghost of it.
            if removal == files::Removal::Stale && asked == Asked::Yes && held_by(path, token).is_ok() {
                return Err(LockError::Io(format!(
                    "cannot delete {path}: the share answered \"stale file handle\" (or \"I/O error\") and the lock \
                     is still there, with this token: release it again"
                )));
            }
            return Ok((removal == files::Removal::Removed, claim::Afterwards::Remove));
        };
        // A lock file published half its lifetime ago or more may be taken
        // for dead by a contender that goes on seeing it after it is gone
        // (a caching share's ghost, which may show no heartbeat): its claim
        // stays as a tombstone (point 10).
        let beat = format::beat_path(path, token);
        let published = latest_publish(path, token)?;
        let now = files::modified(&format::claim_path(path, token));
        let quiet = tombstone_after(now, published, lifetime, started);
        let removed = files::remove_within(path, bound)?;
        let _ = files::remove_within(&beat, bound);
        let afterwards = if removed && quiet { claim::Afterwards::Tombstone } else { claim::Afterwards::Remove };
        Ok((removed, afterwards))
    })?
    .filter(|&removed| removed)
    .map(|_| ())
    .ok_or(LockError::NotOwner)
}

/// Whether a release whose claim is dated `claimed`, of a lock file dated
/// `published`, leaves its claim as a tombstone (point 10): where the lock
/// file was published half its `lifetime` ago or more. The share's dates
/// decide where both are known: they move with its clock, as the age of a
/// ghost does. Where one is not (an `ESTALE` hid it), a party that
/// published the instance itself after `started` asks its own clocks; any
/// other leaves a tombstone.
fn tombstone_after(
    claimed: Option<SystemTime>,
    published: Option<SystemTime>,
    lifetime: Duration,
    started: Option<Started>,
) -> bool {
    match (claimed, published) {
        (Some(claimed), Some(published)) => {
            claim::silence(claimed, published).is_none_or(|silent| silent >= lifetime / 2)
        }
        _ => !started.is_some_and(|started| started.within(lifetime / 2)),
    }
}

/// Undoes an [`acquire_as`] with `token` that was cut short (its caller
/// trapped it on an interrupt, or gave up on it): releases the lock if the
/// call had taken it, and removes every other file named by the token that
/// the call may have left: its staging file `<PATH>.<UUID>.new`, its
/// heartbeat `<PATH>.<UUID>.beat`, and its entry in the queue of waiters.
/// Touches nothing that is not the token's; inside the guest, nothing
/// outside the sandbox. Nothing left is not an error.
///
/// # Errors
/// A malformed token; an invalid path; the sandbox refusing the path; an
/// I/O error.
pub fn abandon(path: &str, token: &str) -> Result<(), LockError> {
    stale::begin();
    check_lock_path(path)?;
    let token = Token::parse(token).map_err(LockError::InvalidToken)?;
    match release_token(path, &token) {
        Ok(()) | Err(LockError::NotOwner) => {}
        Err(e) => return Err(e),
    }
    if let Some(entry) = shared::find(path, &token)? {
        match release_token(&entry, &token) {
            Ok(()) | Err(LockError::NotOwner) => {}
            Err(e) => return Err(e),
        }
    }
    // Named by the token's UUID, which nobody else has.
    files::remove(&format::staged_path(path, &token))?;
    files::remove(&format::beat_path(path, &token))?;
    shared::forget(path, &token)?;
    queue::forget(path, &token)
}

/// Renews the lock at `path` held with `token`: rewrites its heartbeat, so
/// that contenders see its holder is alive, then checks that the lock is
/// still ours. The lock file itself is never touched, so a renewal stalled
/// for any length of time cannot harm a successor. A lock without a lifetime
/// never goes stale; refreshing it only checks that it is ours.
///
/// # Errors
/// [`LockError::NotOwner`] when the lock is no longer ours (broken as stale,
/// or released); otherwise as [`release`].
pub fn refresh(path: &str, token: &str) -> Result<(), LockError> {
    stale::begin();
    files::check_path(path)?;
    let token = Token::parse(token).map_err(LockError::InvalidToken)?;
    // The lock file's holder, or else a shared holder's entry.
    let (path, held) = match held_by(path, &token) {
        Err(LockError::NotOwner) => match shared::find(path, &token)? {
            Some(entry) => {
                let held = held_by(&entry, &token);
                (entry, held)
            }
            None => (path.to_owned(), Err(LockError::NotOwner)),
        },
        held => (path.to_owned(), held),
    };
    let path = path.as_str();
    match held {
        Ok(Held { stale_after: None, .. }) => Ok(()),
        Ok(_) => renew(path, &token, &|_| ()),
        Err(LockError::NotOwner) => {
            // Lost: the heartbeat an earlier renewal wrote speaks for nobody.
            let _ = files::remove(&format::beat_path(path, &token));
            Err(LockError::NotOwner)
        }
        Err(e) => Err(e),
    }
}

/// The steps of a renewal, named for [`renew`]'s `pause` (tests stall a
/// renewer there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenewStep {
    BeforeBeat,
    BeforeCheck,
}

/// Writes a fresh heartbeat for `token`, then reads the lock back. A
/// heartbeat is named by our own token, so whatever the timing, it can only
/// ever speak for our own instance; a successor's is another file. If the
/// lock is no longer ours, the heartbeat we just wrote is removed again.
pub(crate) fn renew(path: &str, token: &Token, pause: &dyn Fn(RenewStep)) -> Result<(), LockError> {
    let beat = format::beat_path(path, token);
    // A staging name of its own: one left behind by anything else cannot
    // block a renewal.
    let staged = format::staged_path(path, &Token::generate("").map_err(LockError::Io)?);
    // Planted bug (tests only): renew by renaming our marker over PATH (as uuidlock 0.1), not the heartbeat.
    let rewrite = if planted("renew-by-rewrite") { Some(held_by(path, token)?.encode()) } else { None };
    pause(RenewStep::BeforeBeat);
    match rewrite {
        Some(marker) => files::replace(path, &staged, &marker)?,
        None => files::renew_in_place(&beat, &staged, &format::beat())?,
    }
    pause(RenewStep::BeforeCheck);
    // Only a lock no longer ours loses the heartbeat: after any other
    // failure (an I/O error reading the lock back) the holder may well
    // still hold it, and a heartbeat removed would leave its lock looking
    // dead by its date (found by `uuidlock simulate --profile nfs`, seed
    // 384: a contender broke a live holder's lock after its renewal's
    // read-back met a stale handle).
    still_ours(path, token).map(drop).inspect_err(|e| {
        if *e == LockError::NotOwner {
            let _ = files::remove(&beat);
        }
    })
}

/// Whether the lock at `path` is held with `token`.
///
/// # Errors
/// A malformed token; an invalid path; the sandbox refusing the path; an I/O
/// error.
pub fn holds(path: &str, token: &str) -> Result<bool, LockError> {
    stale::begin();
    files::check_path(path)?;
    let token = Token::parse(token).map_err(LockError::InvalidToken)?;
    match held_by(path, &token) {
        Ok(_) => Ok(true),
        Err(LockError::NotOwner) => Ok(shared::find(path, &token)?.is_some()),
        Err(e) => Err(e),
    }
}

/// Who holds the lock at `path`, and since when: `None` when it is free.
///
/// Ages are read off the filesystem's own clock, as contenders judge them:
/// `status` writes and removes an empty probe file `<PATH>.<UUID>.new` to
/// read it. Where it cannot (a read-only directory), this machine's clock
/// stands in.
///
/// # Errors
/// An invalid path; the sandbox refusing the path; an I/O error.
pub fn status(path: &str) -> Result<Option<Status>, LockError> {
    stale::begin();
    check_lock_path(path)?;
    let Some(content) = files::read_dated(path)? else { return Ok(None) };
    let fs_now = fs_clock(path);
    // The fence is extra: something planted at the counter's name (which
    // acquire refuses with its own message) must not hide who holds the lock.
    let fence = fence::current(path).ok().flatten();
    Ok(Some(Status { fence, ..status_of(path, content, fs_now)? }))
}

/// The shared holders of the lock at `path` ([`crate::shared`]): readers,
/// or a semaphore's holders, each with its index (a semaphore's slot) and
/// as [`status`] describes a holder (without a fence: a shared holder's is
/// the one it took for the lock file). Empty when there are none.
///
/// # Errors
/// As [`status`].
pub fn holders(path: &str) -> Result<Vec<(u32, Status)>, LockError> {
    stale::begin();
    check_lock_path(path)?;
    let entries = shared::entries(path)?;
    let fs_now = if entries.is_empty() { None } else { fs_clock(path) };
    let mut holders = Vec::new();
    for (index, entry) in entries {
        if let Some(content) = files::read_beside(&entry)? {
            holders.push((index, status_of(&entry, content, fs_now)?));
        }
    }
    Ok(holders)
}

/// The filesystem's clock, read through an empty probe file beside the lock.
fn fs_clock(path: &str) -> Option<SystemTime> {
    files::clock(&format::staged_path(path, &Token::generate("").ok()?))
}

/// What `status` says of the holder of `file` (the lock file, or a shared
/// holder's entry), just read as `content`, at the filesystem's `fs_now`.
fn status_of(file: &str, content: files::Content, fs_now: Option<SystemTime>) -> Result<Status, LockError> {
    let now = fs_now.unwrap_or_else(SystemTime::now);
    let since = |written: Option<SystemTime>| written.map(|at| now.duration_since(at).unwrap_or_default());
    let marker = content.marker();
    let age = since(content.modified).unwrap_or_default();
    let held = match &marker {
        Marker::Uuidlock(held) => Some(held.clone()),
        Marker::Foreign(_) => None,
    };
    let renewed = held
        .as_ref()
        .filter(|held| held.stale_after.is_some())
        .and_then(|held| since(files::modified(&format::beat_path(file, &held.token))));
    // What a contender arriving now would judge.
    let observed = Observed::new(file, content)?;
    let stale = Watch::default().stale(file, &observed, fs_now).is_some();
    Ok(Status { marker, age, renewed, stale, fence: None })
}

/// When the lock file at `path`, ours with `token`, was published, by the
/// filesystem's clock; [`LockError::NotOwner`] if it is not ours.
fn latest_publish(path: &str, token: &Token) -> Result<Option<SystemTime>, LockError> {
    held_dated(path, token).map(|(_, dated)| dated)
}

/// As [`held_by`], with the lock file's date for a lock with a lifetime.
fn held_dated(path: &str, token: &Token) -> Result<(Held, Option<SystemTime>), LockError> {
    let content = read_for_release(path, files::read_if_lifetime)?.ok_or(LockError::NotOwner)?;
    match content.marker() {
        Marker::Uuidlock(held) if held.token == *token => Ok((held, content.modified)),
        _ => Err(LockError::NotOwner),
    }
}

/// [`held_by`], for a lock file that this process wrote and believes it
/// holds (the read-back of a fresh marker, a renewal's check): a file it
/// cannot read is an error, since it may well still be ours, never "someone
/// else's". Taken for someone else's, an acquire would go on with the same
/// token while its marker may still be on disk, unrenewed; a later publish
/// would find that marker (its bytes, as after a lost reply to a link) and
/// hold with it, long silent, and a contender that had watched it silent
/// would break it beside us (found by the simulator: `uuidlock simulate
/// --profile nfs --mode rw --hold 0.5 --seed 109`, an injected `EACCES` on
/// the read-back).
fn still_ours(path: &str, token: &Token) -> Result<Held, LockError> {
    match files::read(path)? {
        Some(files::Content { kind: files::Kind::Unreadable, .. }) => Err(files::unreadable_own(path)),
        content => holding(content.map(|content| content.marker()), token),
    }
}

/// [`held_by`], for a release ([`read_for_release`]).
fn held_for_release(path: &str, token: &Token) -> Result<Held, LockError> {
    holding(read_for_release(path, files::read)?.map(|content| content.marker()), token)
}

/// Reads the lock file at `path` for a release with `read`, and again after
/// each of [`UNREADABLE_AGAIN`] while this user cannot read it. A share can
/// answer `EACCES` for a moment, and the file may still hold the caller's
/// token: taken for someone else's at once, the release answered "not the
/// owner" and left a lock without a lifetime, which nobody breaks, for
/// good (found by the simulator: `uuidlock simulate --profile local
/// --no-lifetime --faults default,errors=0.0005 --hold 0.5 --seed 226`, an
/// injected `EACCES` on the release's read). A file that stays unreadable
/// is another user's, as before: not this caller's to release.
fn read_for_release(
    path: &str,
    read: fn(&str) -> Result<Option<files::Content>, LockError>,
) -> Result<Option<files::Content>, LockError> {
    let unreadable = |content: &Option<files::Content>| {
        content.as_ref().is_some_and(|content| content.kind == files::Kind::Unreadable)
    };
    let mut content = read(path)?;
    for pause in UNREADABLE_AGAIN {
        if !unreadable(&content) {
            break;
        }
        sleep(pause);
        content = read(path)?;
    }
    Ok(content)
}

/// The pauses before a release reads an unreadable lock file again.
const UNREADABLE_AGAIN: [Duration; 3] =
    [Duration::from_millis(1), Duration::from_millis(10), Duration::from_millis(100)];

/// The marker at `path` if it holds `token`; [`LockError::NotOwner`] if not.
fn held_by(path: &str, token: &Token) -> Result<Held, LockError> {
    holding(files::read_marker(path)?, token)
}

/// The marker read if it holds `token`; [`LockError::NotOwner`] if not.
fn holding(marker: Option<Marker>, token: &Token) -> Result<Held, LockError> {
    match marker {
        Some(Marker::Uuidlock(held)) if held.token == *token => Ok(held),
        _ => Err(LockError::NotOwner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim;
    use std::fs;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::SystemTime;

    /// A temp dir and a lock path inside it.
    fn lock_in_temp_dir() -> (tempfile::TempDir, String) {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("job.lock").to_str().unwrap().to_owned();
        (dir, path)
    }

    fn fast() -> Options {
        Options { verification_delay: Duration::ZERO, retry_interval: Duration::from_millis(1), ..Options::default() }
    }

    fn once() -> Options {
        Options { timeout: Some(Duration::ZERO), ..fast() }
    }

    /// The token of an acquisition: most tests need nothing else.
    fn acquire(path: &str, options: &Options) -> Result<Token, LockError> {
        super::acquire(path, options).map(|acquired| acquired.token)
    }

    #[test]
    fn acquire_writes_the_marker_and_release_removes_it() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &Options { prefix: "job-".into(), ..fast() }).unwrap();
        assert!(token.as_str().starts_with("job-"));
        assert_eq!(fs::read(&path).unwrap(), Held::new(token.clone(), None).encode());
        assert_eq!(status(&path).unwrap().map(|s| s.marker), Some(Marker::Uuidlock(Held::new(token.clone(), None))));
        assert!(holds(&path, token.as_str()).unwrap());
        release(&path, token.as_str()).unwrap();
        assert!(!fs::exists(&path).unwrap());
        assert_eq!(status(&path).unwrap(), None);
        assert!(!holds(&path, token.as_str()).unwrap());
    }

    // A publisher whose marker is overwritten during the verification delay
    // (a create both clients of a share won, or a non-atomic peer) takes no
    // fencing number: on smbnetfs two takers racing for one number can lose
    // the counter.
    #[test]
    fn a_publisher_overwritten_during_the_delay_takes_no_fencing_number() {
        let (_dir, path) = lock_in_temp_dir();
        let options = Options { verification_delay: Duration::from_millis(300), ..once() };
        let contender = std::thread::spawn({
            let path = path.clone();
            move || acquire(&path, &options)
        });
        let start = Instant::now();
        while !fs::exists(&path).unwrap() {
            assert!(start.elapsed() < Duration::from_secs(5), "the contender never published");
            std::thread::sleep(Duration::from_millis(1));
        }
        fs::write(&path, b"the last writer of a create both clients won").unwrap();
        assert_eq!(contender.join().unwrap(), Err(LockError::Timeout));
        assert_eq!(fence::current(&path).unwrap(), None, "no number was taken");
    }

    #[test]
    fn a_held_lock_is_not_acquired_again() {
        let (_dir, path) = lock_in_temp_dir();
        let _held = acquire(&path, &fast()).unwrap();
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
    }

    #[test]
    fn a_timeout_waits_at_least_that_long() {
        let (_dir, path) = lock_in_temp_dir();
        let _held = acquire(&path, &fast()).unwrap();
        let start = Instant::now();
        let options = Options { timeout: Some(Duration::from_millis(50)), ..fast() };
        assert_eq!(acquire(&path, &options), Err(LockError::Timeout));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_waiter_gets_the_lock_once_it_is_released() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || acquire(&path, &Options { timeout: Some(Duration::from_secs(30)), ..fast() }))
        };
        std::thread::sleep(Duration::from_millis(20));
        release(&path, held.as_str()).unwrap();
        let next = waiter.join().unwrap().unwrap();
        assert_ne!(next, held);
        assert_eq!(status(&path).unwrap().map(|s| s.marker), Some(Marker::Uuidlock(Held::new(next, None))));
    }

    // A releaser that never waited in line takes the lock back before the
    // head's next look, again and again; after two turns in a row it
    // yields to whoever waits.
    #[test]
    fn a_holder_that_took_the_lock_twice_in_a_row_yields_to_a_waiter() {
        let (_dir, path) = lock_in_temp_dir();
        let first = super::acquire(&path, &fast()).unwrap();
        release(&path, first.token.as_str()).unwrap();
        let second = super::acquire(&path, &fast()).unwrap();
        assert_eq!(second.fence, first.fence + 1);
        let waiter = {
            let path = path.clone();
            let options =
                Options { retry_interval: Duration::from_millis(10), timeout: Some(Duration::from_secs(30)), ..fast() };
            // It holds for a moment, then releases: the third turn waits.
            std::thread::spawn(move || {
                let acquired = super::acquire(&path, &options).unwrap();
                release(&path, acquired.token.as_str()).unwrap();
                acquired.fence
            })
        };
        // Until the waiter is in line.
        let in_line = || {
            fs::read_dir(queue::dir(&path)).is_ok_and(|entries| {
                entries.flatten().any(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            })
        };
        let start = Instant::now();
        while !in_line() {
            assert!(start.elapsed() < Duration::from_secs(10), "the waiter never joined the queue");
            std::thread::sleep(Duration::from_millis(1));
        }
        release(&path, second.token.as_str()).unwrap();
        let third = super::acquire(&path, &Options { timeout: Some(Duration::from_secs(30)), ..fast() }).unwrap();
        release(&path, third.token.as_str()).unwrap();
        let waited = waiter.join().unwrap();
        assert!(waited < third.fence, "the waiter took the lock after the third turn in a row");
    }

    #[test]
    fn release_with_another_token_deletes_nothing() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        let stranger = Token::generate("").unwrap();
        assert_eq!(release(&path, stranger.as_str()), Err(LockError::NotOwner));
        assert_eq!(fs::read(&path).unwrap(), Held::new(held, None).encode());
    }

    #[test]
    fn releasing_twice_reports_not_owner() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        release(&path, held.as_str()).unwrap();
        assert_eq!(release(&path, held.as_str()), Err(LockError::NotOwner));
    }

    #[test]
    fn a_foreign_marker_is_waited_on_and_never_deleted() {
        let (_dir, path) = lock_in_temp_dir();
        fs::write(&path, "4242\nbuildhost\n").unwrap();
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        assert!(matches!(status(&path).unwrap().map(|s| s.marker), Some(Marker::Foreign(_))));
        let token = Token::generate("").unwrap();
        assert_eq!(release(&path, token.as_str()), Err(LockError::NotOwner));
        assert_eq!(fs::read(&path).unwrap(), b"4242\nbuildhost\n");
    }

    #[test]
    fn a_huge_lock_file_is_read_only_in_part() {
        let (_dir, path) = lock_in_temp_dir();
        fs::write(&path, vec![b'x'; 10 << 20]).unwrap();
        assert!(matches!(status(&path).unwrap().map(|s| s.marker), Some(Marker::Foreign(_))));
    }

    #[test]
    fn paths_that_cannot_be_lock_files_are_refused() {
        let dir = crate::scratch::tempdir();
        let base = dir.path().to_str().unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link.lock")).unwrap();
        for path in ["", "a\0b", base, &format!("{base}/"), &format!("{base}/link.lock")] {
            assert!(matches!(acquire(path, &once()), Err(LockError::InvalidPath(_))), "acquire {path:?}");
            assert!(matches!(status(path), Err(LockError::InvalidPath(_))), "status {path:?}");
        }
        assert!(!fs::exists(dir.path().join("target")).unwrap(), "the link was followed");
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_the_fix() {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("no/such/dir/job.lock");
        let Err(LockError::Io(message)) = acquire(path.to_str().unwrap(), &once()) else { panic!() };
        assert!(message.contains("job.lock") && message.contains("create it first"), "{message}");
    }

    #[test]
    fn a_missing_directory_in_a_relative_path_is_not_a_sandbox_error() {
        let Err(LockError::Io(message)) = acquire("no-such-dir-here/job.lock", &once()) else { panic!() };
        assert!(message.contains("create it first"), "{message}");
    }

    #[test]
    fn bad_options_and_tokens_are_refused_before_touching_the_file() {
        let (_dir, path) = lock_in_temp_dir();
        let bad_options = [
            Options { prefix: "has space".into(), ..once() },
            Options { prefix: "x".repeat(65), ..once() },
            Options { verification_delay: MAX_INTERVAL + Duration::from_nanos(1), ..once() },
            Options { retry_interval: Duration::MAX, ..once() },
            Options { stale_after: Some(Duration::ZERO), ..once() },
            Options { stale_after: Some(format::MAX_STALE_AFTER + Duration::from_millis(1)), ..once() },
        ];
        for options in bad_options {
            assert!(matches!(acquire(&path, &options), Err(LockError::InvalidOptions(_))), "{options:?}");
        }
        for token in ["", "nonsense", "\0"] {
            assert!(matches!(release(&path, token), Err(LockError::InvalidToken(_))), "{token:?}");
        }
        assert!(!fs::exists(&path).unwrap());
    }

    #[test]
    fn a_huge_timeout_means_wait_forever_not_overflow() {
        let (_dir, path) = lock_in_temp_dir();
        let options = Options { timeout: Some(Duration::MAX), ..fast() };
        assert!(acquire(&path, &options).is_ok());
    }

    #[test]
    fn threads_contending_never_overlap() {
        // Mutual exclusion natively: every thread checks that nobody else is
        // inside while it holds the lock.
        let (_dir, path) = lock_in_temp_dir();
        let inside = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside) = (path.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let token = acquire(&path, &fast()).unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                        release(&path, token.as_str()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    /// Leaves a lock file as a holder that died would: `lifetime` declared,
    /// never refreshed, never released.
    fn dead_holders_lock(path: &str, lifetime: Option<Duration>) -> Vec<u8> {
        let bytes = Held::new(Token::generate("dead-").unwrap(), lifetime).encode();
        fs::write(path, &bytes).unwrap();
        bytes
    }

    fn with_lifetime(lifetime: Duration) -> Options {
        Options { stale_after: Some(lifetime), ..fast() }
    }

    #[test]
    fn a_dead_holders_lock_is_broken_once_its_lifetime_has_passed() {
        let (_dir, path) = lock_in_temp_dir();
        dead_holders_lock(&path, Some(Duration::from_millis(40)));
        let start = Instant::now();
        let token = acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40), "broken before its lifetime");
        assert!(holds(&path, token.as_str()).unwrap());
        assert!(!fs::exists(format::claim_path(&path, &token)).unwrap());
    }

    #[test]
    fn a_lock_without_a_lifetime_is_never_broken() {
        let (_dir, path) = lock_in_temp_dir();
        let bytes = dead_holders_lock(&path, None);
        let options = Options { timeout: Some(Duration::from_millis(150)), ..with_lifetime(MIN_STALE_AFTER) };
        assert_eq!(acquire(&path, &options), Err(LockError::Timeout));
        assert_eq!(fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_refreshed_lock_is_never_broken() {
        let (_dir, path) = lock_in_temp_dir();
        // Margins for a loaded machine: refreshes every 30 ms keep a 600 ms
        // lifetime alive; without them the contender would break it well
        // within its 1.2 s.
        let token = acquire(&path, &with_lifetime(Duration::from_millis(600))).unwrap();
        let contender = {
            let path = path.clone();
            std::thread::spawn(move || {
                acquire(&path, &Options { timeout: Some(Duration::from_millis(1200)), ..fast() })
            })
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1300) {
            refresh(&path, token.as_str()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        assert_eq!(contender.join().unwrap(), Err(LockError::Timeout));
        let Some(Status { marker: Marker::Uuidlock(held), renewed, .. }) = status(&path).unwrap() else { panic!() };
        assert_eq!(held.token, token);
        assert!(renewed.is_some_and(|ago| ago < Duration::from_millis(300)), "{renewed:?}");
        release(&path, token.as_str()).unwrap();
        assert!(!fs::exists(format::beat_path(&path, &token)).unwrap(), "the heartbeat outlived the release");
    }

    #[test]
    fn a_holder_whose_lock_was_broken_is_told_and_deletes_nothing() {
        let (_dir, path) = lock_in_temp_dir();
        let late = acquire(&path, &with_lifetime(MIN_STALE_AFTER)).unwrap();
        backdate(&path, Duration::from_secs(10));
        let next = acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(release(&path, late.as_str()), Err(LockError::NotOwner));
        assert_eq!(refresh(&path, late.as_str()), Err(LockError::NotOwner));
        assert!(!holds(&path, late.as_str()).unwrap());
        assert_eq!(fs::read(&path).unwrap(), bytes);
        release(&path, next.as_str()).unwrap();
    }

    #[test]
    fn while_a_claim_is_held_the_holder_cannot_release_but_renews() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &with_lifetime(Duration::from_secs(60))).unwrap();
        let bytes = fs::read(&path).unwrap();
        let claim = format::claim_path(&path, &token);
        fs::write(&claim, Held::new(Token::generate("").unwrap(), Some(Duration::from_secs(60))).encode()).unwrap();
        assert_eq!(release(&path, token.as_str()), Err(LockError::NotOwner));
        // A renewal touches only the heartbeat: it needs no claim, and a
        // breaker holding one sees the heartbeat change and backs off.
        refresh(&path, token.as_str()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), bytes);
        fs::remove_file(&claim).unwrap();
        release(&path, token.as_str()).unwrap();
    }

    #[test]
    fn a_claim_left_by_a_crashed_breaker_is_broken_too() {
        let (_dir, path) = lock_in_temp_dir();
        let lifetime = Duration::from_millis(30);
        let stale = Held::new(Token::generate("dead-").unwrap(), Some(lifetime));
        fs::write(&path, stale.encode()).unwrap();
        let claim = format::claim_path(&path, &stale.token);
        fs::write(&claim, Held::new(Token::generate("").unwrap(), Some(lifetime)).encode()).unwrap();
        let dead_claim = fs::read(&claim).unwrap();
        let token = acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        assert!(holds(&path, token.as_str()).unwrap());
        // What is there now is the breaker's tombstone, not the dead claim.
        assert_ne!(fs::read(&claim).ok(), Some(dead_claim), "the stale claim was left behind");
    }

    #[test]
    fn contenders_breaking_one_stale_lock_let_exactly_one_in() {
        // Eight threads see the same dead holder's lock go stale and race to
        // break it; nobody releases, so exactly one may end up holding.
        for _ in 0..5 {
            let (_dir, path) = lock_in_temp_dir();
            dead_holders_lock(&path, Some(Duration::from_millis(20)));
            let winners: Vec<_> = (0..8)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let patient =
                            Options { timeout: Some(Duration::from_secs(1)), ..with_lifetime(Duration::from_secs(60)) };
                        acquire(&path, &patient).ok()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|thread| thread.join().unwrap())
                .collect();
            assert_eq!(winners.len(), 1, "{winners:?}");
            assert!(holds(&path, winners[0].as_str()).unwrap());
        }
    }

    #[test]
    fn a_crash_while_staging_leaves_no_lock() {
        // Killed between create and write, or mid-write: only the staging
        // file exists, and the lock is free.
        let (_dir, path) = lock_in_temp_dir();
        let token = Token::generate("").unwrap();
        fs::write(format::staged_path(&path, &token), &Held::new(token, None).encode()[..10]).unwrap();
        assert!(acquire(&path, &once()).is_ok());
    }

    #[test]
    fn a_partial_lock_file_is_foreign_and_kept_however_old() {
        // What a peer writing in place leaves when killed mid-write.
        let (_dir, path) = lock_in_temp_dir();
        let content = b"1\nuuidlock/1?tok";
        fs::write(&path, content).unwrap();
        aged(&path, Duration::from_secs(3600));
        let options = Options { timeout: Some(Duration::from_millis(60)), ..with_lifetime(MIN_STALE_AFTER) };
        assert_eq!(acquire(&path, &options), Err(LockError::Timeout));
        assert_eq!(fs::read(&path).unwrap(), content);
    }

    /// Dates the file at `path` `age` ago.
    fn aged(path: &str, age: Duration) {
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn an_empty_lock_file_is_broken_only_by_a_lifetime_it_outlived() {
        // What a writer without hard links leaves when killed between its
        // create and its write (point 12).
        let (_dir, path) = lock_in_temp_dir();
        fs::write(&path, b"").unwrap();
        let short = |options: Options| Options { timeout: Some(Duration::from_millis(300)), ..options };
        // Without a lifetime nothing is ever broken, however old.
        aged(&path, Duration::from_secs(3600));
        assert_eq!(acquire(&path, &short(fast())), Err(LockError::Timeout));
        // Younger than two lifetimes by its date, and watched for less
        // than one: kept.
        aged(&path, Duration::from_secs(5));
        assert_eq!(acquire(&path, &short(with_lifetime(Duration::from_secs(10)))), Err(LockError::Timeout));
        assert_eq!(fs::read(&path).unwrap(), b"");
        // Older than two: broken at once, and taken.
        let token = acquire(&path, &short(with_lifetime(Duration::from_secs(2)))).expect("the empty file was kept");
        assert!(
            matches!(status(&path).unwrap().map(|s| s.marker), Some(Marker::Uuidlock(held)) if held.token == token)
        );
        release(&path, token.as_str()).unwrap();
        // A fresh one, once watched for a lifetime.
        fs::write(&path, b"").unwrap();
        let options = Options { timeout: Some(Duration::from_secs(10)), ..with_lifetime(MIN_STALE_AFTER) };
        let token = acquire(&path, &options).expect("the empty file was never broken");
        release(&path, token.as_str()).unwrap();
    }

    #[test]
    fn a_long_verification_delay_does_not_shorten_the_lifetime() {
        // A lifetime counts from the write (by the filesystem's clock). The
        // holder verifies for 300 ms of its 600 ms lifetime, then refreshes
        // every 450 ms after acquire returns, as if it had the whole
        // lifetime. Its first refresh comes 750 ms after the write: too late,
        // but for the refresh acquire makes after the delay. A contender
        // arrives at 150 ms and would break the lock at 600 ms.
        let (_dir, path) = lock_in_temp_dir();
        let holder = {
            let path = path.clone();
            std::thread::spawn(move || {
                let slow = Options {
                    verification_delay: Duration::from_millis(300),
                    ..with_lifetime(Duration::from_millis(600))
                };
                let token = acquire(&path, &slow).unwrap();
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(450));
                    refresh(&path, token.as_str()).expect("a holder refreshing in time lost its lock");
                }
                release(&path, token.as_str()).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        let contender = acquire(&path, &Options { timeout: Some(Duration::from_millis(1200)), ..fast() });
        assert_eq!(contender, Err(LockError::Timeout));
        holder.join().unwrap();
    }

    #[test]
    fn a_lifetime_shorter_than_twice_the_verification_delay_is_refused() {
        let (_dir, path) = lock_in_temp_dir();
        let options =
            Options { verification_delay: Duration::from_millis(600), ..with_lifetime(Duration::from_secs(1)) };
        assert!(matches!(acquire(&path, &options), Err(LockError::InvalidOptions(_))));
        assert!(!fs::exists(&path).unwrap());
    }

    #[test]
    fn a_chain_of_dead_claimants_of_any_length_is_broken() {
        // A stale lock whose claim, and that claim's claim, and so on four
        // levels up, were each left by a process killed while holding it.
        let (dir, path) = lock_in_temp_dir();
        let lifetime = Duration::from_millis(20);
        let mut instance = Held::new(Token::generate("dead-").unwrap(), Some(lifetime));
        fs::write(&path, instance.encode()).unwrap();
        for _ in 0..4 {
            let claimant = Held::new(Token::generate("").unwrap(), Some(lifetime));
            fs::write(format::claim_path(&path, &instance.token), claimant.encode()).unwrap();
            instance = claimant;
        }
        let planted: Vec<Vec<u8>> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".claim"))
            .map(|p| fs::read(p).unwrap())
            .collect();
        let token = acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        assert!(holds(&path, token.as_str()).unwrap());
        // Every dead claim is gone; what stays beside the lock is tombstones
        // (the breakers' claims, point 10), one per instance broken.
        for entry in fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap().path();
            if entry.to_string_lossy().ends_with(".claim") {
                assert!(!planted.contains(&fs::read(&entry).unwrap()), "a dead claim was left: {}", entry.display());
            }
        }
    }

    // Point 10: a breaker leaves its claim on the instance it broke as a
    // tombstone, so that a contender that still sees that instance (a
    // caching share's ghost: GlusterFS serves a removed file's bytes for a
    // second) cannot take the claim and delete the successor's lock by name.
    // The ghost is played here by the dead instance's bytes and date put
    // back at the path, which is what the late breaker's client shows it.
    #[test]
    fn a_late_breaker_of_a_broken_instance_finds_its_tombstone() {
        let (_dir, path) = lock_in_temp_dir();
        let dead = Held::new(Token::generate("dead-").unwrap(), Some(MIN_STALE_AFTER));
        fs::write(&path, dead.encode()).unwrap();
        backdate(&path, Duration::from_secs(10));
        let dated = files::modified(&path).unwrap();
        let observed = Observed::new(&path, files::read_dated(&path).unwrap().unwrap()).unwrap();
        let now = Some(dated + Duration::from_secs(10));
        let mut late = Watch::default();
        let stale = late.stale(&path, &observed, now).expect("dead");
        // Another contender breaks it and takes the lock.
        let successor = acquire(&path, &once()).unwrap();
        assert!(fs::exists(format::claim_path(&path, &dead.token)).unwrap(), "no tombstone");
        // What the late breaker's client shows at the lock's name.
        let successors = fs::read(&path).unwrap();
        fs::write(&path, dead.encode()).unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(dated).unwrap();
        assert_eq!(claim::break_stale(&path, &observed, &stale, &mut late, now), Ok(false));
        assert!(fs::exists(&path).unwrap(), "the late breaker deleted what is at the lock's name");
        fs::write(&path, successors).unwrap();
        assert!(holds(&path, successor.as_str()).unwrap());
    }

    // Point 10, for releases: a holder that releases a lock it left silent
    // for half its lifetime or more leaves a tombstone; one that renewed
    // removes its claim, as before.
    #[test]
    fn a_release_after_long_silence_leaves_a_tombstone() {
        let (_dir, path) = lock_in_temp_dir();
        let quiet = acquire(&path, &with_lifetime(Duration::from_secs(1))).unwrap();
        backdate(&path, Duration::from_millis(600));
        release(&path, quiet.as_str()).unwrap();
        assert!(fs::exists(format::claim_path(&path, &quiet)).unwrap(), "no tombstone after a long silence");
        let renewed = acquire(&path, &with_lifetime(Duration::from_secs(60))).unwrap();
        refresh(&path, renewed.as_str()).unwrap();
        release(&path, renewed.as_str()).unwrap();
        assert!(!fs::exists(format::claim_path(&path, &renewed)).unwrap(), "a tombstone after a fresh renewal");
        assert!(!fs::exists(&path).unwrap());
    }

    #[test]
    fn a_lock_name_too_long_for_its_claims_is_refused() {
        let dir = crate::scratch::tempdir();
        let too_long = dir.path().join("x".repeat(MAX_NAME_LEN + 1));
        let result = acquire(too_long.to_str().unwrap(), &once());
        assert!(matches!(result, Err(LockError::InvalidPath(_))), "{result:?}");
        let longest = dir.path().join("y".repeat(MAX_NAME_LEN));
        let longest = longest.to_str().unwrap();
        let token = acquire(longest, &with_lifetime(Duration::from_secs(60))).unwrap();
        refresh(longest, token.as_str()).unwrap();
        release(longest, token.as_str()).unwrap();
    }

    #[test]
    fn a_leftover_staging_file_does_not_block_a_refresh() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &with_lifetime(Duration::from_secs(60))).unwrap();
        fs::write(format::staged_path(&path, &token), "left by a failed unlink").unwrap();
        refresh(&path, token.as_str()).unwrap();
        release(&path, token.as_str()).unwrap();
    }

    // A renewer stalled at any step, for longer than the lifetime, while a
    // contender breaks its lock and takes it: the stalled renewal is told
    // it lost, and the successor's lock, heartbeat and fence are untouched.
    #[test]
    fn a_stalled_renewer_cannot_harm_a_successor() {
        for step in [RenewStep::BeforeBeat, RenewStep::BeforeCheck] {
            let (_dir, path) = lock_in_temp_dir();
            let stalled = acquire(&path, &with_lifetime(MIN_STALE_AFTER)).unwrap();
            let renewal = {
                let (path, token) = (path.clone(), stalled.clone());
                std::thread::spawn(move || {
                    renew(&path, &token, &|at| {
                        if at == step {
                            std::thread::sleep(MIN_STALE_AFTER * 2 + Duration::from_millis(200));
                        }
                    })
                })
            };
            let patient = Options { timeout: Some(Duration::from_secs(10)), ..with_lifetime(Duration::from_secs(60)) };
            let successor = super::acquire(&path, &patient).unwrap();
            refresh(&path, successor.token.as_str()).unwrap();
            let (lock, beat) =
                (fs::read(&path).unwrap(), fs::read(format::beat_path(&path, &successor.token)).unwrap());
            assert_eq!(renewal.join().unwrap(), Err(LockError::NotOwner), "stalled at {step:?}");
            assert_eq!(fs::read(&path).unwrap(), lock, "stalled at {step:?}: the successor's lock changed");
            assert_eq!(fs::read(format::beat_path(&path, &successor.token)).unwrap(), beat);
            assert!(!fs::exists(format::beat_path(&path, &stalled)).unwrap(), "the stalled heartbeat was left");
            assert_eq!(fence::current(&path).unwrap(), Some(successor.fence));
            assert!(holds(&path, successor.token.as_str()).unwrap());
        }
    }

    // Every acquisition gets a larger fencing number: across releases,
    // locks without and with a lifetime, and a stale lock broken.
    #[test]
    fn fences_increase_across_releases_and_breaks() {
        let (_dir, path) = lock_in_temp_dir();
        let mut fences = Vec::new();
        for lifetime in [None, Some(Duration::from_secs(60)), None] {
            let acquired = super::acquire(&path, &Options { stale_after: lifetime, ..fast() }).unwrap();
            fences.push(acquired.fence);
            release(&path, acquired.token.as_str()).unwrap();
        }
        let dead = super::acquire(&path, &with_lifetime(MIN_STALE_AFTER)).unwrap();
        backdate(&path, Duration::from_secs(10));
        fences.push(dead.fence);
        let next = super::acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        fences.push(next.fence);
        let first = fences[0];
        assert_eq!(fences, [first, first + 1, first + 2, first + 3, first + 4]);
        let Some(Status { fence, .. }) = status(&path).unwrap() else { panic!() };
        assert_eq!(fence, Some(first + 4));
    }

    // A caller-made token: known before the call, so an interrupted acquire
    // can be undone; and it cannot take a lock it already holds.
    #[test]
    fn acquire_as_takes_the_callers_token() {
        let (_dir, path) = lock_in_temp_dir();
        let token = Token::generate("mine-").unwrap();
        let acquired = acquire_as(&path, token.clone(), &fast()).unwrap();
        assert_eq!(acquired.token, token);
        assert!(matches!(acquire_as(&path, token.clone(), &once()), Err(LockError::AlreadyHeld(_))));
        release(&path, token.as_str()).unwrap();
        // A token that is not random could be another caller's too.
        for shared in ["mine-00000000-0000-1000-8000-000000000000", "00000000-0000-0000-0000-000000000000"] {
            let shared = Token::parse(shared).unwrap();
            assert!(matches!(acquire_as(&path, shared, &once()), Err(LockError::InvalidToken(_))));
        }
        assert!(!std::path::Path::new(&path).exists());
        // A staging file left by an interrupted acquire with this token:
        // the message names it and the undo, not the free lock path.
        let staged = format::staged_path(&path, &token);
        std::fs::write(&staged, "left").unwrap();
        match acquire_as(&path, token.clone(), &once()) {
            Err(LockError::Io(why)) => assert!(why.contains(&staged) && why.contains("abandon"), "{why}"),
            other => panic!("{other:?}"),
        }
        abandon(&path, token.as_str()).unwrap();
        assert!(!std::path::Path::new(&staged).exists());
        acquire_as(&path, token.clone(), &once()).unwrap();
        release(&path, token.as_str()).unwrap();
    }

    // A token from another lock path is not-owner for release and refresh,
    // and neither lock, heartbeat nor fence changes.
    #[test]
    fn a_token_from_another_lock_changes_nothing() {
        let (dir, a) = lock_in_temp_dir();
        let b = dir.path().join("other.lock").to_str().unwrap().to_owned();
        let token_a = acquire(&a, &with_lifetime(Duration::from_secs(60))).unwrap();
        let token_b = acquire(&b, &with_lifetime(Duration::from_secs(60))).unwrap();
        refresh(&b, token_b.as_str()).unwrap();
        let before = |path: &str, token: &Token| {
            (fs::read(path).unwrap(), fs::read(format::beat_path(path, token)).ok(), fence::current(path).unwrap())
        };
        let (was_a, was_b) = (before(&a, &token_a), before(&b, &token_b));
        assert_eq!(release(&b, token_a.as_str()), Err(LockError::NotOwner));
        assert_eq!(refresh(&b, token_a.as_str()), Err(LockError::NotOwner));
        assert_eq!((before(&a, &token_a), before(&b, &token_b)), (was_a, was_b));
    }

    /// Dates `path` back by `ago`, as if written then.
    /// (And its heartbeats, if any: an acquire renews once when it sweeps,
    /// at one fencing number in sweep::EVERY.)
    fn backdate(path: &str, ago: Duration) {
        let at = |path: &std::path::Path| {
            let file = fs::File::options().write(true).open(path).unwrap();
            file.set_modified(SystemTime::now() - ago).unwrap();
        };
        let path = std::path::Path::new(path);
        at(path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for entry in fs::read_dir(path.parent().unwrap()).unwrap() {
            let beside = entry.unwrap().file_name().to_string_lossy().into_owned();
            if beside.starts_with(&format!("{name}.")) && beside.ends_with(".beat") {
                at(&path.with_file_name(beside));
            }
        }
    }

    // A contender that arrives long after the holder died breaks the lock at
    // once: the lock's date and the contender's staging file's are both the
    // filesystem's clock. `status` says so first.
    #[test]
    fn a_lock_dead_for_longer_than_its_lifetime_is_broken_at_once() {
        let (_dir, path) = lock_in_temp_dir();
        dead_holders_lock(&path, Some(Duration::from_millis(500)));
        backdate(&path, Duration::from_secs(10));
        assert!(status(&path).unwrap().unwrap().stale);
        let token = acquire(&path, &once()).expect("a lock dead for 10 s with a 0.5 s lifetime was not broken");
        assert!(holds(&path, token.as_str()).unwrap());
        assert!(!status(&path).unwrap().unwrap().stale);
    }

    // The heartbeat counts as a sign of life: an old lock file renewed just
    // now is not stale, by either clock.
    #[test]
    fn a_recent_heartbeat_keeps_an_old_lock() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &with_lifetime(Duration::from_millis(500))).unwrap();
        backdate(&path, Duration::from_secs(10));
        refresh(&path, token.as_str()).unwrap();
        assert!(!status(&path).unwrap().unwrap().stale);
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        assert!(holds(&path, token.as_str()).unwrap());
    }

    // Dates that cannot be right (after the filesystem's "now") are not
    // trusted: the contender falls back to its own watch, a lifetime long.
    #[test]
    fn a_date_in_the_future_falls_back_to_the_watch() {
        let (_dir, path) = lock_in_temp_dir();
        dead_holders_lock(&path, Some(Duration::from_millis(300)));
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(3600)).unwrap();
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        let start = Instant::now();
        acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300), "broken before a lifetime on the watch");
    }

    // A FIFO, or anything else that is not a regular file, at the lock path
    // is refused at once by every call, never opened (which would block)
    // and never deleted.
    #[test]
    fn a_fifo_at_the_lock_path_is_refused_without_blocking() {
        let (_dir, path) = lock_in_temp_dir();
        let c_path = std::ffi::CString::new(path.clone()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let token = Token::generate("").unwrap();
        let start = Instant::now();
        let refused =
            |result: Result<(), LockError>| matches!(result, Err(LockError::InvalidPath(why)) if why.contains("FIFO"));
        assert!(refused(acquire(&path, &once()).map(drop)));
        assert!(refused(acquire(&path, &Options { timeout: None, ..fast() }).map(drop)));
        assert!(refused(status(&path).map(drop)));
        assert!(refused(release(&path, token.as_str())));
        assert!(refused(refresh(&path, token.as_str())));
        assert!(refused(holds(&path, token.as_str()).map(drop)));
        assert!(start.elapsed() < Duration::from_secs(5));
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo(), "the FIFO was removed");
    }

    // Two releases of one lock without a lifetime (a script's trap and its
    // normal exit): the one held back between its check and its delete,
    // while the other releases and a successor acquires, must not delete
    // the successor's lock.
    #[test]
    fn a_release_held_back_cannot_delete_a_successors_lock() {
        let (_dir, path) = lock_in_temp_dir();
        let first = acquire(&path, &fast()).unwrap();
        let successor = std::cell::RefCell::new(None);
        let late = release_paused(&path, &first, &|| {
            release(&path, first.as_str()).unwrap();
            *successor.borrow_mut() = Some(acquire(&path, &fast()).unwrap());
        });
        assert_eq!(late, Err(LockError::NotOwner));
        let successor = successor.into_inner().unwrap();
        assert!(holds(&path, successor.as_str()).unwrap(), "the late release deleted the successor's lock");
    }

    // While one release of a lock without a lifetime holds its claim, a
    // second release of the same token touches nothing.
    #[test]
    fn a_release_finding_the_claim_taken_touches_nothing() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &fast()).unwrap();
        let claim = format::claim_path(&path, &token);
        fs::write(&claim, b"").unwrap();
        assert_eq!(release(&path, token.as_str()), Err(LockError::NotOwner));
        assert!(holds(&path, token.as_str()).unwrap());
        fs::remove_file(&claim).unwrap();
        release(&path, token.as_str()).unwrap();
        assert_eq!(fs::read_dir(_dir.path()).unwrap().count(), 1, "only the fence directory is left");
    }

    // An acquirer whose first instance was broken publishes the same marker
    // again. A breaker that judged the first instance stale, and only then
    // takes the claim, must not delete the second: same bytes, later date.
    #[test]
    fn a_late_breaker_cannot_delete_the_same_marker_published_again() {
        let (_dir, path) = lock_in_temp_dir();
        let a = Token::generate("a-").unwrap();
        fs::write(&path, Held::new(a.clone(), Some(MIN_STALE_AFTER)).encode()).unwrap();
        backdate(&path, Duration::from_secs(10));
        let b1 = Token::generate("b1-").unwrap();
        let b1_marker = Held::new(b1.clone(), Some(MIN_STALE_AFTER)).encode();
        let staged = format::staged_path(&path, &b1);
        let Ok(Created::Exists { there: Some(there), now }) =
            files::publish(&path, &staged, &b1_marker, Fallback::Directory)
        else {
            panic!("the first instance is there")
        };
        let observed = Observed::new(&path, there).unwrap();
        let mut watch = Watch::default();
        let stale = watch.stale(&path, &observed, now).expect("the first instance is stale");
        // Meanwhile B2 breaks it, holds and releases; A publishes again.
        let b2 = super::acquire(&path, &once()).unwrap();
        release(&path, b2.token.as_str()).unwrap();
        acquire_as(&path, a.clone(), &with_lifetime(MIN_STALE_AFTER)).unwrap();
        assert!(!claim::break_stale(&path, &observed, &stale, &mut watch, now).unwrap());
        assert!(holds(&path, a.as_str()).unwrap(), "the late breaker deleted the second instance");
    }

    // A forward step of the filesystem's clock shorter than 5/3 of a
    // lifetime (here 450 ms of a 600 ms lifetime, just before a renewal is
    // due) does not make a live holder look dead.
    #[test]
    fn a_forward_clock_step_does_not_evict_a_live_holder() {
        let (_dir, path) = lock_in_temp_dir();
        let holder = super::acquire(&path, &with_lifetime(Duration::from_millis(600))).unwrap();
        refresh(&path, holder.token.as_str()).unwrap();
        std::thread::sleep(Duration::from_millis(170));
        backdate(&path, Duration::from_millis(450 + 170));
        backdate(&format::beat_path(&path, &holder.token), Duration::from_millis(450 + 170));
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        refresh(&path, holder.token.as_str()).unwrap();
    }

    // A dead holder whose breaker died holding the claim: one try breaks
    // the claim and then the lock.
    #[test]
    fn one_try_breaks_a_dead_lock_and_its_dead_claimant() {
        let (_dir, path) = lock_in_temp_dir();
        let dead = Held::new(Token::generate("dead-").unwrap(), Some(MIN_STALE_AFTER));
        fs::write(&path, dead.encode()).unwrap();
        backdate(&path, Duration::from_secs(10));
        let claim = format::claim_path(&path, &dead.token);
        fs::write(&claim, Held::new(Token::generate("").unwrap(), Some(MIN_STALE_AFTER)).encode()).unwrap();
        backdate(&claim, Duration::from_secs(10));
        let token = acquire(&path, &once()).expect("one try");
        assert!(holds(&path, token.as_str()).unwrap());
    }

    // The renewal that acquire makes after the verification delay fails
    // (here: a directory where the heartbeat goes): acquire fails and
    // leaves no lock behind, since nobody would get its token.
    #[test]
    fn an_acquire_whose_first_renewal_fails_leaves_no_lock() {
        let (_dir, path) = lock_in_temp_dir();
        let token = Token::generate("").unwrap();
        fs::create_dir(format::beat_path(&path, &token)).unwrap();
        let options =
            Options { verification_delay: Duration::from_millis(10), ..with_lifetime(Duration::from_secs(3600)) };
        assert!(acquire_as(&path, token.clone(), &options).is_err());
        assert!(!holds(&path, token.as_str()).unwrap(), "the lock was left behind");
    }

    // Finding 1 of the hostile-directory review: a FIFO planted at any name
    // uuidlock uses beside the lock (the fencing counter, the queue, its
    // ticket counter, `served`, future entries) made callers hang in `open`
    // for good, past their timeout. Every call now ends within its timeout,
    // and an acquire that cannot take a fence leaves no lock behind.
    #[test]
    fn fifos_planted_beside_the_lock_never_block_a_call() {
        use crate::scratch::{mkfifo, within};
        let bound = Duration::from_secs(10);
        // At the fencing counter's name: a clear error, and no lock left.
        let (_dir, path) = lock_in_temp_dir();
        mkfifo(&fence::dir(&path));
        let p = path.clone();
        let result = within(bound, "acquire with a FIFO as the counter", move || acquire(&p, &once()));
        assert!(matches!(&result, Err(LockError::Io(why)) if why.contains("named pipe")), "{result:?}");
        assert!(!fs::exists(&path).unwrap(), "the lock was left behind");
        // In the queue: waiters time out on time, and still get the lock.
        for planted in ["", "/tickets", "/served", "/1", "/2", "/3"] {
            let (_dir, path) = lock_in_temp_dir();
            if !planted.is_empty() {
                fs::create_dir(queue::dir(&path)).unwrap();
            }
            mkfifo(&format!("{}{planted}", queue::dir(&path)));
            let held = acquire(&path, &fast()).unwrap();
            let p = path.clone();
            let waited = Options { timeout: Some(Duration::from_millis(300)), ..fast() };
            let result = within(bound, "a waiter", move || acquire(&p, &waited));
            assert_eq!(result, Err(LockError::Timeout), "FIFO at queue{planted}");
            let p = path.clone();
            let waiter = std::thread::spawn(move || acquire(&p, &Options { timeout: Some(bound), ..fast() }));
            std::thread::sleep(Duration::from_millis(50));
            release(&path, held.as_str()).unwrap();
            let next = waiter.join().unwrap().unwrap_or_else(|e| panic!("FIFO at queue{planted}: {e}"));
            release(&path, next.as_str()).unwrap();
        }
    }

    // Finding 5: junk planted at a live holder's claim made its release fail
    // (`uuidlock run` then exited 75 though CMD ended well), and the lock was
    // never broken once its holder died. A claim no uuidlock party could
    // have written speaks for nobody: the holder releases through it, and a
    // contender breaks a dead holder's lock through it.
    #[test]
    fn junk_at_a_claim_wedges_nothing() {
        for junk in ["junk", "", "fifo"] {
            let (_dir, path) = lock_in_temp_dir();
            let plant = |at: &str| match junk {
                "fifo" => crate::scratch::mkfifo(at),
                bytes => fs::write(at, bytes).unwrap(),
            };
            let live = acquire(&path, &with_lifetime(Duration::from_secs(60))).unwrap();
            plant(&format::claim_path(&path, &live));
            release(&path, live.as_str()).unwrap_or_else(|e| panic!("{junk:?} at the claim: {e}"));
            assert!(!fs::exists(&path).unwrap());

            let dead = acquire(&path, &with_lifetime(MIN_STALE_AFTER)).unwrap();
            plant(&format::claim_path(&path, &dead));
            backdate(&path, Duration::from_secs(10));
            assert!(status(&path).unwrap().unwrap().stale);
            let next = acquire(&path, &once()).unwrap_or_else(|e| panic!("{junk:?} at a dead lock's claim: {e}"));
            assert!(holds(&path, next.as_str()).unwrap());
            release(&path, next.as_str()).unwrap();
        }
    }

    // A FIFO or a link at a holder's heartbeat is read as what it is, never
    // opened or followed: it counts as a heartbeat that never changes, and
    // the holder's next renewal replaces it.
    #[test]
    fn a_fifo_at_the_heartbeat_is_replaced_by_the_next_renewal() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &with_lifetime(Duration::from_secs(60))).unwrap();
        let beat = format::beat_path(&path, &token);
        // An acquire that swept (at one fence in sweep::EVERY) renewed:
        // the neighbour replaces that heartbeat.
        let _ = fs::remove_file(&beat);
        crate::scratch::mkfifo(&beat);
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        refresh(&path, token.as_str()).unwrap();
        assert!(fs::symlink_metadata(&beat).unwrap().is_file());
        release(&path, token.as_str()).unwrap();
    }

    // An interrupted acquire is undone inside the sandbox: the lock if it was
    // taken, the staging file and the heartbeat named by the token, and its
    // queue entry; nothing of anyone else's.
    #[test]
    fn abandon_removes_what_the_token_left_and_nothing_else() {
        let (dir, path) = lock_in_temp_dir();
        let other = acquire(&path, &fast()).unwrap();
        let token = Token::generate("").unwrap();
        let waiter = queue::Waiter::join(&path, &token, Duration::from_millis(1), Duration::ZERO).unwrap();
        let theirs =
            queue::Waiter::join(&path, &Token::generate("").unwrap(), Duration::from_millis(1), Duration::ZERO);
        std::mem::forget(waiter); // trapped mid-wait: its entry stays
        fs::write(format::staged_path(&path, &token), b"half").unwrap();
        fs::write(format::beat_path(&path, &token), b"beat").unwrap();
        abandon(&path, token.as_str()).unwrap();
        assert!(holds(&path, other.as_str()).unwrap(), "another holder's lock was touched");
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["job.lock", "job.lock.fence", "job.lock.queue"]);
        let entries = fs::read_dir(queue::dir(&path)).unwrap().filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
        });
        assert_eq!(entries.count(), 1, "only the other waiter's entry stays");
        drop(theirs);
        // It took the lock: abandoning releases it.
        release(&path, other.as_str()).unwrap();
        let taken = acquire_as(&path, token.clone(), &fast()).unwrap();
        abandon(&path, taken.token.as_str()).unwrap();
        assert!(!fs::exists(&path).unwrap());
        abandon(&path, token.as_str()).unwrap();
    }

    // On a share that dates files by each client's clock, a contender whose
    // clock runs ahead sees live locks older than they are; with the skew
    // stated, dates alone break a lock only after two lifetimes plus it.
    #[test]
    fn a_stated_clock_skew_delays_judging_by_dates() {
        let (_dir, path) = lock_in_temp_dir();
        dead_holders_lock(&path, Some(Duration::from_secs(1)));
        // Two lifetimes and a second old, by the files' dates.
        backdate(&path, Duration::from_secs(3));
        let skewed = Options { max_clock_skew: Duration::from_secs(5), ..once() };
        assert_eq!(acquire(&path, &skewed), Err(LockError::Timeout), "broken by dates within the skew");
        assert!(acquire(&path, &once()).is_ok(), "without a skew, the dates break it");
        let too_much = Options { max_clock_skew: format::MAX_STALE_AFTER + Duration::from_secs(1), ..once() };
        assert!(matches!(acquire(&path, &too_much), Err(LockError::InvalidOptions(_))));
    }

    // An acquirer whose first instance was broken while it stalled publishes
    // the same token again and wins: the breaker's tombstone, named by that
    // token, is older than the new instance, and must not stop its release
    // (the second adversarial review, finding 1: release exited 3 for good).
    #[test]
    fn a_tombstone_of_an_earlier_instance_does_not_stop_the_release() {
        let (_dir, path) = lock_in_temp_dir();
        let token = Token::generate("").unwrap();
        acquire_as(&path, token.clone(), &with_lifetime(MIN_STALE_AFTER)).unwrap();
        backdate(&path, Duration::from_secs(10));
        let breaker = acquire(&path, &once()).unwrap();
        let tombstone = format::claim_path(&path, &token);
        assert!(fs::exists(&tombstone).unwrap(), "the break left no tombstone");
        release(&path, breaker.as_str()).unwrap();
        std::thread::sleep(Duration::from_millis(30)); // past the dates' resolution
        acquire_as(&path, token.clone(), &with_lifetime(Duration::from_secs(60))).unwrap();
        refresh(&path, token.as_str()).unwrap();
        release(&path, token.as_str()).expect("the earlier instance's tombstone stopped the release");
        assert!(!fs::exists(&path).unwrap());
        // A tombstone stays in its place: ghosts of the earlier instance
        // may still be about.
        assert!(fs::exists(&tombstone).unwrap());
    }

    // A shared holder whose gate was lost withdraws the entry it published
    // in the same acquire, then retries with the same token. Where the
    // share could not date the entry (an ESTALE), it left a tombstone, and
    // the retry's release took it for a second release's claim ("not the
    // owner" to a live holder: `simulate --profile sshfs --mode slots
    // --seed 519`). The call's own clocks know the entry is young. Known
    // dates still decide: they move with the share's clock, as a ghost's
    // age does.
    #[test]
    fn a_withdrawal_of_what_this_call_published_leaves_no_tombstone() {
        let lifetime = Duration::from_secs(60);
        let just = Started::now();
        let long_ago = Started { monotonic: just.monotonic, wall: SystemTime::now() - lifetime };
        let dated = SystemTime::now();
        // Dates unknown: the clocks of the call that published it tell.
        assert!(!tombstone_after(None, Some(dated), lifetime, Some(just)), "a tombstone of what was just made");
        assert!(!tombstone_after(Some(dated), None, lifetime, Some(just)), "a tombstone of what was just made");
        assert!(tombstone_after(None, None, lifetime, Some(long_ago)), "the wall clock says half a lifetime");
        assert!(tombstone_after(None, None, lifetime, None), "a release that published nothing knows nothing");
        // Dates known: they decide, whatever the clocks say.
        let later = dated + lifetime / 2 + Duration::from_secs(1);
        assert!(tombstone_after(Some(later), Some(dated), lifetime, Some(just)), "old by the share's dates");
        assert!(!tombstone_after(Some(dated), Some(dated), lifetime, Some(long_ago)), "young by the dates");
        // Through a release: by dates alone, a lock file 40 s old of a 60 s
        // lifetime leaves one, also for the call that published it.
        let (_dir, path) = lock_in_temp_dir();
        let token = Token::generate("").unwrap();
        let started = Started::now();
        acquire_as(&path, token.clone(), &with_lifetime(lifetime)).unwrap();
        backdate(&path, Duration::from_secs(40));
        release_published(&path, &token, Some(started)).unwrap();
        assert!(fs::exists(format::claim_path(&path, &token)).unwrap(), "the dates were overruled");
    }

    // A directory at the lock path is refused, also one holding a marker
    // the way a claim does where there are no hard links: only a claim's
    // name is read through its directory (found in review).
    #[test]
    fn a_directory_at_the_lock_path_is_refused_even_with_a_marker_inside() {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("x.lock").to_str().unwrap().to_owned();
        fs::create_dir(&path).unwrap();
        let held = Held::new(Token::generate("").unwrap(), Some(Duration::from_secs(1)));
        fs::write(format!("{path}/marker"), held.encode()).unwrap();
        let options = Options { timeout: Some(Duration::ZERO), ..Options::default() };
        assert!(matches!(acquire(&path, &options), Err(LockError::InvalidPath(why)) if why.contains("is a directory")));
    }
}
