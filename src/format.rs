//! The lock file's bytes: a small public format that other programs share.
//!
//! # Specification (format 1)
//!
//! A lock file held by uuidlock contains exactly these bytes, UTF-8, nothing
//! before or after:
//!
//! ```text
//! 1\n
//! uuidlock/1?token=<TOKEN>\n
//! ```
//!
//! or, for a lock whose holder declared a lifetime (it may be broken once it
//! has gone that long without a renewal):
//!
//! ```text
//! 1\n
//! uuidlock/2?token=<TOKEN>&stale-after-ms=<MS>\n
//! ```
//!
//! `<TOKEN>` is the owner token: a prefix of at most [`MAX_PREFIX_LEN`]
//! printable, non-space ASCII bytes (`0x21..=0x7e`, not `&`, not starting
//! with `-`),
//! followed by a random UUIDv4 in its 36-character lowercase hyphenated
//! form, e.g.
//! `job-7c9e6679-7425-40de-944b-e07a4b7b7bd1`. The token is the holder's
//! capability: whoever knows it can release the lock. `<MS>` is the
//! lifetime in whole milliseconds (1 to 86,400,000), decimal without
//! leading zeros. A lock file never changes while it is held. The holder of
//! a lock with a lifetime shows it is alive by rewriting its *heartbeat*
//! file `<PATH>.<UUID>.beat` (named by its own token's UUID), which holds
//! `uuidlock-beat/1?nonce=<UUID>\n` with a fresh random UUID each time.
//!
//! Format 1 markers with a lifetime
//! (`uuidlock/1?token=<TOKEN>&stale-after-ms=<MS>&refreshes=<N>`) come from
//! uuidlock 0.1, whose holders renewed by replacing the lock file with `<N>`
//! one higher. They are still read, and watched, as before. uuidlock 0.1
//! reads a `uuidlock/2` marker as foreign, so it waits for it and never
//! breaks it.
//!
//! Readers read at most [`MAX_MARKER_LEN`] bytes. Anything that is not exactly
//! one of the forms above is a *foreign* marker: the lock is held by someone
//! else (another program, or a writer still in the middle of its write), and
//! uuidlock never deletes it.
//!
//! Beside a lock file `<PATH>`, uuidlock briefly creates `<PATH>.<UUID>.new`
//! (a marker staged before it is linked into place, or the fencing counter's
//! directory staged before it is renamed into place) and `<PATH>.<UUID>.claim`
//! (the right to remove the lock instance with that UUID), keeps
//! `<PATH>.<UUID>.beat` while a lock with a lifetime is held, and keeps the
//! fencing counter in the directory `<PATH>.fence/` ([`crate::fence`]); see
//! [`crate::protocol`].
//!
//! # Why these bytes
//!
//! The format is chosen so that the Python lock libraries that people already
//! point at the same files wait for a uuidlock holder instead of evicting it:
//!
//! - `filelock.SoftFileLock` parses a marker as `<pid>\n<hostname>\n` and
//!   evicts, after about two seconds, any marker it cannot parse that way, or
//!   one whose pid is dead on its own host. To it, a uuidlock marker names pid
//!   1 on host `uuidlock/1?token=...`. No real host has that name (`/`, `?`
//!   and `=` cannot appear in a hostname), so SoftFileLock never probes the
//!   pid and never evicts the marker; and a tool that probed pid 1 anyway
//!   would find it alive on every Unix host.
//! - The Python `uuid-filelock` package compares the stripped content with its
//!   own bare `prefix + uuid` token; a uuidlock marker never equals one, so it
//!   waits for the file to disappear.
//!
//! WASI preview 1 has no process id and no hostname, so the guest could not
//! write real ones; the token is the identity instead.

use std::fmt;
use std::time::Duration;

/// The longest owner-token prefix accepted, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// The most bytes a reader takes from a lock file. A longer file is foreign.
pub const MAX_MARKER_LEN: usize = 1024;

/// Length of a hyphenated UUID, the random part of every token.
const UUID_LEN: usize = 36;

/// What comes before the token in a marker without a lifetime (and in
/// uuidlock 0.1's markers with one).
const MARKER_HEAD: &str = "1\nuuidlock/1?token=";
/// What comes before the token in a marker with a lifetime.
const LEASE_HEAD: &str = "1\nuuidlock/2?token=";

/// The longest lifetime a marker may declare.
pub const MAX_STALE_AFTER: Duration = Duration::from_secs(86_400);

/// The shortest lifetime accepted. Ordinary scheduling delays must stay well
/// inside a lifetime (see the lease contract). On a 2-core machine with 32
/// processes contending, holders renewing every third of their lifetime in
/// the background were evicted by the load alone at 0.1 s (25 to 35 of 800
/// in each of three runs) and never at 0.2 s; holders that do not renew
/// were evicted at 0.2 s (8 of 800 in one run of three). This floor keeps
/// 2.5 times the shortest clean lifetime; without background renewal, a
/// second or more is wise.
pub const MIN_STALE_AFTER: Duration = Duration::from_millis(500);

