//! The checker: watches a simulated run as it happens and judges it.
//!
//! - **Exclusion**: a holder holds from its acquire's return to its
//!   release's start, as a *writer* (an exclusive acquire), a *reader*
//!   (`--shared`) or a semaphore's *slot holder* (`--slots N`). While one
//!   holds and is *live* (its last sign of life, a staged marker or
//!   heartbeat it wrote, is less than a lifetime old, by true time; a lock
//!   without a lifetime is always live), nobody may acquire beside a live
//!   writer, and a writer may acquire beside no live holder of any mode.
//!   Slot holders: every slot is below N, no two live ones share a slot,
//!   and never more than N are live at once. A holder whose lease lapsed
//!   (it was stalled, or its renewals failed) may be overtaken: that is the
//!   lease contract, and the fence tells the two apart.
//! - **Fences**: a writer's is above every fence taken by an earlier holder
//!   (so writers' fences strictly increase), a reader's or a slot holder's
//!   above every earlier writer's, in the order holders acquire. (Readers'
//!   among themselves need not rise: a reader's fence is its gate's, and
//!   another can pass it between the gate and the return.) A holder whose
//!   lease lapsed before its acquire even returned, stalled past a
//!   lifetime after its read-back, is counted apart: its hold began before
//!   any successor's, and its lower fence is what tells them apart.
//! - **Nothing live is deleted**: no client deletes or replaces a live
//!   holder's lock file, shared entry (`job.lock.shared/K`), or the
//!   heartbeat or claim of either, other than the holder itself.
//! - **No false loss**: a refresh or release that answers "not the owner"
//!   while its holder is live and its lock file or entry holds its token,
//!   with no fault injected since the call began.
//! - **Liveness**: once faults stop (and the last stall has ended), while
//!   anyone waits and nobody holds, someone acquires within [`bound`].
//! - **No trap and no unexplained failure**: a guest that traps, or a call
//!   that fails on a run with no faults injected into it, is a bug.
//!
//! Two limitations the README names are told apart from violations rather
//! than hidden: a *claimant stalled* past half a lifetime while holding a
//! claim (its late delete may hit a successor, and while it holds the
//! claim the instance's holder is told "not the owner" at its release; so
//! it is while a breaker killed holding the claim on a holder whose lease
//! lapsed still has it there), and *clock steps* adding up
//! to half a lifetime or more in the window a lock was judged in. Each is
//! counted; with the default faults (stalls and steps under a quarter of a
//! lifetime) neither can happen, so every overlap is a violation.

use std::collections::BTreeMap;
use std::time::Duration;

use super::world::{owner_of, uuid_in, World};

/// The lock's name in the share's root.
pub const LOCK: &str = "job.lock";
/// The shared holders' directory (`src/shared.rs`), in the share's root.
pub const SHARED_DIR: &str = "job.lock.shared";

/// How a holder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An exclusive acquire.
    Writer,
    /// `acquire --shared`.
    Reader,
    /// `acquire --slots N`, in this slot.
    Slot(u32),
}

impl Role {
    pub fn index(self) -> usize {
        match self {
            Role::Writer => 0,
            Role::Reader => 1,
            Role::Slot(_) => 2,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Writer => write!(f, "writer"),
            Role::Reader => write!(f, "reader"),
            Role::Slot(slot) => write!(f, "holder of slot {slot}"),
        }
    }
}

#[derive(Clone, Debug)]
struct Hold {
    token: String,
    uuid: String,
    fence: u64,
    since: u64,
    role: Role,
    /// A reader's or a slot holder's entry, by index, when known: the slot,
    /// or the one entry that holds its token (the renewed one, if an
    /// earlier attempt of the same acquire left another).
    entry: Option<u32>,
    /// Its lock was deleted by a stalled claimant (a named limitation).
    hit_by_limitation: bool,
}

/// One acquisition, as the checker saw it return.
#[derive(Clone, Copy, Debug)]
pub struct Acquisition {
    pub client: usize,
    /// From the acquire's start (this attempt's) to its return.
    pub waited: u64,
    pub role: Role,
}

/// One finding: a violation or a limitation.
#[derive(Clone, Debug)]
pub struct Finding {
    pub at: u64,
    pub what: String,
}

