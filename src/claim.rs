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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::files::{self, Content, Created};
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
#[derive(Clone, Debug)]
pub struct Observed {
    pub bytes: Vec<u8>,
    pub beat: Option<Vec<u8>>,
    /// When the file itself was written, by the filesystem's clock: tells
    /// apart two instances with the same bytes (an acquirer that lost its
    /// first instance publishes the same marker again).
    pub dated: Option<SystemTime>,
    /// The instance's last sign of life by the filesystem's clock: when the
    /// file or its heartbeat was last written, whichever is later. `None`
    /// where the filesystem does not date its files.
    pub written: Option<SystemTime>,
}

/// Two observations are of the same instance, unrenewed, when the bytes,
/// the file's date and the heartbeat are the same.
impl PartialEq for Observed {
    fn eq(&self, other: &Observed) -> bool {
        self.bytes == other.bytes && self.dated == other.dated && self.beat == other.beat
    }
}

impl Observed {
    /// Observes the instance at `lock` whose content was just read.
    pub fn new(lock: &str, content: Content) -> Result<Observed, LockError> {
        let (beat, written) = match content.marker() {
            Marker::Uuidlock(held) if held.stale_after.is_some() => {
                match files::read_dated(&beat_path(lock, &held.token))? {
                    Some(beat) => (Some(beat.bytes), content.modified.zip(beat.modified).map(|(a, b)| a.max(b))),
                    None => (None, content.modified),
                }
            }
            _ => (None, content.modified),
        };
        Ok(Observed { bytes: content.bytes, beat, dated: content.modified, written })
    }

    /// Observes `path` again: `None` when it is gone.
    fn again(lock: &str, path: &str) -> Result<Option<Observed>, LockError> {
        files::read_if_lifetime(path)?.map(|content| Observed::new(lock, content)).transpose()
    }
}

/// How long an instance last written at `written` has been silent at `now`,
/// both read off the filesystem's clock, less the clock's resolution so that
/// it is never overstated. `None` when `written` is after `now`: then the
/// dates cannot be trusted.
pub fn silence(now: SystemTime, written: SystemTime) -> Option<Duration> {
    let elapsed = now.duration_since(written).ok()?;
    // Whole-second dates on both (FAT counts in two seconds, some shares in
    // one) mean coarse dates; otherwise allow for a kernel tick.
    let whole = |time: SystemTime| time.duration_since(UNIX_EPOCH).is_ok_and(|since| since.subsec_nanos() == 0);
    let resolution = if whole(now) && whole(written) { COARSE_RESOLUTION } else { FINE_RESOLUTION };
    Some(elapsed.saturating_sub(resolution))
}

/// The resolution assumed for dates with a fractional part: a kernel tick.
const FINE_RESOLUTION: Duration = Duration::from_millis(10);

/// The resolution assumed for dates in whole seconds.
const COARSE_RESOLUTION: Duration = Duration::from_secs(2);

/// Runs `f` holding the claim on the instance with `token` of the lock at
/// `lock`, then drops the claim. `Ok(None)` when someone else holds it.
///
/// The claim on an instance with a `lifetime` is itself a small lease with
/// that lifetime (at least [`format::MIN_STALE_AFTER`]), so that a claimant
/// that died is broken in turn. Claims are
/// never renewed: a party finishes its step well within the lifetime, or its
/// claim may be broken (the lease contract). The claim on an instance
/// without a lifetime is an empty file: nobody breaks such an instance, so
/// only its releasers take the claim, and it is never broken either. Being
/// empty, it needs no hard links and no free space.
pub fn with_claim<T>(
    lock: &str,
    token: &Token,
    lifetime: Option<Duration>,
    f: impl FnOnce() -> Result<T, LockError>,
) -> Result<Option<T>, LockError> {
    let claim = claim_path(lock, token);
    let taken = match lifetime {
        Some(lifetime) => {
            // Never shorter than the shortest lifetime a lock may declare
            // now, also for an older marker that declares less.
            let lifetime = lifetime.max(format::MIN_STALE_AFTER);
            let ours = Held::new(Token::generate("").map_err(LockError::Io)?, Some(lifetime));
            let staged = staged_path(lock, &ours.token);
            files::publish(&claim, &staged, &ours.encode(), files::Fallback::Never)? == Created::Yes
        }
        None => files::create_empty(&claim)?,
    };
    if !taken {
        return Ok(None);
    }
    let result = f();
    // Plain removal: nobody breaks a live claim (see the lease contract in
    // crate::protocol).
    files::remove_within(&claim, files::busy_retry(lifetime))?;
    result.map(Some)
}

