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
//! Where the filesystem has no hard links (smbnetfs), a claim is a directory
//! holding its marker, renamed into place whole and renamed aside whole to
//! be removed ([`crate::files::publish`]; point 11 of [`crate::protocol`]):
//! everything here reads and removes it as it would a file.
//! Every name stays flat beside the lock: the claim on an instance, whether
//! a lock or a claim, is named by that instance's token, so a chain of
//! crashed claimants of any length never makes a name longer.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::files::{self, Content, Created, Kind};
use crate::format::{self, beat_path, claim_path, staged_path, Held, Marker, Token};
use crate::{planted::planted, LockError};

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
    /// What kind of file it is: a claim that is not a regular file (or not
    /// readable) is judged apart ([`claimant`]).
    pub kind: Kind,
}

/// Two observations are of the same instance, unrenewed, when the bytes,
/// the file's date and the heartbeat are the same.
impl PartialEq for Observed {
    fn eq(&self, other: &Observed) -> bool {
        self.bytes == other.bytes && self.dated == other.dated && self.beat == other.beat && self.kind == other.kind
    }
}

impl Observed {
    /// Observes the instance at `lock` whose content was just read.
    pub fn new(lock: &str, content: Content) -> Result<Observed, LockError> {
        let (beat, written) = match content.marker() {
            Marker::Uuidlock(held) if held.stale_after.is_some() => {
                // Beside the lock: a FIFO or a link planted there is read as
                // what it is (never opened), and counts as a heartbeat that
                // does not change.
                match files::read_beside(&beat_path(lock, &held.token))? {
                    Some(beat) => (Some(beat.bytes), content.modified.zip(beat.modified).map(|(a, b)| a.max(b))),
                    None => (None, content.modified),
                }
            }
            _ => (None, content.modified),
        };
        Ok(Observed { bytes: content.bytes, beat, dated: content.modified, kind: content.kind, written })
    }

    /// Observes the lock at `lock` again: `None` when it is gone.
    fn again(lock: &str) -> Result<Option<Observed>, LockError> {
        files::read_if_lifetime(lock)?.map(|content| Observed::new(lock, content)).transpose()
    }

    /// Observes the claim (or claim on a claim) at `claim`, beside `lock`:
    /// `None` when it is gone. Whatever is there is read as what it is.
    fn claim(lock: &str, claim: &str) -> Result<Option<Observed>, LockError> {
        files::read_claim(claim)?.map(|content| Observed::new(lock, content)).transpose()
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
    f: impl FnOnce() -> Result<(T, Afterwards), LockError>,
) -> Result<Option<T>, LockError> {
    let claim = claim_path(lock, token);
    let taken = match lifetime {
        Some(lifetime) => {
            // Never shorter than the shortest lifetime a lock may declare
            // now, also for an older marker that declares less.
            let lifetime = lifetime.max(format::MIN_STALE_AFTER);
            let ours = Held::new(Token::generate("").map_err(LockError::Io)?, Some(lifetime));
            let staged = staged_path(lock, &ours.token);
            files::publish(&claim, &staged, &ours.encode(), files::Fallback::Directory)? == Created::Yes
        }
        None => files::create_empty(&claim)?,
    };
    if !taken {
        return Ok(None);
    }
    let result = f();
    if let Ok((_, Afterwards::Tombstone)) = &result {
        return result.map(|(done, _)| Some(done));
    }
    // Plain removal: nobody breaks a live claim (see the lease contract in
    // crate::protocol).
    files::remove_within(&claim, files::busy_retry(lifetime))?;
    result.map(|(done, _)| Some(done))
}

/// What becomes of a claim once the step taken under it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Afterwards {
    /// Removed: the usual end of a step.
    Remove,
    /// Left in place as a *tombstone* of the instance just removed, which
    /// some client of a caching share may still see (a ghost) and judge
    /// dead. Nobody can take the claim on that instance, and so remove
    /// whatever is at its name now, until the tombstone is older than its
    /// lifetime: by then every ghost is gone, if the share's ghosts last
    /// less than a lifetime (see [`crate::protocol`], point 10). The sweep
    /// removes it after that ([`crate::sweep`]), or it is broken as a dead
    /// claimant's claim.
    Tombstone,
}

