//! Interrupts the caller drives: a request that guest calls honour at their
//! next sleep.
//!
//! A guest call cannot be stopped at an arbitrary instruction without
//! leaving files behind (a marker just linked, a claim just taken), so an
//! interrupt only sets a flag. The guest sleeps only while it waits for the
//! lock (the retry interval) and during the verification delay; there the
//! host's sleep ends early (within [`SLICE`]) and the guest's next sleep
//! traps ([`crate::engine`]). Every other step (publishing, claims,
//! renewals, releases) runs to its end. The caller then undoes what the
//! call may have done, knowing the token it gave
//! ([`crate::Locker::undo_acquire`]).
//!
//! Each [`crate::Runtime`] has its own [`Interrupt`]; nothing here is
//! process-wide, and nothing catches signals: the `uuidlock` binary turns
//! its signals into requests, a library user does what its program needs.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest a guest's sleep goes without looking for a request.
pub const SLICE: Duration = Duration::from_millis(10);

/// A request to interrupt the guest calls of one [`crate::Runtime`] (and of
/// every clone of it, and every [`crate::Locker`] made from them). Cheap to
/// clone; clones share the request.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicI32>);

impl Interrupt {
    /// A new request, not yet made.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Asks running and future guest calls to stop at their next sleep,
    /// for `reason`: any number but 0 (the `uuidlock` binary gives the
    /// signal's).
    pub fn request(&self, reason: i32) {
        self.0.store(if reason == 0 { -1 } else { reason }, Ordering::SeqCst);
    }

    /// The reason of the request, if one was made.
    pub fn requested(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            reason => Some(reason),
        }
    }

    /// Withdraws the request: later calls run as usual.
    pub fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_shared_by_clones_and_can_be_withdrawn() {
        let interrupt = Interrupt::new();
        let clone = interrupt.clone();
        assert_eq!(clone.requested(), None);
        interrupt.request(15);
        assert_eq!(clone.requested(), Some(15));
        clone.clear();
        assert_eq!(interrupt.requested(), None);
        interrupt.request(0);
        assert!(interrupt.requested().is_some(), "0 still asks");
    }
}
