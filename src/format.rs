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
//! `<TOKEN>` is the owner token: a prefix of at most [`MAX_PREFIX_LEN`]
//! printable, non-space ASCII bytes (`0x21..=0x7e`, not starting with `-`),
//! followed by a random UUIDv4 in its 36-character lowercase hyphenated
//! form, e.g.
//! `job-7c9e6679-7425-40de-944b-e07a4b7b7bd1`. The token is the holder's
//! capability: whoever knows it can release the lock.
//!
//! Readers read at most [`MAX_MARKER_LEN`] bytes. Anything that is not exactly
//! the two lines above is a *foreign* marker: the lock is held by someone
//! else (another program, or a writer still in the middle of its write), and
//! uuidlock never deletes it.
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

/// The longest owner-token prefix accepted, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// The most bytes a reader takes from a lock file. A longer file is foreign.
pub const MAX_MARKER_LEN: usize = 1024;

/// Length of a hyphenated UUID, the random part of every token.
const UUID_LEN: usize = 36;

/// What comes before the token in a marker.
const MARKER_HEAD: &str = "1\nuuidlock/1?token=";

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

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix the token was made with.
    pub fn prefix(&self) -> &str {
        &self.0[..self.0.len() - UUID_LEN]
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
    Ok(())
}

/// The bytes of a lock file held with `token`.
pub fn encode(token: &Token) -> Vec<u8> {
    format!("{MARKER_HEAD}{token}\n").into_bytes()
}

/// What a lock file says about its holder.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Marker {
    /// A uuidlock marker and the holder's token.
    Uuidlock(Token),
    /// Anything else, rendered for people: escaped, at most 120 characters.
    Foreign(String),
}

/// Reads a lock file's content (at most [`MAX_MARKER_LEN`] bytes of it).
pub fn parse(bytes: &[u8]) -> Marker {
    let token = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.strip_prefix(MARKER_HEAD))
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|token| Token::parse(token).ok());
    match token {
        Some(token) => Marker::Uuidlock(token),
        None => Marker::Foreign(describe_foreign(bytes)),
    }
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
    fn a_marker_parses_back_to_its_token() {
        let token = Token::generate("job-").unwrap();
        assert_eq!(parse(&encode(&token)), Marker::Uuidlock(token.clone()));
        assert_eq!(token.prefix(), "job-");
    }

    #[test]
    fn the_marker_is_a_softfilelock_holder_on_no_real_host() {
        // SoftFileLock needs "<pid>\n<host>\n": two lines, a decimal pid in
        // 1..2^31, a trailing newline; and a host name no machine has.
        let token = Token::generate("").unwrap();
        let text = String::from_utf8(encode(&token)).unwrap();
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
        let mut marker = encode(&token);
        marker.pop(); // a writer cut short
        for bytes in [
            &b""[..],
            b"1234\nbuildhost\n",
            token.as_str().as_bytes(), // uuid-filelock's bare token
            &marker,
            b"\xff\xfe\0binary",
            &vec![b'x'; MAX_MARKER_LEN + 1],
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