/// What a contender has seen of the files it waits on, to tell a stale lock
/// (or claim) from a live one.
#[derive(Default)]
pub struct Watch {
    seen: HashMap<String, (Observed, Instant)>,
    /// Whether a stale lock was broken: someone died, and may have left
    /// files behind ([`crate::sweep`]).
    pub broke: bool,
}

impl Watch {
    /// Records that `path` looks like `observed` now; returns its marker if
    /// it declares a lifetime and has been silent for that long: by the
    /// filesystem's clock (`now` against the instance's dates), or else for
    /// that long on this contender's own watch. (A renewal changes the
    /// heartbeat, so a live holder is never stale.)
    pub fn stale(&mut self, path: &str, observed: &Observed, now: Option<SystemTime>) -> Option<Held> {
        let Marker::Uuidlock(held) = format::parse(&observed.bytes) else { return None };
        let lifetime = held.stale_after?;
        let watched_since = match self.seen.get(path) {
            Some((seen, since)) if seen == observed => *since,
            _ => {
                let since = Instant::now();
                self.seen.insert(path.to_owned(), (observed.clone(), since));
                since
            }
        };
        // Two lifetimes by the filesystem's clock, so that a forward step of
        // that clock shorter than 5/3 of a lifetime cannot make a holder
        // renewing every third of it look dead.
        let silent = now.zip(observed.written).and_then(|(now, written)| silence(now, written));
        let dead = silent.is_some_and(|silent| silent >= lifetime.saturating_mul(2));
        (dead || watched_since.elapsed() >= lifetime).then_some(held)
    }
}

/// Breaks the stale lock `stale` (observed as `observed`) at `lock`, if
/// nobody else is at it, and removes its heartbeat. If its claim is held by
/// a claimant that died, that claim is broken instead (and so on up the
/// chain), and the lock itself on a later attempt. Returns whether the lock
/// was removed.
pub fn break_stale(
    lock: &str,
    observed: &Observed,
    stale: &Held,
    watch: &mut Watch,
    now: Option<SystemTime>,
) -> Result<bool, LockError> {
    let original = (observed.clone(), stale.clone());
    let (mut path, mut observed, mut stale) = (lock.to_owned(), observed.clone(), stale.clone());
    for _ in 0..MAX_CHAIN {
        let lifetime = stale.stale_after.unwrap_or(format::MAX_STALE_AFTER);
        let removed = with_claim(lock, &stale.token, Some(lifetime), || {
            // Under the claim nobody else removes the instance: act only if
            // it is the very one judged stale (same token, no renewal since).
            if Observed::again(lock, &path)?.as_ref() != Some(&observed) {
                return Ok(false);
            }
            let bound = files::busy_retry(Some(lifetime));
            let removed = files::remove_within(&path, bound)?;
            let _ = files::remove_within(&beat_path(lock, &stale.token), bound);
            Ok(removed)
        })?;
        match removed {
            Some(removed) if path == lock => return Ok(removed),
            // A dead claimant's claim broken: now the lock itself, at once.
            Some(true) => {
                (path, observed, stale) = (lock.to_owned(), original.0.clone(), original.1.clone());
                continue;
            }
            Some(false) => return Ok(false),
            None => {}
        }
        // Someone holds the claim: a breaker at work, the holder releasing
        // or refreshing, or a claimant that died. Only the last goes stale.
        let claim = claim_path(lock, &stale.token);
        let Some(claim_seen) = Observed::again(lock, &claim)? else { return Ok(false) };
        let Some(claimant) = watch.stale(&claim, &claim_seen, now) else { return Ok(false) };
        (path, observed, stale) = (claim, claim_seen, claimant);
    }
    Ok(false)
}