pub struct Checker {
    lifetime: Option<u64>,
    /// The semaphore's slots, when slot holders take part.
    slots: Option<u32>,
    holds: Vec<Option<Hold>>,
    /// What each client held last, once it stopped (for its release).
    left: Vec<Option<Hold>>,
    waiting: Vec<Option<u64>>,
    /// The mode each waiting client asked for (meaningful while waiting).
    asked: Vec<Role>,
    /// Per client: stalls (start, length) and injected failures (times).
    stalls: Vec<Vec<(u64, u64)>>,
    /// The claims that killed clients held when they died.
    dead_claims: Vec<String>,
    injected: Vec<Vec<u64>>,
    /// Forward clock steps: (when, by how much).
    steps: Vec<(u64, u64)>,
    max_fence: Option<(u64, usize)>,
    /// The largest fence a writer acquired with, and which client.
    max_writer_fence: Option<(u64, usize)>,
    pub violations: Vec<Finding>,
    pub limitations: BTreeMap<&'static str, u32>,
    pub acquisitions: Vec<Acquisition>,
    /// Acquires that timed out, by the mode asked for (writer, reader, slot).
    pub timeouts: [u32; 3],
    /// The most live holders at once (at an acquisition).
    pub most_at_once: usize,
    pub kills: u32,
    /// Kills that landed between a create of the lock file and its write
    /// (where there are no hard links): each leaves an empty lock file.
    pub kills_before_writing: u32,
    pub injected_total: u32,
    pub stalls_total: u32,
    pub clock_steps: u32,
    pub failures: u32,
    /// Renewals that failed with an error (not "not the owner").
    pub renewals_failed: u32,
    idle_since: Option<u64>,
    /// Faults stop at `quiet`; liveness is checked from `settle`.
    pub settle: u64,
    /// The liveness bound without kills, and what each kill adds.
    pub bound_base: u64,
    pub bound_per_kill: u64,
    pub longest_idle: u64,
}

/// The liveness bound, in nanoseconds, for a run with `kills` clients
/// killed before the quiet point:
///
/// - a dead holder's lock is broken by the head of the line once it has
///   watched it unchanged for a lifetime (`L`), which it starts at its next
///   poll (a retry interval `R`); the dates may let it go sooner, never later;
/// - every waiter killed in line delays those behind it until its entry is
///   judged dead: [`uuidlock::queue::dead_after`] plus a refresh;
/// - the hand-off itself: the head learns of a release within `R`, then
///   publishes and verifies (the verification delay `V`);
/// - what the share's caches hide (attributes, names) delays each look by
///   at most their timeout; twice over for the watch's two looks.
///
/// Returns the bound without kills, and what each kill adds.
pub fn bound(lifetime: Duration, retry: Duration, delay: Duration, caches: Duration) -> (Duration, Duration) {
    let skip = uuidlock::queue::dead_after(retry, delay) + uuidlock::queue::REFRESH + retry;
    (lifetime + retry * 3 + delay * 2 + skip + caches * 2 + Duration::from_millis(500), skip)
}

impl Checker {
    pub fn new(clients: usize, lifetime: Option<Duration>, slots: Option<u32>) -> Checker {
        Checker {
            lifetime: lifetime.map(|l| l.as_nanos() as u64),
            slots,
            holds: vec![None; clients],
            left: vec![None; clients],
            waiting: vec![None; clients],
            asked: vec![Role::Writer; clients],
            stalls: vec![Vec::new(); clients],
            dead_claims: Vec::new(),
            injected: vec![Vec::new(); clients],
            steps: Vec::new(),
            max_fence: None,
            max_writer_fence: None,
            violations: Vec::new(),
            limitations: BTreeMap::new(),
            acquisitions: Vec::new(),
            timeouts: [0; 3],
            most_at_once: 0,
            kills: 0,
            kills_before_writing: 0,
            injected_total: 0,
            stalls_total: 0,
            clock_steps: 0,
            failures: 0,
            renewals_failed: 0,
            idle_since: None,
            settle: u64::MAX,
            bound_base: u64::MAX / 4,
            bound_per_kill: 0,
            longest_idle: 0,
        }
    }

    fn violation(&mut self, at: u64, what: String) {
        self.violations.push(Finding { at, what });
    }