/// The longest rendering of a foreign marker shown to people.
const MAX_FOREIGN_SHOWN: usize = 120;

/// An owner token: a validated prefix followed by a random UUIDv4.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Token(String);

impl Token {
    /// A new token with `prefix` and a fresh random UUIDv4.
    ///
    /// # Errors
    /// The prefix's problem, as [`check_prefix`] describes it.
    pub fn generate(prefix: &str) -> Result<Token, String> {
        check_prefix(prefix)?;
        Ok(Token(format!("{prefix}{}", uuid::Uuid::new_v4().hyphenated())))
    }

    /// Checks that `text` is a token uuidlock could have made.
    ///
    /// # Errors
    /// A one-line description of what is wrong with it.
    pub fn parse(text: &str) -> Result<Token, String> {
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        let split = text.len().checked_sub(UUID_LEN).filter(|&at| text.is_char_boundary(at));
        let Some(split) = split else {
            return Err(format!("{text:?} is not a uuidlock token: it must end in a 36-character UUID"));
        };
        let (prefix, id) = text.split_at(split);
        check_prefix(prefix).map_err(|why| format!("{text:?} is not a uuidlock token: {why}"))?;
        let canonical = uuid::Uuid::try_parse(id).ok().map(|u| u.hyphenated().to_string());
        if canonical.as_deref() != Some(id) {
            return Err(format!("{text:?} is not a uuidlock token: it must end in a lowercase hyphenated UUID"));
        }
        Ok(Token(text.to_owned()))
    }

    /// Whether the token's UUID is a random one (version 4, RFC 9562
    /// variant), as [`Token::generate`] makes: only then can no other
    /// caller have it.
    pub fn is_random(&self) -> bool {
        uuid::Uuid::try_parse(self.uuid())
            .is_ok_and(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122)
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix the token was made with.
    pub fn prefix(&self) -> &str {
        &self.0[..self.0.len() - UUID_LEN]
    }

    /// The random UUID, unique to this token: names the files beside the lock.
    pub fn uuid(&self) -> &str {
        &self.0[self.0.len() - UUID_LEN..]
    }

    /// The token as text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a token prefix: at most [`MAX_PREFIX_LEN`] bytes of printable,
/// non-space ASCII, so that a token is always one line with no surrounding
/// white space (which other readers strip), and not starting with `-` (so
/// that a token never reads as a command-line option).
///
/// # Errors
/// A one-line description of what is wrong with the prefix.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!("the prefix is {} bytes long; at most {MAX_PREFIX_LEN} are allowed", prefix.len()));
    }
    if prefix.starts_with('-') {
        return Err("the prefix starts with '-'; a token must not read as a command-line option".into());
    }
    if let Some(bad) = prefix.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("the prefix contains {bad:?}; only printable ASCII without spaces is allowed"));
    }
    // The lock file puts '&' between its fields: a token holding one would
    // read back as another program's marker, which uuidlock never removes,
    // and its own holder would wait for it for ever.
    if prefix.contains('&') {
        return Err("the prefix contains '&', which separates the lock file's fields; use another character".into());
    }
    Ok(())
}

/// What a uuidlock marker says: who holds the lock, and for how long it
/// stays valid without a renewal.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Held {
    /// The holder's token.
    pub token: Token,
    /// The declared lifetime: `None` for a lock that is never broken.
    pub stale_after: Option<Duration>,
}

impl Held {
    /// A marker for `token`.
    pub fn new(token: Token, stale_after: Option<Duration>) -> Held {
        Held { token, stale_after }
    }

    /// The bytes of a lock file holding this marker.
    pub fn encode(&self) -> Vec<u8> {
        let text = match self.stale_after {
            None => format!("{MARKER_HEAD}{}\n", self.token),
            Some(lifetime) => format!("{LEASE_HEAD}{}&stale-after-ms={}\n", self.token, whole_millis(lifetime)),
        };
        text.into_bytes()
    }
}

/// The claim on the instance with `token` (the lock itself, or a claim) of
/// the lock at `lock`: `<PATH>.<UUID>.claim`.
pub fn claim_path(lock: &str, token: &Token) -> String {
    format!("{lock}.{}.claim", token.uuid())
}

/// A staging name beside the lock at `lock`, unique to `token`:
/// `<PATH>.<UUID>.new`.
pub fn staged_path(lock: &str, token: &Token) -> String {
    format!("{lock}.{}.new", token.uuid())
}

