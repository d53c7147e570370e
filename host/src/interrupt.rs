//! Interrupts for the native binary: SIGINT, SIGTERM and SIGHUP become a
//! *request* that guest calls honour at their next sleep.
//!
//! A guest call cannot be stopped at an arbitrary instruction without
//! leaving files behind (a marker just linked, a claim just taken), so a
//! signal only sets a flag. The guest sleeps only while it waits for the
//! lock (the retry interval) and during the verification delay, and there
//! the host's sleep ends early and the guest's next sleep traps
//! ([`crate::engine`]). Every other step (publishing, claims, renewals,
//! releases) runs to its end. The caller then undoes what the call may have
//! done, knowing the token it gave ([`crate::Locker::undo_acquire`]).
//!
//! Nothing here runs unless the binary calls [`catch`]: a library user's
//! process keeps its own signal handling.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::{LockError, Locker, Token};

/// The signal that asked to interrupt; 0 for none.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// The signal that asked to interrupt, if one did.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Asks running and future guest calls to stop at their next sleep.
pub fn request(signal: i32) {
    REQUESTED.store(signal, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on: each becomes a request,
/// and is passed to `forward` (which `uuidlock run` uses to signal its
/// child).
///
/// # Errors
/// The handlers could not be installed.
pub fn catch(forward: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("uuidlock-signals".into()).spawn(move || {
        for signal in signals.forever() {
            request(signal);
            forward(signal);
        }
    })?;
    Ok(())
}

/// How an acquire with a caller-made token ended.
pub enum Settled<T> {
    /// No interrupt: the acquire's own result.
    Done(Result<T, LockError>),
    /// An interrupt came: whatever the acquire took was dropped and undone.
    Interrupted { signal: i32, message: String },
}

/// Settles an acquire of the lock file `file` with `token` that returned
/// `taken`: if an interrupt was requested meanwhile, `taken` is dropped (a
/// guard or lease releases) and the acquire undone
/// ([`Locker::undo_acquire`]), whatever point it had reached.
pub fn settle<T>(locker: &Locker, file: &Path, token: &Token, taken: Result<T, LockError>) -> Settled<T> {
    let Some(signal) = requested() else { return Settled::Done(taken) };
    drop(taken);
    let undone = match locker.undo_acquire(file, token) {
        Ok(()) => "nothing of it was left behind".to_owned(),
        Err(e) => format!("undoing it failed: {e}"),
    };
    let message = format!("interrupted by signal {signal} while acquiring {}; {undone}", file.display());
    Settled::Interrupted { signal, message }
}