    fn live(&self, hold: &Hold, world: &World) -> bool {
        match self.lifetime {
            None => true,
            Some(lifetime) => {
                let sign = world.signs.get(&hold.uuid).copied().unwrap_or(hold.since);
                world.now <= sign + lifetime
            }
        }
    }

    /// Forward clock steps adding up to half a lifetime within the last
    /// three lifetimes: the named limitation.
    fn clock_explains(&self, now: u64) -> bool {
        let Some(lifetime) = self.lifetime else { return false };
        let from = now.saturating_sub(3 * lifetime);
        let sum: u64 = self.steps.iter().filter(|(at, _)| *at >= from).map(|(_, by)| by).sum();
        sum >= lifetime / 2
    }

    /// Whether `client` holds a claim after a stall of half a lifetime or
    /// more that ended within the last two lifetimes.
    fn stalled_claimant(&self, client: usize, world: &World) -> bool {
        let Some(lifetime) = self.lifetime else { return false };
        !world.claims[client].is_empty()
            && self.stalls[client]
                .iter()
                .any(|&(start, len)| len >= lifetime / 2 && start + len + 2 * lifetime >= world.now)
    }

    pub fn stalled(&mut self, client: usize, at: u64, len: u64) {
        self.stalls[client].push((at, len));
        self.stalls_total += 1;
    }

    pub fn injected(&mut self, client: usize, at: u64) {
        self.injected[client].push(at);
        self.injected_total += 1;
    }

    pub fn stepped(&mut self, at: u64, forward_by: u64) {
        self.clock_steps += 1;
        if forward_by > 0 {
            self.steps.push((at, forward_by));
        }
    }

    /// Whether a fault touched `client` since `since`: an error injected
    /// into one of its calls, or a clock step.
    pub fn faulted_since(&self, client: usize, since: u64) -> bool {
        self.injected[client].iter().any(|&t| t >= since) || self.clock_steps > 0
    }

    /// `client` starts to acquire, as `role` (a slot holder's slot is not
    /// known yet: any).
    pub fn begin_acquire(&mut self, client: usize, role: Role, world: &World) {
        self.waiting[client] = Some(world.now);
        self.asked[client] = role;
        self.update_idle(world.now);
    }

    /// Raises the fences seen so far with `fence`, acquired by `client` as
    /// `role`.
    fn note_fence(&mut self, client: usize, fence: u64, role: Role) {
        self.max_fence = Some((fence.max(self.max_fence.map_or(0, |m| m.0)), client));
        if role == Role::Writer {
            self.max_writer_fence = Some((fence.max(self.max_writer_fence.map_or(0, |m| m.0)), client));
        }
    }

    /// An overlap of live holders, unless a named limitation explains it.
    fn overlap(&mut self, now: u64, other: &Hold, what: String) {
        if other.hit_by_limitation {
            *self
                .limitations
                .entry("an overlap after a live holder's lock was deleted (one of the above)")
                .or_default() += 1;
        } else if self.clock_explains(now) {
            *self.limitations.entry("forward clock steps: an overlap").or_default() += 1;
        } else {
            self.violation(now, what);
        }
    }

