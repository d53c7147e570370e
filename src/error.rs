//! The protocol's one error type. The component maps it to the WIT `error`
//! variant, the command line to exit codes; both mappings live beside those
//! layers, and each case's meaning lives here.

use std::fmt;

/// Why a lock call failed. The messages name the path and the fix, and are
/// shown on one line (control characters in a path escaped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockError {
    /// The lock stayed held by someone else until the timeout.
    Timeout,
    /// The lock is not held by this token: absent, held by another, broken
    /// as stale, or being broken. Nothing was deleted or changed.
    NotOwner,
    /// This handle already holds that lock; a second acquire would wait for
    /// itself.
    AlreadyHeld(String),
    /// The path can never name a lock file: empty, contains NUL, names a
    /// directory or a symbolic link.
    InvalidPath(String),
    /// An option is out of range: the prefix's characters or length, a
    /// duration over the limit.
    InvalidOptions(String),
    /// The token is not one uuidlock could have made.
    InvalidToken(String),
    /// The path leads outside the directories granted to the sandbox.
    OutsideSandbox(String),
    /// Any other I/O error: a missing directory, a permission, a full disk.
    Io(String),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Timeout => f.write_str("timed out waiting for the lock"),
            LockError::NotOwner => f.write_str("the lock is not held by this token; nothing was deleted"),
            LockError::AlreadyHeld(why)
            | LockError::InvalidPath(why)
            | LockError::InvalidOptions(why)
            | LockError::InvalidToken(why)
            | LockError::OutsideSandbox(why)
            | LockError::Io(why) => f.write_str(&crate::format::one_line(why)),
        }
    }
}

impl std::error::Error for LockError {}
