//! The checker: watches a simulated run as it happens and judges it.
//!
//! - **Exclusion**: a holder holds from its acquire's return to its
//!   release's start. While one holds and is *live* (its last sign of life,
//!   a staged marker or heartbeat it wrote, is less than a lifetime old, by
//!   true time; a lock without a lifetime is always live), nobody else may
//!   acquire. A holder whose lease lapsed (it was stalled, or its renewals
//!   failed) may be overtaken: that is the lease contract, and the fence
//!   tells the two apart.
//! - **Fences** strictly increase in the order holders acquire. (A holder
//!   whose lease lapsed before its acquire even returned, stalled past a
//!   lifetime after its read-back, is counted apart: its hold began before
//!   any successor's, and its lower fence is what tells them apart.)
//! - **Nothing live is deleted**: no client deletes or replaces a live
//!   holder's lock file, heartbeat or claim, other than the holder itself.
//! - **Liveness**: once faults stop (and the last stall has ended), while
//!   anyone waits and nobody holds, someone acquires within [`bound`].
//! - **No trap and no unexplained failure**: a guest that traps, or a call
//!   that fails on a run with no faults injected into it, is a bug.
//!
//! Two limitations the README names are told apart from violations rather
//! than hidden: a *claimant stalled* past half a lifetime while holding a
//! claim (its late delete may hit a successor), and *clock steps* adding up
//! to half a lifetime or more in the window a lock was judged in. Each is
//! counted; with the default faults (stalls and steps under a quarter of a
//! lifetime) neither can happen, so every overlap is a violation.

use std::collections::BTreeMap;
use std::time::Duration;

use super::world::{owner_of, uuid_in, World};

/// The lock's name in the share's root.
pub const LOCK: &str = "job.lock";

#[derive(Clone, Debug)]
struct Hold {
    token: String,
    uuid: String,
    fence: u64,
    since: u64,
    /// Its lock was deleted by a stalled claimant (a named limitation).
    hit_by_limitation: bool,
}

/// One finding: a violation or a limitation.
#[derive(Clone, Debug)]
pub struct Finding {
    pub at: u64,
    pub what: String,
}

pub struct Checker {
    lifetime: Option<u64>,
    holds: Vec<Option<Hold>>,
    waiting: Vec<Option<u64>>,
    /// Per client: stalls (start, length) and injected failures (times).
    stalls: Vec<Vec<(u64, u64)>>,
    injected: Vec<Vec<u64>>,
    /// Forward clock steps: (when, by how much).
    steps: Vec<(u64, u64)>,
    max_fence: Option<(u64, usize)>,
    pub violations: Vec<Finding>,
    pub limitations: BTreeMap<&'static str, u32>,
    /// (acquired at, client, waited).
    pub acquisitions: Vec<(u64, usize, u64)>,
    pub kills: u32,
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
    pub fn new(clients: usize, lifetime: Option<Duration>) -> Checker {
        Checker {
            lifetime: lifetime.map(|l| l.as_nanos() as u64),
            holds: vec![None; clients],
            waiting: vec![None; clients],
            stalls: vec![Vec::new(); clients],
            injected: vec![Vec::new(); clients],
            steps: Vec::new(),
            max_fence: None,
            violations: Vec::new(),
            limitations: BTreeMap::new(),
            acquisitions: Vec::new(),
            kills: 0,
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

    pub fn begin_acquire(&mut self, client: usize, world: &World) {
        self.waiting[client] = Some(world.now);
        self.update_idle(world.now);
    }

    pub fn acquired(&mut self, client: usize, token: &str, fence: u64, world: &World) {
        let now = world.now;
        let began = self.waiting[client].take().unwrap_or(now);
        let uuid = token.get(token.len().saturating_sub(36)..).unwrap_or("").to_owned();
        let hold = Hold { token: token.to_owned(), uuid, fence, since: now, hit_by_limitation: false };
        self.acquisitions.push((now, client, now - began));
        if !self.live(&hold, world) {
            // Stalled past its lifetime between its read-back and its return:
            // a holder whose lease lapsed, as one stalled later would be. Its
            // hold began at the read-back, before any successor's, so its
            // fence is lower than theirs: the resource refuses it.
            *self
                .limitations
                .entry("an acquire returned after its lease lapsed (a stall past a lifetime)")
                .or_default() += 1;
            self.max_fence = Some((fence.max(self.max_fence.map_or(0, |m| m.0)), client));
            self.holds[client] = Some(hold);
            self.update_idle(now);
            return;
        }
        for other in 0..self.holds.len() {
            let Some(hold) = self.holds[other].clone() else { continue };
            if other == client || !self.live(&hold, world) {
                continue;
            }
            if hold.hit_by_limitation {
                *self
                    .limitations
                    .entry("an overlap after a live holder's lock was deleted (one of the above)")
                    .or_default() += 1;
            } else if self.clock_explains(now) {
                *self.limitations.entry("forward clock steps: an overlap").or_default() += 1;
            } else {
                self.violation(
                    now,
                    format!(
                        "two holders: c{client} acquired (fence {fence}) while c{other} held since {} (fence {}, token {}), live",
                        secs(hold.since),
                        hold.fence,
                        hold.token
                    ),
                );
            }
        }
        if let Some((max, by)) = self.max_fence {
            if fence <= max {
                self.violation(
                    now,
                    format!("fence {fence} of c{client} is not above fence {max}, taken earlier by c{by}"),
                );
            }
        }
        self.max_fence = Some((fence.max(self.max_fence.map_or(0, |m| m.0)), client));
        self.holds[client] = Some(hold);
        self.update_idle(now);
    }

    /// The acquire ended without the lock (timeout, failure).
    pub fn gave_up(&mut self, client: usize, now: u64) {
        self.waiting[client] = None;
        self.update_idle(now);
    }

    /// The holder stops holding: its release starts, or it learnt it lost
    /// the lock. The lock itself may stay until the release ends.
    pub fn stops_holding(&mut self, client: usize) {
        self.holds[client] = None;
    }

    pub fn released(&mut self, now: u64) {
        self.update_idle(now);
    }

    pub fn killed(&mut self, client: usize, now: u64) {
        self.kills += 1;
        self.holds[client] = None;
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

    /// Judges what the share removed since the last look.
    pub fn removals(&mut self, world: &mut World) {
        for removal in std::mem::take(&mut world.removals) {
            let (uuid, what) = if removal.name == LOCK {
                match uuid_in(&removal.bytes) {
                    Some(uuid) => (uuid, "lock"),
                    None => continue,
                }
            } else {
                match owner_of(&removal.name) {
                    Some((uuid, kind)) if removal.name.starts_with(LOCK) => {
                        (uuid.to_owned(), if kind == "beat" { "heartbeat" } else { "claim" })
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
            // A claim named by a holder's instance is the holder's only when
            // it made it (its release); one a breaker made is the breaker's.
            if what == "claim" && removal.creator != holder {
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
                self.violation(
                    world.now,
                    format!(
                        "c{} deleted the {what} of live holder c{holder} (fence {}): {}",
                        removal.client, hold.fence, removal.name
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