    pub fn acquired(&mut self, client: usize, token: &str, fence: u64, role: Role, world: &World) {
        let now = world.now;
        let began = self.waiting[client].take().unwrap_or(now);
        let uuid = token.get(token.len().saturating_sub(36)..).unwrap_or("").to_owned();
        let entry = match role {
            Role::Writer => None,
            Role::Slot(slot) => Some(slot),
            Role::Reader => {
                let found = world.entries_holding(LOCK, &uuid);
                match found.as_slice() {
                    [(index, _)] => Some(*index),
                    _ => found.iter().find(|(_, beat)| *beat).map(|(index, _)| *index),
                }
            }
        };
        let hold = Hold { token: token.to_owned(), uuid, fence, since: now, role, entry, hit_by_limitation: false };
        self.acquisitions.push(Acquisition { client, waited: now - began, role });
        if let (Role::Slot(slot), Some(n)) = (role, self.slots) {
            if slot >= n {
                self.violation(
                    now,
                    format!("c{client} acquired slot {slot} (fence {fence}) of a semaphore of {n} slots"),
                );
            }
        }
        if !self.live(&hold, world) {
            // Stalled past its lifetime between its read-back and its return:
            // a holder whose lease lapsed, as one stalled later would be. Its
            // hold began at the read-back, before any successor's, so its
            // fence is lower than theirs: the resource refuses it.
            *self
                .limitations
                .entry("an acquire returned after its lease lapsed (a stall past a lifetime)")
                .or_default() += 1;
            self.note_fence(client, fence, role);
            self.holds[client] = Some(hold);
            self.update_idle(now);
            return;
        }
        let mut at_once = 1;
        // Live slot holders, this one included, not explained by a limitation.
        let mut slot_holders = usize::from(matches!(role, Role::Slot(_)));
        for other in 0..self.holds.len() {
            let Some(hold) = self.holds[other].clone() else { continue };
            if other == client || !self.live(&hold, world) {
                continue;
            }
            at_once += 1;
            if matches!(hold.role, Role::Slot(_)) && !hold.hit_by_limitation {
                slot_holders += 1;
            }
            let what = match (role, hold.role) {
                (Role::Writer, Role::Writer) => format!(
                    "two holders: c{client} acquired (fence {fence}) while c{other} held since {} (fence {}, token {}), live",
                    secs(hold.since),
                    hold.fence,
                    hold.token
                ),
                (Role::Writer, _) | (_, Role::Writer) => format!(
                    "a writer beside another holder: c{client} acquired as {role} (fence {fence}) while c{other} held as {} since {} (fence {}, token {}), live",
                    hold.role,
                    secs(hold.since),
                    hold.fence,
                    hold.token
                ),
                (Role::Slot(a), Role::Slot(b)) if a == b => format!(
                    "two holders of slot {a}: c{client} acquired it (fence {fence}) while c{other} held it since {} (fence {}, token {}), live",
                    secs(hold.since),
                    hold.fence,
                    hold.token
                ),
                _ => continue,
            };
            self.overlap(now, &hold, what);
        }
        self.most_at_once = self.most_at_once.max(at_once);
        if let (Role::Slot(_), Some(n)) = (role, self.slots) {
            if slot_holders > n as usize && !self.clock_explains(now) {
                self.violation(
                    now,
                    format!("{slot_holders} live slot holders of a semaphore of {n} slots, as c{client} acquired (fence {fence})"),
                );
            }
        }
        match (role, if role == Role::Writer { self.max_fence } else { self.max_writer_fence }) {
            (Role::Writer, Some((max, by))) if fence <= max => self.violation(
                now,
                format!("fence {fence} of c{client} is not above fence {max}, taken earlier by c{by}"),
            ),
            (_, Some((max, by))) if fence <= max => self.violation(
                now,
                format!("fence {fence} of c{client}, {role}, is not above fence {max} of writer c{by}, who acquired earlier"),
            ),
            _ => {}
        }
        self.note_fence(client, fence, role);
        self.holds[client] = Some(hold);
        self.update_idle(now);
    }

    /// The acquire ended without the lock (timeout, failure).
    pub fn gave_up(&mut self, client: usize, now: u64) {
        self.waiting[client] = None;
        self.update_idle(now);
    }

    /// The acquire timed out (after [`Checker::gave_up`]).
    pub fn timed_out(&mut self, client: usize) {
        self.timeouts[self.asked[client].index()] += 1;
    }

    /// The holder stops holding: its release starts, or it learnt it lost
    /// the lock. The lock itself may stay until the release ends.
    pub fn stops_holding(&mut self, client: usize) {
        self.left[client] = self.holds[client].take();
    }

    pub fn released(&mut self, now: u64) {
        self.update_idle(now);
    }

    /// A client was killed between creating the lock file and writing it,
    /// where there are no hard links. With a lifetime the empty file is
    /// broken as a dead holder's lock is (point 12 of the protocol), and
    /// liveness is checked as for any kill. Without one nothing breaks it,
    /// so the lock is wedged for good (the named limitation), and liveness
    /// is no longer checked.
    pub fn killed_before_writing(&mut self, now: u64) {
        self.kills_before_writing += 1;
        if self.lifetime.is_some() {
            return;
        }
        *self.limitations.entry("killed between creating the lock file and writing it: wedged").or_default() += 1;
        if let Some(since) = self.idle_since {
            self.close_gap(since, now);
            self.idle_since = Some(now);
        }
        self.settle = u64::MAX;
    }