/// The heartbeat of the instance with `token` of the lock at `lock`:
/// `<PATH>.<UUID>.beat`.
pub fn beat_path(lock: &str, token: &Token) -> String {
    format!("{lock}.{}.beat", token.uuid())
}

/// A fresh staging name beside `derived`, a name uuidlock derives from a
/// lock (`<PATH>.<UUID>.<SUFFIX>`, as [`claim_path`] makes): `<PATH>.<NEW
/// UUID>.new`, no longer than `derived`. An instance published as a
/// directory is moved there to be removed (crate::files), and the sweep
/// reclaims it if the remover dies. `None` for a name of another shape.
pub fn away_path(derived: &str) -> Option<String> {
    let (rest, _suffix) = derived.rsplit_once('.')?;
    let (lock, uuid) = rest.rsplit_once('.')?;
    uuid::Uuid::try_parse(uuid).ok().filter(|_| uuid.len() == 36)?;
    Some(staged_path(lock, &Token::generate("").ok()?))
}

/// Fresh heartbeat bytes: different every time, which is all that counts.
pub fn beat() -> Vec<u8> {
    format!("uuidlock-beat/1?nonce={}\n", uuid::Uuid::new_v4().hyphenated()).into_bytes()
}

/// A lifetime in whole milliseconds, rounded up so that it never shrinks.
fn whole_millis(duration: Duration) -> u128 {
    duration.as_nanos().div_ceil(1_000_000)
}

/// What a lock file says about its holder.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Marker {
    /// A uuidlock marker.
    Uuidlock(Held),
    /// Anything else, rendered for people: escaped, at most 120 characters.
    Foreign(String),
}

/// Reads a lock file's content (at most [`MAX_MARKER_LEN`] bytes of it).
pub fn parse(bytes: &[u8]) -> Marker {
    let text = std::str::from_utf8(bytes).ok().and_then(|text| text.strip_suffix('\n'));
    let held = text.and_then(|text| match text.strip_prefix(MARKER_HEAD) {
        Some(fields) => parse_fields(fields),
        None => parse_lease_fields(text.strip_prefix(LEASE_HEAD)?),
    });
    match held {
        Some(held) => Marker::Uuidlock(held),
        None => Marker::Foreign(describe_foreign(bytes)),
    }
}

/// Format 1: `<TOKEN>`, or uuidlock 0.1's `<TOKEN>&stale-after-ms=<MS>&refreshes=<N>`.
fn parse_fields(fields: &str) -> Option<Held> {
    let Some((token, rest)) = fields.split_once('&') else {
        return Some(Held::new(Token::parse(fields).ok()?, None));
    };
    let (ms, refreshes) = rest.strip_prefix("stale-after-ms=")?.split_once("&refreshes=")?;
    decimal(refreshes)?;
    Some(Held::new(Token::parse(token).ok()?, Some(lifetime(ms)?)))
}

/// Format 2: `<TOKEN>&stale-after-ms=<MS>`.
fn parse_lease_fields(fields: &str) -> Option<Held> {
    let (token, ms) = fields.split_once("&stale-after-ms=")?;
    Some(Held::new(Token::parse(token).ok()?, Some(lifetime(ms)?)))
}

/// A lifetime in milliseconds, within the limits.
fn lifetime(ms: &str) -> Option<Duration> {
    let lifetime = Duration::from_millis(decimal(ms)?);
    (!lifetime.is_zero() && lifetime <= MAX_STALE_AFTER).then_some(lifetime)
}