/// As [`with_claim`], for the holder of the instance (releasing it): a
/// claim that no uuidlock process could have written ([`Claimant::Junk`]:
/// planted by someone who can write the directory) is broken first, so that
/// it cannot stop a live holder from releasing. A claim a uuidlock party
/// holds is never broken here: it may be a second release of the same
/// token, and breaking it would let both delete (point 4 of
/// [`crate::protocol`]).
///
/// A uuidlock claim dated before the instance itself (`instance_dated`, the
/// lock file's date) is no claim on it: it is the tombstone of an earlier
/// instance with the same token (an acquirer whose first instance was
/// broken while it stalled publishes the same marker again). The holder
/// breaks it too, and leaves its own claim as a tombstone in its place,
/// since ghosts of the earlier instance may still be about.
pub fn with_claim_as_holder<T>(
    lock: &str,
    token: &Token,
    lifetime: Option<Duration>,
    instance_dated: Option<SystemTime>,
    mut f: impl FnMut() -> Result<(T, Afterwards), LockError>,
) -> Result<Option<T>, LockError> {
    let mut broke_tombstone = false;
    for _ in 0..JUNK_TRIES {
        let step =
            || f().map(|(done, afterwards)| (done, if broke_tombstone { Afterwards::Tombstone } else { afterwards }));
        if let Some(done) = with_claim(lock, token, lifetime, step)? {
            return Ok(Some(done));
        }
        let claim = claim_path(lock, token);
        match claimant(lock, token, lifetime)? {
            Some(Claimant::Junk(seen, junk)) => {
                break_instance(lock, &claim, &seen, &junk)?;
            }
            Some(Claimant::Party(seen)) if before(&seen, instance_dated) => {
                let tombstone = Held::new(junk_token(&seen), lifetime);
                broke_tombstone |= break_instance(lock, &claim, &seen, &tombstone)?;
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Whether `claim` was written before `instance` (by the filesystem's
/// clock, by more than its resolution).
fn before(claim: &Observed, instance: Option<SystemTime>) -> bool {
    match (instance, claim.dated) {
        (Some(instance), Some(claim)) => silence(instance, claim).is_some_and(|gap| !gap.is_zero()),
        _ => false,
    }
}

/// How many planted claims a holder clears before it gives up: one is what
/// a planter can do between two of the holder's calls.
const JUNK_TRIES: usize = 3;

/// What holds the claim on the instance with `token` (whose lifetime is
/// `lifetime`) of the lock at `lock`.
pub enum Claimant {
    /// A uuidlock claimant: its claim's marker names it, with the lifetime
    /// it is judged by (none: the empty claim of a lock without a lifetime,
    /// whose only claimants are its releasers).
    Party(Observed),
    /// A claim this user may not read (another user's, mode 600): judged as
    /// a party whose token is derived from what is seen ([`junk_token`]),
    /// with the instance's lifetime.
    Unreadable(Observed, Held),
    /// Anything no uuidlock process writes at a claim's name: bytes that are
    /// not a claim of this instance (any marker with a lifetime, or the
    /// empty claim of an instance without one), or a file that is not a
    /// regular file. It speaks for nobody, so it is broken at once, through
    /// a claim of its own named by [`junk_token`].
    Junk(Observed, Held),
}

/// Who holds the claim on the instance `token` of `lock`; `None` when
/// nobody does (the claim is gone).
pub fn claimant(lock: &str, token: &Token, lifetime: Option<Duration>) -> Result<Option<Claimant>, LockError> {
    let Some(seen) = Observed::claim(lock, &claim_path(lock, token))? else { return Ok(None) };
    let as_junk = |seen: &Observed| Held::new(junk_token(seen), lifetime);
    let marker = match seen.kind {
        Kind::Regular => format::parse(&seen.bytes),
        Kind::Unreadable => {
            let held = as_junk(&seen);
            return Ok(Some(Claimant::Unreadable(seen, held)));
        }
        Kind::Special(_) => {
            let held = as_junk(&seen);
            return Ok(Some(Claimant::Junk(seen, held)));
        }
    };
    Ok(Some(match (marker, lifetime) {
        // A claim on an instance with a lifetime is itself a marker with one
        // (crate::files::publish: complete from its first instant).
        (Marker::Uuidlock(held), Some(_)) if held.stale_after.is_some() => Claimant::Party(seen),
        // The claim on an instance without one is an empty file.
        (_, None) if seen.bytes.is_empty() => Claimant::Party(seen),
        _ => {
            let held = as_junk(&seen);
            Claimant::Junk(seen, held)
        }
    }))
}

/// The token under which a claim that names no claimant of its own is
/// broken: a UUID computed from what was seen of it (kind, bytes, date), so
/// that every breaker of that very file takes the same claim (one of them
/// wins it), and a file replaced since gets another. FNV-1a over 128 bits:
/// the same in every build and every version, unlike `std`'s hasher.
pub fn junk_token(seen: &Observed) -> Token {
    junk_token_of(seen.kind, &seen.bytes, seen.dated)
}

/// [`junk_token`] of a file read as `kind`, `bytes`, dated `dated`.
pub fn junk_token_of(kind: Kind, bytes: &[u8], dated: Option<SystemTime>) -> Token {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let date = dated.and_then(|at| at.duration_since(UNIX_EPOCH).ok()).map_or(0, |since| since.as_nanos());
    let kind: &[u8] = match kind {
        Kind::Regular => b"regular",
        Kind::Unreadable => b"unreadable",
        Kind::Special(kind) => kind.as_bytes(),
    };
    let mut hash = OFFSET;
    for byte in kind.iter().chain(&[0]).chain(bytes).chain(&[0]).chain(&date.to_le_bytes()) {
        hash = (hash ^ u128::from(*byte)).wrapping_mul(PRIME);
    }
    // Marked as a version 4, variant 1 UUID, so that it reads as any token.
    let hash = (hash & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let uuid = uuid::Uuid::from_u128(hash).hyphenated().to_string();
    Token::parse(&uuid).expect("a hyphenated lowercase UUID is a token")
}

/// Removes the instance at `path` (a claim beside `lock`) seen as `seen`,
/// holding the claim named by `instance`'s token, if it is still the very
/// file seen. Returns whether it was removed; `false` also when someone
/// else holds that claim.
fn break_instance(lock: &str, path: &str, seen: &Observed, instance: &Held) -> Result<bool, LockError> {
    let lifetime = instance.stale_after;
    let removed = with_claim(lock, &instance.token, lifetime, || {
        if Observed::claim(lock, path)?.as_ref() != Some(seen) {
            return Ok((false, Afterwards::Remove));
        }
        let removed = files::remove_within(path, files::busy_retry(lifetime))?;
        Ok((removed, if removed { Afterwards::Tombstone } else { Afterwards::Remove }))
    })?;
    Ok(removed == Some(true))
}

/// What a contender has seen of the files it waits on, to tell a stale lock
/// (or claim) from a live one.
#[derive(Default)]
pub struct Watch {
    seen: HashMap<String, (Observed, Instant)>,
    /// Whether a stale lock was broken: someone died, and may have left
    /// files behind ([`crate::sweep`]).
    pub broke: bool,
    /// How far apart the clocks that date files may be
    /// ([`crate::Options::max_clock_skew`]): judging by dates waits this
    /// much longer.
    pub skew: Duration,
}

impl Watch {
    /// A watch for clocks that may be `skew` apart.
    pub fn with_skew(skew: Duration) -> Watch {
        Watch { skew, ..Watch::default() }
    }

    /// Records that `path` looks like `observed` now; returns its marker if
    /// it declares a lifetime and has been silent for that long: by the
    /// filesystem's clock (`now` against the instance's dates), or else for
    /// that long on this contender's own watch. (A renewal changes the
    /// heartbeat, so a live holder is never stale.)
    pub fn stale(&mut self, path: &str, observed: &Observed, now: Option<SystemTime>) -> Option<Held> {
        let Marker::Uuidlock(held) = format::parse(&observed.bytes) else { return None };
        if observed.kind != Kind::Regular {
            return None;
        }
        let lifetime = held.stale_after?;
        self.silent_for(path, observed, now, lifetime).then_some(held)
    }

    /// Records that the lock file `path` looks like `observed` now; if it is
    /// an empty regular file and has stayed so for `lifetime` (the
    /// contender's own; `None`: never), the stand-in marker to break it by:
    /// with that lifetime, and the token that every breaker of that very
    /// file claims ([`junk_token`]; point 12 of [`crate::protocol`]).
    pub fn empty(
        &mut self,
        path: &str,
        observed: &Observed,
        now: Option<SystemTime>,
        lifetime: Option<Duration>,
    ) -> Option<Held> {
        if !observed.bytes.is_empty() || observed.kind != Kind::Regular {
            return None;
        }
        let lifetime = lifetime?;
        self.silent_for(path, observed, now, lifetime).then(|| Held::new(junk_token(observed), Some(lifetime)))
    }

    /// Whether `path`, seen as `observed`, has been silent for `lifetime`:
    /// two lifetimes by the filesystem's clock, or one on this watch.
    fn silent_for(&mut self, path: &str, observed: &Observed, now: Option<SystemTime>, lifetime: Duration) -> bool {
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
        let dead = silent.is_some_and(|silent| silent >= lifetime.saturating_mul(2).saturating_add(self.skew));
        dead || watched_since.elapsed() >= lifetime
    }
}

/// Breaks the stale lock `stale` (observed as `observed`) at `lock`, if
/// nobody else is at it, and removes its heartbeat. If its claim is held by
/// a claimant that died, that claim is broken instead (and so on up the
/// chain), and the lock itself on a later attempt. A claim no uuidlock
/// process wrote ([`Claimant::Junk`]) is broken at once, and one this user
/// may not read is judged by the lock's lifetime. Returns whether the lock
/// was removed.
pub fn break_stale(
    lock: &str,
    observed: &Observed,
    stale: &Held,
    watch: &mut Watch,
    now: Option<SystemTime>,
) -> Result<bool, LockError> {
    // Planted bug (tests only): the lock judged dead is deleted at once, with no claim and no second look.
    if planted("break-without-claim") {
        let bound = files::busy_retry(stale.stale_after);
        let _ = files::remove_within(&beat_path(lock, &stale.token), bound);
        return files::remove_within(lock, bound);
    }
    let original = (observed.clone(), stale.clone());
    let (mut path, mut observed, mut stale) = (lock.to_owned(), observed.clone(), stale.clone());
    for _ in 0..MAX_CHAIN {
        let lifetime = stale.stale_after.unwrap_or(format::MAX_STALE_AFTER);
        let removed = with_claim(lock, &stale.token, Some(lifetime), || {
            // Under the claim nobody else removes the instance: act only if
            // it is the very one judged stale (same token, no renewal since).
            let again = if path == lock { Observed::again(lock)? } else { Observed::claim(lock, &path)? };
            if again.as_ref() != Some(&observed) {
                return Ok((false, Afterwards::Remove));
            }
            let bound = files::busy_retry(Some(lifetime));
            let removed = files::remove_within(&path, bound)?;
            let _ = files::remove_within(&beat_path(lock, &stale.token), bound);
            // What was broken was dead, and its ghosts look dead too.
            Ok((removed, if removed { Afterwards::Tombstone } else { Afterwards::Remove }))
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
        // or refreshing, a claimant that died, or something planted.
        let claim = claim_path(lock, &stale.token);
        let next = match claimant(lock, &stale.token, Some(lifetime))? {
            None => return Ok(false),
            Some(Claimant::Junk(seen, junk)) => (seen, junk),
            Some(Claimant::Party(seen)) => match watch.stale(&claim, &seen, now) {
                Some(claimant) => (seen, claimant),
                None => return Ok(false),
            },
            Some(Claimant::Unreadable(seen, as_held)) => {
                if !watch.silent_for(&claim, &seen, now, lifetime) {
                    return Ok(false);
                }
                (seen, as_held)
            }
        };
        (path, observed, stale) = (claim, next.0, next.1);
    }
    Ok(false)
}