    /// `client` was killed, holding `claims`.
    pub fn killed(&mut self, client: usize, now: u64, claims: Vec<String>) {
        self.kills += 1;
        self.dead_claims.extend(claims);
        self.holds[client] = None;
        self.left[client] = None;
        self.waiting[client] = None;
        self.update_idle(now);
    }

    pub fn failed(&mut self, client: usize, since: u64, what: String, world: &World) {
        self.failures += 1;
        if !self.faulted_since(client, since) {
            self.violation(world.now, format!("c{client}: {what}, with no fault injected"));
        }
    }

    pub fn trapped(&mut self, client: usize, now: u64, what: String) {
        self.violation(now, format!("c{client}: the guest trapped: {what}"));
    }

    /// `client`'s refresh or release (`command`, from `since`) answered
    /// "not the owner": a live holder whose lock file or entry still holds
    /// its token was told it lost what it holds (it stops, and what it left
    /// blocks the others until it is broken as dead). With no fault
    /// injected since, a violation.
    pub fn told_lost(&mut self, client: usize, command: &str, since: u64, world: &World) {
        let Some(hold) = self.holds[client].clone().or_else(|| self.left[client].clone()) else { return };
        // An error injected into the command may be read as a stale handle
        // (the lock replaced by another): a failure under a fault.
        if !self.live(&hold, world) || hold.hit_by_limitation || self.faulted_since(client, since) {
            return;
        }
        let path = match hold.role {
            Role::Writer => world.lock_holds(LOCK, &hold.uuid).then(|| LOCK.to_owned()),
            _ => world
                .entries_holding(LOCK, &hold.uuid)
                .into_iter()
                .find(|&(index, _)| hold.entry.is_none_or(|entry| entry == index))
                .map(|(index, _)| format!("{SHARED_DIR}/{index}")),
        };
        // A claimant stalled past half a lifetime (a breaker that judged
        // this instance while its holder stalled, itself stopped since)
        // still holds the claim on it: the holder's release waits on that
        // claim, and never breaks a party's claim (it may be a second
        // release of its own), so it answers "not the owner". The named
        // limitation of stalled claimants, as their late deletes are.
        let stalled_claim = (0..world.claims.len()).any(|other| {
            other != client
                && world.claims[other].iter().any(|name| name.ends_with(".claim") && name.contains(hold.uuid.as_str()))
                && self.stalled_claimant(other, world)
        });
        if path.is_some() && stalled_claim {
            let what = "a stalled claimant's claim: a live holder told \"not the owner\"";
            *self.limitations.entry(what).or_default() += 1;
            return;
        }
        // A breaker that judged this instance dead, killed holding the
        // claim on it, which stays until a contender breaks it as a dead
        // claimant's: the holder's release waits on it as on a stalled
        // one's. Only where that very claim was taken while the holder's
        // lease had lapsed (a silence past a lifetime): the lease
        // contract's case. A claim taken on a live holder is a violation.
        let dead_claim = path.as_ref().is_some_and(|path| {
            let claim = format!("{path}.{}.claim", hold.uuid);
            let name = claim.rsplit('/').next().unwrap_or(&claim);
            let lapses = world.lapses.get(&hold.uuid).map_or(&[][..], Vec::as_slice);
            self.dead_claims.iter().any(|dead| dead == name)
                && world
                    .claim_made(&claim)
                    .is_some_and(|made| lapses.iter().any(|&(from, to)| from <= made && made <= to))
        });
        if dead_claim {
            let what = "a dead claimant's claim on a holder whose lease lapsed: told \"not the owner\"";
            *self.limitations.entry(what).or_default() += 1;
            return;
        }
        if let Some(path) = path {
            self.violation(
                world.now,
                format!(
                    "c{client}, {} (fence {}), live: {command} answered \"not the owner\", but {path} holds its token",
                    hold.role, hold.fence
                ),
            );
        }
    }

    /// A command succeeded but printed what its contract does not allow.
    pub fn misspoke(&mut self, client: usize, now: u64, what: String) {
        self.violation(now, format!("c{client}: {what}"));
    }