/// ASCII digits without a leading zero (but "0" itself), as `encode` writes.
fn decimal(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// `text` on one line: control characters (a newline in a lock path, say)
/// escaped as Rust writes them (`\n`, `\u{1b}`), everything else as is.
/// Every message passes through it, so one failure is one line of stderr.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

fn describe_foreign(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file (a writer between create and write, or one that crashed there)".into();
    }
    if bytes.len() > MAX_MARKER_LEN {
        return format!("a file of more than {MAX_MARKER_LEN} bytes");
    }
    let mut shown: String = bytes.escape_ascii().to_string();
    if shown.len() > MAX_FOREIGN_SHOWN {
        shown.truncate(MAX_FOREIGN_SHOWN);
        shown.push_str("...");
    }
    format!("\"{shown}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_renamed_aside_is_a_fresh_staging_name_beside_the_lock() {
        let (lock, token) = ("/d/job.lock", Token::generate("x-").unwrap());
        let claim = claim_path(lock, &token);
        let away = away_path(&claim).unwrap();
        assert!(away.starts_with("/d/job.lock.") && away.ends_with(".new") && away.len() <= claim.len(), "{away}");
        assert_ne!(away, staged_path(lock, &token));
        assert_ne!(away_path(&claim), Some(away));
        assert_eq!(away_path("/d/job.lock"), None);
        assert_eq!(away_path("/d/job.lock.not-a-uuid.claim"), None);
    }

    #[test]
    fn a_marker_parses_back_to_its_token() {
        let token = Token::generate("job-").unwrap();
        let held = Held::new(token.clone(), None);
        assert_eq!(parse(&held.encode()), Marker::Uuidlock(held));
        assert_eq!(token.prefix(), "job-");
        assert_eq!(format!("{}{}", token.prefix(), token.uuid()), token.as_str());
    }

    #[test]
    fn a_lifetime_round_trips_in_format_2() {
        let held = Held::new(Token::generate("").unwrap(), Some(Duration::from_secs(30)));
        let text = String::from_utf8(held.encode()).unwrap();
        assert!(text.starts_with("1\nuuidlock/2?token=") && text.ends_with("&stale-after-ms=30000\n"), "{text}");
        assert_eq!(parse(text.as_bytes()), Marker::Uuidlock(held.clone()));
        // uuidlock 0.1's markers with a lifetime are still read.
        let old = format!("1\nuuidlock/1?token={}&stale-after-ms=30000&refreshes=7\n", held.token);
        assert_eq!(parse(old.as_bytes()), Marker::Uuidlock(held));
        // Sub-millisecond lifetimes round up, never down to zero.
        let tiny = Held::new(Token::generate("").unwrap(), Some(Duration::from_nanos(1)));
        let Marker::Uuidlock(back) = parse(&tiny.encode()) else { panic!() };
        assert_eq!(back.stale_after, Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_marker_is_a_softfilelock_holder_on_no_real_host() {
        // SoftFileLock needs "<pid>\n<host>\n": two lines, a decimal pid in
        // 1..2^31, a trailing newline; and a host name no machine has.
        let held = Held::new(Token::generate("").unwrap(), Some(Duration::from_secs(1)));
        let text = String::from_utf8(held.encode()).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.trim().lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "1");
        assert!(lines[1].contains('/') && lines[1].contains('?'));
        assert!(!lines[1].contains(char::is_whitespace));
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(Token::generate("").unwrap(), Token::generate("").unwrap());
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Token::generate("a b").is_err());
        assert!(Token::generate("line\nbreak").is_err());
        assert!(Token::generate("é").is_err());
        assert!(Token::generate("--job").is_err());
        // '&' separates the marker's fields: such a token would read back
        // as a foreign marker, and wedge the lock.
        assert!(Token::generate("ci&job-").is_err());
        assert!(Token::generate("a&stale-after-ms=5").is_err());
        assert!(Token::generate(&"x".repeat(MAX_PREFIX_LEN + 1)).is_err());
        assert!(Token::generate(&"x".repeat(MAX_PREFIX_LEN)).is_ok());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = Token::generate("p-").unwrap().into_string();
        assert!(Token::parse(&good).is_ok());
        for bad in [
            "",
            "short",
            &good.to_uppercase(),
            &good[..good.len() - 1],
            &format!("{good} "),
            &format!("a b{}", &good[2..]),
            "ééééééééééééééééééééééééééééééééééééé",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn anything_else_is_foreign() {
        let token = Token::generate("").unwrap();
        let mut marker = Held::new(token.clone(), None).encode();
        marker.pop(); // a writer cut short
        let head = String::from_utf8(marker.clone()).unwrap();
        for bytes in [
            &b""[..],
            b"1234\nbuildhost\n",
            token.as_str().as_bytes(), // uuid-filelock's bare token
            &marker,
            b"\xff\xfe\0binary",
            &vec![b'x'; MAX_MARKER_LEN + 1],
            format!("{head}&stale-after-ms=0&refreshes=0\n").as_bytes(),
            format!("{head}&stale-after-ms=010&refreshes=0\n").as_bytes(),
            format!("{head}&stale-after-ms=86400001&refreshes=0\n").as_bytes(),
            format!("{head}&stale-after-ms=5\n").as_bytes(),
            format!("{head}&refreshes=1&stale-after-ms=5\n").as_bytes(),
            format!("{head}&stale-after-ms=5&refreshes=-1\n").as_bytes(),
            format!("1\nuuidlock/2?token={token}\n").as_bytes(),
            format!("1\nuuidlock/2?token={token}&stale-after-ms=5&refreshes=0\n").as_bytes(),
            format!("1\nuuidlock/2?token={token}&stale-after-ms=0\n").as_bytes(),
        ] {
            assert!(matches!(parse(bytes), Marker::Foreign(_)), "{bytes:?} parsed as ours");
        }
    }

    #[test]
    fn foreign_markers_are_shown_escaped_and_short() {
        let Marker::Foreign(shown) = parse(&[b'\n'; 500]) else { panic!() };
        assert!(shown.len() < 140 && !shown.contains('\n'), "{shown}");
    }
}
