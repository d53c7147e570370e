//! Every exit code of the `uuidlock` binary, in one place. The lock
//! commands' are the command-line contract's ([`uuidlock::cli::exit`]),
//! shared with the guest command; the tools' own are here.

pub use uuidlock::cli::exit::{IO, NOT_OWNER, OK, TIMEOUT_OR_FREE, USAGE};

/// `contend`: it found violations (lost updates, overlaps, fences out of
/// order) or evictions; `doctor`: the share is unsafe.
pub const FOUND: i32 = 1;

/// `run`: the lock stayed held by someone else until `--timeout` (unless
/// `--conflict-exit-code` says otherwise).
pub const TIMEOUT: i32 = TIMEOUT_OR_FREE;

/// `run`: the lease was lost while CMD ran; CMD was stopped.
pub const LEASE_LOST: i32 = 75;

/// `run`: CMD exists but cannot be run.
pub const NOT_EXECUTABLE: i32 = 126;

/// `run`: CMD was not found.
pub const NOT_FOUND: i32 = 127;

/// Interrupted by signal `signal` (or CMD killed by it), as shells report it.
pub fn signal(signal: i32) -> i32 {
    128 + signal
}
