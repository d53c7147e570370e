//! Stale file handles: a network filesystem's answer that a name its
//! client had cached now stands for a file that another client removed or
//! replaced (`ESTALE`).
//!
//! On GlusterFS with its default caches, one client's lookup of a lock
//! file that another client has just released and retaken is answered
//! `ESTALE` in a good part of the calls (32 of 80 acquires failed on the
//! second mount before this module). WASI has no such error: wasmtime-wasi
//! passes it to the guest as `EIO`, so the guest takes every `EIO` for a
//! stale handle. The kernel has already tried a fresh lookup once by then;
//! a second call a moment later looks the name up afresh and gets the file
//! that is there now. So an operation that looks a name up (open, stat,
//! create, link, rename, a listing) is made again, with short pauses, for
//! up to [`BOUND`]; only then does the error reach the caller, with a
//! message that names the path and the fix ([`crate::files::io_error`]).
//!
//! Retrying is safe because each such step is either a lookup (which
//! changes nothing), a rename of a file of the caller's own, or a link
//! whose repetition the protocol already handles (a link that fails with
//! "exists" after a first try that did succeed reads back the caller's own
//! bytes: the NFS retransmission rule in [`crate::files::publish`]). An
//! exclusive create is not retried: one that did succeed but was answered
//! with an error would fail again with "exists", and an empty claim cannot
//! be told from another's. Nor is a removal: a stale handle there means the
//! file seen is no longer at its name, and removing what is there now would
//! remove another instance.
//!
//! The [`BOUND`] is one budget for a whole step of the protocol (an
//! attempt to take the lock, a release, a renewal): [`begin`] starts it,
//! and every retry in the step draws on it, so that retries never add up
//! past it.

use std::cell::Cell;
use std::io;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long an operation answered with a stale handle is made again: more
/// than the 1 s for which a GlusterFS client keeps a name cached by default.
pub const BOUND: Duration = Duration::from_millis(1500);

/// The longest pause between two tries.
const MOST_PAUSE: Duration = Duration::from_millis(50);

thread_local! {
    /// When the current step first met a stale handle.
    static FIRST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Starts a step of the protocol: its retries share one [`BOUND`].
pub fn begin() {
    FIRST.set(None);
}

/// Whether `e` says a cached name stood for a file that is gone: `ESTALE`
/// natively; in the guest, `EIO`, which is what wasmtime-wasi makes of it,
/// or `ESTALE` itself, which WASI preview 1 has and a host may pass on (the
/// simulator does: `uuidlock simulate --profile gluster`, seed 530, failed
/// an acquire with "stale file handle" before the guest knew it).
pub fn is_stale(e: &io::Error) -> bool {
    #[cfg(target_os = "wasi")]
    {
        const EIO: i32 = 29;
        const ESTALE: i32 = 72;
        matches!(e.raw_os_error(), Some(EIO | ESTALE))
    }
    #[cfg(not(target_os = "wasi"))]
    {
        e.raw_os_error() == Some(libc::ESTALE)
    }
}

/// Runs `op` until it does not fail with a stale handle, for at most
/// [`BOUND`]; its last result.
pub fn again<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    again_if(op, is_stale)
}

/// As [`again`], for at most `bound`.
pub fn again_within<T>(bound: Duration, op: &mut dyn FnMut() -> io::Result<T>) -> io::Result<T> {
    again_for(bound, op, &is_stale)
}

/// As [`again`], for any error that `stale` tells apart.
pub fn again_if<T, E>(mut op: impl FnMut() -> Result<T, E>, stale: impl Fn(&E) -> bool) -> Result<T, E> {
    again_for(BOUND, &mut op, &stale)
}

fn again_for<T, E>(bound: Duration, op: &mut dyn FnMut() -> Result<T, E>, stale: &dyn Fn(&E) -> bool) -> Result<T, E> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match op() {
            Err(e) if stale(&e) => {
                let first = FIRST.get().unwrap_or_else(|| {
                    FIRST.set(Some(start));
                    start
                });
                if start.elapsed() >= bound || first.elapsed() >= BOUND {
                    return Err(e);
                }
                sleep(pause);
                pause = (pause * 2).min(MOST_PAUSE);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn stale() -> io::Error {
        io::Error::from_raw_os_error(libc::ESTALE)
    }

    #[test]
    fn a_stale_handle_is_tried_again_and_other_errors_are_not() {
        let tries = Cell::new(0);
        let result = again(|| {
            tries.set(tries.get() + 1);
            if tries.get() < 4 {
                Err(stale())
            } else {
                Ok(7)
            }
        });
        assert_eq!((result.unwrap(), tries.get()), (7, 4));
        let tries = Cell::new(0);
        let result: io::Result<()> = again(|| {
            tries.set(tries.get() + 1);
            Err(io::Error::from(io::ErrorKind::NotFound))
        });
        assert_eq!((result.unwrap_err().kind(), tries.get()), (io::ErrorKind::NotFound, 1));
    }

    // One budget for a step: a second operation meeting a stale handle in
    // the same step gets what is left of it, not a bound of its own.
    #[test]
    fn retries_in_one_step_share_one_bound() {
        begin();
        let start = Instant::now();
        let first: io::Result<()> = again(|| Err(stale()));
        let second: io::Result<()> = again(|| Err(stale()));
        assert!(first.is_err() && second.is_err());
        assert!(start.elapsed() < BOUND + Duration::from_millis(500), "{:?}", start.elapsed());
        begin();
    }

    #[test]
    fn a_handle_that_stays_stale_fails_after_the_bound() {
        begin();
        let start = Instant::now();
        let result: io::Result<()> = again_within(Duration::from_millis(100), &mut || Err(stale()));
        assert!(result.is_err_and(|e| is_stale(&e)));
        assert!(start.elapsed() >= Duration::from_millis(100) && start.elapsed() < Duration::from_secs(2));
    }
}
