//! The waits a host may end early: a waiter's pause in the queue, for the
//! head and the first few behind it (crate::queue), until the lock file goes.
//!
//! They sleep until an instant (an absolute-time sleep, WASI's
//! `subscribe-instant`), where every other sleep of the guest is relative
//! (`subscribe-duration`). Any host times them like any other sleep; the
//! project's host (`uuidlock_host`) ends them as soon as the lock file is
//! removed, so that a release is seen at once instead of at a waiter's next
//! look. The waiter looks at the lock, or at the queue, after a wait either
//! way, and the length of these waits is no part of the exclusion argument
//! (crate::protocol, crate::queue point 1): ending one early only makes a
//! waiter look sooner. The verification delay is a relative sleep, never
//! ended early.
//!
//! Under wasmtime's own preview 1 host (`wasmtime run` of the command
//! module), an absolute sleep is timed by tokio's millisecond timer where a
//! relative one is timed by the thread; with retry intervals under a few
//! milliseconds the head's looks there come up to a millisecond later.

use std::time::Duration;

/// The shortest retry interval at which waiters wait this way. Below it
/// they look often enough that a release is seen within a small part of a
/// hand-off anyway, and waking them costs more CPU than it saves time
/// (docs/src/performance.md, "Waking at a release"); the default interval
/// (0.1 s) is above it.
pub(crate) const FROM_INTERVAL: Duration = Duration::from_millis(50);

/// Sleeps `pause`, or less if the host ends the sleep early.
pub(crate) fn until_released_or(pause: Duration) {
    #[cfg(any(target_os = "wasi", target_os = "linux"))]
    if sleep_until_instant(pause) {
        return;
    }
    std::thread::sleep(pause);
}

/// An absolute-time sleep on the monotonic clock; `false` when the clock or
/// the sleep failed and nothing was slept.
#[cfg(any(target_os = "wasi", target_os = "linux"))]
fn sleep_until_instant(pause: Duration) -> bool {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return false;
    }
    let until = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec) + pause.as_nanos() as i128;
    let Ok(tv_sec) = libc::time_t::try_from(until / 1_000_000_000) else { return false };
    // In 0..1e9, which any c_long holds.
    let until = libc::timespec { tv_sec, tv_nsec: (until % 1_000_000_000) as libc::c_long };
    // SAFETY: reads one timespec we own; no remainder is asked for.
    let result =
        unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &until, std::ptr::null_mut()) };
    // Interrupted by a signal (natively): the caller looks, as after an early end.
    result == 0 || result == libc::EINTR
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn it_sleeps_its_length_where_nothing_ends_it() {
        let start = Instant::now();
        super::until_released_or(Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30), "{:?}", start.elapsed());
    }
}
