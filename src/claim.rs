//! Claims and stale locks: who may remove or replace a lock instance.
//!
//! A lock whose marker declares a lifetime (`stale-after`) may be broken by
//! a contender once it has gone that long without a refresh. Removing or
//! replacing such an instance, by anyone (the holder releasing or
//! refreshing, or a contender breaking it), first requires its *claim*: the
//! file `<PATH>.<UUID>.claim`, created exclusively, where `<UUID>` is the
//! instance's token's. Holding the claim, the party reads the lock file again
//! and acts only if it still holds that token. The argument that this keeps
//! the lock exclusive is in [`crate::protocol`].
//!
//! A claim is itself a small lease with the lock's lifetime; one left behind
//! by a crash is broken the same way, through its own claim, one level up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::files::{self, Created};
use crate::format::{self, Held, Marker, Token};
use crate::LockError;

/// How many claims-on-claims a breaker follows before it gives up for this
/// attempt (each level needs another party to have crashed mid-claim).
const MAX_DEPTH: usize = 3;

/// The claim file of the lock instance `token` at `path`.
pub fn claim_path(path: &str, token: &Token) -> String {
    format!("{path}.{}.claim", token.uuid())
}

/// The staging file for a marker of `token` about to be published at `path`.
pub fn staged_path(path: &str, token: &Token) -> String {
    format!("{path}.{}.new", token.uuid())
}

/// Runs `f` holding the claim on the instance `token` at `path`, then drops
/// the claim. `Ok(None)` when someone else holds it.
pub fn with_claim<T>(
    path: &str,
    token: &Token,
    lifetime: Duration,
    f: impl FnOnce() -> Result<T, LockError>,
) -> Result<Option<T>, LockError> {
    let claim = claim_path(path, token);
    let ours = Held::new(Token::generate("").map_err(LockError::Io)?, Some(lifetime));
    match files::publish(&claim, &staged_path(&claim, &ours.token), &ours.encode())? {
        Created::Exists => Ok(None),
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
    seen: HashMap<String, (Vec<u8>, Instant)>,
}

impl Watch {
    /// Records that `path` holds `bytes` now; returns its marker if it
    /// declares a lifetime and has held these same bytes for that long. (A
    /// refresh changes the bytes, so a live holder is never stale.)
    pub fn stale(&mut self, path: &str, bytes: &[u8]) -> Option<Held> {
        let now = Instant::now();
        let since = match self.seen.get(path) {
            Some((seen, since)) if seen == bytes => *since,
            _ => {
                self.seen.insert(path.to_owned(), (bytes.to_vec(), now));
                now
            }
        };
        match format::parse(bytes) {
            Marker::Uuidlock(held) if held.stale_after.is_some_and(|lifetime| now - since >= lifetime) => Some(held),
            _ => None,
        }
    }
}

/// Breaks the stale instance `stale` (whose bytes were `bytes`) at `path`,
/// if nobody else is already at it. Returns whether it was removed.
pub fn break_stale(path: &str, bytes: &[u8], stale: &Held, watch: &mut Watch) -> Result<bool, LockError> {
    break_at_depth(path, bytes, stale, watch, 0)
}

fn break_at_depth(path: &str, bytes: &[u8], stale: &Held, watch: &mut Watch, depth: usize) -> Result<bool, LockError> {
    let lifetime = stale.stale_after.unwrap_or(format::MAX_STALE_AFTER);
    let removed = with_claim(path, &stale.token, lifetime, || {
        // Under the claim the instance cannot change: act only if it is the
        // very one judged stale (same token, not refreshed since).
        if files::read(path)?.as_deref() == Some(bytes) {
            files::remove(path)
        } else {
            Ok(false)
        }
    })?;
    if let Some(removed) = removed {
        return Ok(removed);
    }
    // Someone holds the claim: a breaker at work, the holder releasing or
    // refreshing, or a claimant that died. Only the last goes stale.
    let claim = claim_path(path, &stale.token);
    if depth < MAX_DEPTH {
        if let Some(claim_bytes) = files::read(&claim)? {
            if let Some(claimant) = watch.stale(&claim, &claim_bytes) {
                break_at_depth(&claim, &claim_bytes, &claimant, watch, depth + 1)?;
            }
        }
    }
    Ok(false)
}
