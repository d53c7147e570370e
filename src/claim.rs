//! Claims, heartbeats and stale locks: who may remove a lock instance, and
//! when an instance is dead.
//!
//! A lock whose marker declares a lifetime (`stale-after`) may be broken by
//! a contender once it has gone that long without a renewal. Its holder
//! renews by rewriting its heartbeat file `<PATH>.<UUID>.beat` (never the
//! lock file), and a contender judges the instance stale when neither the
//! lock file nor that heartbeat has changed for the lifetime. Removing such
//! an instance, by anyone (the holder releasing, or a contender breaking
//! it), first requires its *claim*: the file `<PATH>.<UUID>.claim`, created
//! exclusively, where `<UUID>` is the instance's token's. Holding the claim,
//! the party reads the lock file again and acts only if it still holds that
//! token. The argument that this keeps the lock exclusive is in
//! [`crate::protocol`].
//!
//! A claim is itself a small lease with the lock's lifetime; one left behind
//! by a crash is broken the same way, through its own claim, one level up.
//! Every name stays flat beside the lock: the claim on an instance, whether
//! a lock or a claim, is named by that instance's token, so a chain of
//! crashed claimants of any length never makes a name longer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::files::{self, Created};
use crate::format::{self, beat_path, claim_path, staged_path, Held, Marker, Token};
use crate::LockError;

/// How many bytes the longest name derived from a lock file's name adds to
/// it: `.<UUID>.claim`.
pub const DERIVED_NAME_EXTRA: usize = 1 + 36 + ".claim".len();

/// A bound on how many dead claimants one attempt follows; each needs a
/// crash in the middle of a claim, so real chains are short. Past it the
/// contender simply keeps waiting.
const MAX_CHAIN: usize = 64;

/// What a contender sees of an instance: the file's bytes and, for a
/// uuidlock marker with a lifetime, its holder's heartbeat (`None` before the
/// first renewal). An instance whose observation stays the same for its
/// lifetime is dead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub bytes: Vec<u8>,
    pub beat: Option<Vec<u8>>,
}

impl Observed {
    /// Observes the instance at `path` whose bytes were just read.
    pub fn new(lock: &str, bytes: Vec<u8>) -> Result<Observed, LockError> {
        let beat = match format::parse(&bytes) {
            Marker::Uuidlock(held) if held.stale_after.is_some() => files::read(&beat_path(lock, &held.token))?,
            _ => None,
        };
        Ok(Observed { bytes, beat })
    }

    /// Observes `path` again: `None` when it is gone.
    fn again(lock: &str, path: &str) -> Result<Option<Observed>, LockError> {
        files::read(path)?.map(|bytes| Observed::new(lock, bytes)).transpose()
    }
}

/// Runs `f` holding the claim on the instance with `token` of the lock at
/// `lock`, then drops the claim. `Ok(None)` when someone else holds it.
/// Claims are never renewed: a party finishes its step well within the
/// lifetime, or its claim may be broken (the lease contract).
pub fn with_claim<T>(
    lock: &str,
    token: &Token,
    lifetime: Duration,
    f: impl FnOnce() -> Result<T, LockError>,
) -> Result<Option<T>, LockError> {
    let claim = claim_path(lock, token);
    let ours = Held::new(Token::generate("").map_err(LockError::Io)?, Some(lifetime));
    match files::publish(&claim, &staged_path(lock, &ours.token), &ours.encode(), files::Fallback::Never)? {
        Created::Exists(_) => Ok(None),
        Created::Yes => {
            let result = f();
            // Plain removal: nobody breaks a live claim (see the lease
            // contract in crate::protocol).
            files::remove(&claim)?;
            result.map(Some)
        }
    }
}

/// What a contender has seen of the files it waits on, to tell a stale lock
/// (or claim) from a live one without trusting anyone's clock but its own.
#[derive(Default)]
pub struct Watch {
    seen: HashMap<String, (Observed, Instant)>,
}

impl Watch {
    /// Records that `path` looks like `observed` now; returns its marker if
    /// it declares a lifetime and has looked the same for that long. (A
    /// renewal changes the heartbeat, so a live holder is never stale.)
    pub fn stale(&mut self, path: &str, observed: &Observed) -> Option<Held> {
        let now = Instant::now();
        let since = match self.seen.get(path) {
            Some((seen, since)) if seen == observed => *since,
            _ => {
                self.seen.insert(path.to_owned(), (observed.clone(), now));
                now
            }
        };
        match format::parse(&observed.bytes) {
            Marker::Uuidlock(held) if held.stale_after.is_some_and(|lifetime| now - since >= lifetime) => Some(held),
            _ => None,
        }
    }
}

/// Breaks the stale lock `stale` (observed as `observed`) at `lock`, if
/// nobody else is at it, and removes its heartbeat. If its claim is held by
/// a claimant that died, that claim is broken instead (and so on up the
/// chain), and the lock itself on a later attempt. Returns whether the lock
/// was removed.
pub fn break_stale(lock: &str, observed: &Observed, stale: &Held, watch: &mut Watch) -> Result<bool, LockError> {
    let (mut path, mut observed, mut stale) = (lock.to_owned(), observed.clone(), stale.clone());
    for _ in 0..MAX_CHAIN {
        let lifetime = stale.stale_after.unwrap_or(format::MAX_STALE_AFTER);
        let removed = with_claim(lock, &stale.token, lifetime, || {
            // Under the claim nobody else removes the instance: act only if
            // it is the very one judged stale (same token, no renewal since).
            if Observed::again(lock, &path)?.as_ref() != Some(&observed) {
                return Ok(false);
            }
            let removed = files::remove(&path)?;
            let _ = files::remove(&beat_path(lock, &stale.token));
            Ok(removed)
        })?;
        if let Some(removed) = removed {
            return Ok(removed && path == lock);
        }
        // Someone holds the claim: a breaker at work, the holder releasing
        // or refreshing, or a claimant that died. Only the last goes stale.
        let claim = claim_path(lock, &stale.token);
        let Some(claim_seen) = Observed::again(lock, &claim)? else { return Ok(false) };
        let Some(claimant) = watch.stale(&claim, &claim_seen) else { return Ok(false) };
        (path, observed, stale) = (claim, claim_seen, claimant);
    }
    Ok(false)
}