    /// Judges what the share removed since the last look.
    pub fn removals(&mut self, world: &mut World) {
        for removal in std::mem::take(&mut world.removals) {
            let in_root = removal.dir.is_empty();
            let in_shared = removal.dir == SHARED_DIR;
            let entry = in_shared && !removal.name.is_empty() && removal.name.bytes().all(|b| b.is_ascii_digit());
            let (uuid, what) = if (in_root && removal.name == LOCK) || entry {
                match uuid_in(&removal.bytes) {
                    Some(uuid) => (uuid, if entry { "shared entry" } else { "lock" }),
                    None => continue,
                }
            } else {
                match owner_of(&removal.name) {
                    Some((uuid, kind)) if (in_root && removal.name.starts_with(LOCK)) || in_shared => {
                        let what = match (in_shared, kind == "beat") {
                            (false, true) => "heartbeat",
                            (false, false) => "claim",
                            (true, true) => "shared entry's heartbeat",
                            (true, false) => "shared entry's claim",
                        };
                        (uuid.to_owned(), what)
                    }
                    _ => continue,
                }
            };
            let Some(holder) = self.holds.iter().position(|h| h.as_ref().is_some_and(|h| h.uuid == uuid)) else {
                continue;
            };
            let hold = self.holds[holder].clone().expect("found");
            if holder == removal.client || !self.live(&hold, world) {
                continue;
            }
            // A reader or a slot holder holds its entry; the lock file was
            // only its gate, released (a tombstone claim perhaps left)
            // before it held. A writer holds the lock file, nothing shared.
            if in_shared == (hold.role == Role::Writer) {
                continue;
            }
            // An entry (or its heartbeat, its claim) that an earlier attempt
            // of the same acquire left at another index, with the same
            // token, is not the one it holds: breaking it harms nobody.
            let index = removal.name.split('.').next().and_then(|i| i.parse::<u32>().ok());
            if in_shared && hold.entry.is_some() && index != hold.entry {
                continue;
            }
            // A claim named by a holder's instance is the holder's only when
            // it made it (its release); one a breaker made is the breaker's.
            if what.ends_with("claim") && removal.creator != holder {
                continue;
            }
            if self.stalled_claimant(removal.client, world) {
                *self.limitations.entry("a stalled claimant deleted a live holder's file").or_default() += 1;
                if let Some(h) = self.holds[holder].as_mut() {
                    h.hit_by_limitation = true;
                }
            } else if self.clock_explains(world.now) {
                *self.limitations.entry("forward clock steps: a live holder's file deleted").or_default() += 1;
                if let Some(h) = self.holds[holder].as_mut() {
                    h.hit_by_limitation = true;
                }
            } else {
                let name = if in_root { removal.name.clone() } else { format!("{}/{}", removal.dir, removal.name) };
                let role = if hold.role == Role::Writer { String::new() } else { format!("{}, ", hold.role) };
                self.violation(
                    world.now,
                    format!(
                        "c{} deleted the {what} of live holder c{holder} ({role}fence {}): {name}",
                        removal.client, hold.fence
                    ),
                );
            }
        }
    }

    fn update_idle(&mut self, now: u64) {
        let waiting = self.waiting.iter().any(Option::is_some);
        let holding = self.holds.iter().any(Option::is_some);
        let idle = waiting && !holding;
        match (idle, self.idle_since) {
            (true, None) => self.idle_since = Some(now),
            (false, Some(since)) => {
                self.idle_since = None;
                self.close_gap(since, now);
            }
            _ => {}
        }
    }

    pub fn bound(&self) -> u64 {
        self.bound_base + self.bound_per_kill * u64::from(self.kills)
    }

    fn close_gap(&mut self, since: u64, until: u64) {
        let from = since.max(self.settle);
        if until <= from {
            return;
        }
        let gap = until - from;
        self.longest_idle = self.longest_idle.max(gap);
        if gap > self.bound() {
            self.violation(
                until,
                format!(
                    "liveness: from {} s to {} s somebody waited and nobody held, past the bound of {} s",
                    secs(from),
                    secs(until),
                    secs(self.bound())
                ),
            );
        }
    }

    /// The run ended at `now`.
    pub fn finish(&mut self, now: u64) {
        if let Some(since) = self.idle_since.take() {
            self.close_gap(since, now);
        }
    }
}

/// Nanoseconds as seconds, for messages.
pub fn secs(nanos: u64) -> String {
    format!("{:.6}", nanos as f64 / 1e9)
}
