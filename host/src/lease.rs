//! Leases: a held lock whose guard renews it in the background.
//!
//! A [`Lease`] is a [`Guard`] for a lock with a lifetime, plus a thread that
//! renews the lock every third of the lifetime ([`RENEWALS_PER_LIFETIME`]).
//! The lease is *lost* when a renewal answers `not-owner` (the lock was
//! broken while this process was stalled, or someone released it), or when
//! no renewal has succeeded for a whole lifetime (the filesystem is out of
//! reach, so contenders may break the lock). The owner can check
//! ([`Lease::lost`]), wait ([`Lease::wait_lost`]) or be told
//! ([`Lease::on_lost`]). Renewal stops when the lease is released or
//! dropped; dropping releases the lock.
//!
//! A lost lease cannot be won back: a renewal never rewrites the lock file
//! (see `uuidlock::protocol`), so a late one only learns of the loss. Work
//! done under the lease should carry its fencing number ([`Lease::fence`]),
//! so that the resource can refuse a holder that has not yet noticed.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Guard, LockError, Locker, Options, Token};

/// Renewals per lifetime: a third of it between renewals leaves two more
/// chances before contenders may break the lock.
pub const RENEWALS_PER_LIFETIME: u32 = 3;

/// The lifetime a lease declares when the options give none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);

/// Why a lease was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// A renewal found the lock no longer held by this lease: it was broken
    /// as stale, or released by someone with the token.
    NotOwner,
    /// No renewal succeeded for a whole lifetime; the last error.
    Unreachable(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::NotOwner => f.write_str("the lock is no longer held by this lease (broken as stale, or released)"),
            Lost::Unreachable(why) => write!(f, "no renewal succeeded for a whole lifetime: {why}"),
        }
    }
}

type Callback = Box<dyn FnOnce(&Lost) + Send>;

/// What the renewal thread and the lease share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    lost: Option<Lost>,
    stop: bool,
    callbacks: Vec<Callback>,
    renewals: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A held lock that renews itself; see the module docs.
pub struct Lease {
    guard: Option<Guard>,
    lifetime: Duration,
    shared: Arc<Shared>,
    renewer: Option<JoinHandle<()>>,
}

impl Locker {
    /// Takes the lock at `path` as [`Locker::acquire`] does, with a lifetime
    /// (`options.stale_after`, or [`DEFAULT_LIFETIME`]), and keeps it
    /// renewed until the lease is released or dropped.
    ///
    /// # Errors
    /// As [`Locker::acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use uuidlock_host::{Locker, Options, Runtime};
    ///
    /// let runtime = Runtime::new()?;
    /// let locker = Locker::new(&runtime, &["/srv/locks"])?;
    /// let options = Options { stale_after: Some(Duration::from_secs(10)), ..Options::default() };
    /// let lease = locker.lease("/srv/locks/job.lock", &options)?;
    /// lease.on_lost(|why| eprintln!("lost the lock: {why}"));
    /// for chunk in 0..100 {
    ///     if lease.lost().is_some() {
    ///         break; // stop working: someone else may hold the lock now
    ///     }
    ///     // ... write `chunk` to the resource, with lease.fence() ...
    /// }
    /// lease.release()?;
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn lease(&self, path: impl AsRef<Path>, options: &Options) -> Result<Lease, LockError> {
        let (options, lifetime) = with_lifetime(options);
        Ok(Lease::start(self.acquire(path, &options)?, lifetime))
    }

    /// As [`Locker::lease`], with a token the caller made; see
    /// [`Locker::acquire_as`].
    ///
    /// # Errors
    /// As [`Locker::acquire`].
    pub fn lease_as(&self, path: impl AsRef<Path>, token: Token, options: &Options) -> Result<Lease, LockError> {
        let (options, lifetime) = with_lifetime(options);
        Ok(Lease::start(self.acquire_as(path, token, &options)?, lifetime))
    }
}

/// `options` with the lifetime a lease declares (theirs, or
/// [`DEFAULT_LIFETIME`]), and that lifetime.
pub fn with_lifetime(options: &Options) -> (Options, Duration) {
    let lifetime = options.stale_after.unwrap_or(DEFAULT_LIFETIME);
    (Options { stale_after: Some(lifetime), ..options.clone() }, lifetime)
}

impl Lease {
    fn start(guard: Guard, lifetime: Duration) -> Lease {
        let shared = Arc::new(Shared::default());
        let renewer = {
            let (locker, path, token, shared) =
                (guard.locker.clone(), guard.path.clone(), guard.token().to_string(), shared.clone());
            std::thread::Builder::new()
                .name("uuidlock-lease".into())
                .spawn(move || renew(&locker, &path, &token, lifetime, &shared))
                .ok()
        };
        let lease = Lease { guard: Some(guard), lifetime, shared, renewer };
        if lease.renewer.is_none() {
            lease.lose(Lost::Unreachable("cannot start the renewal thread".into()));
        }
        lease
    }

    /// The owner token.
    pub fn token(&self) -> &Token {
        self.guard().token()
    }

    /// The fencing number of the acquisition; see [`Guard::fence`].
    pub fn fence(&self) -> u64 {
        self.guard().fence()
    }

    /// A semaphore holder's slot; see [`Guard::slot`].
    pub fn slot(&self) -> Option<u32> {
        self.guard().slot()
    }

    /// The lifetime the lock declares; renewals come every third of it.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How many renewals have succeeded so far.
    pub fn renewals(&self) -> u64 {
        self.shared.state().renewals
    }

    /// Why the lease was lost; `None` while it holds.
    pub fn lost(&self) -> Option<Lost> {
        self.shared.state().lost.clone()
    }

    /// Waits until the lease is lost or `timeout` passes; why it was lost.
    pub fn wait_lost(&self, timeout: Duration) -> Option<Lost> {
        let state = self.shared.state();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| state.lost.is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.lost.clone()
    }

    /// Calls `f` once when the lease is lost (on the renewal thread), or at
    /// once if it already is.
    pub fn on_lost(&self, f: impl FnOnce(&Lost) + Send + 'static) {
        let mut state = self.shared.state();
        match state.lost.clone() {
            Some(lost) => {
                drop(state);
                f(&lost);
            }
            None => state.callbacks.push(Box::new(f)),
        }
    }

    /// Stops renewing and releases the lock.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when the lease was lost (nothing deleted).
    pub fn release(mut self) -> Result<(), LockError> {
        self.stop();
        self.guard.take().expect("a lease holds its guard until released").release()
    }

    fn guard(&self) -> &Guard {
        self.guard.as_ref().expect("a lease holds its guard until released")
    }

    fn lose(&self, lost: Lost) {
        lose(&self.shared, lost);
    }

    fn stop(&mut self) {
        self.shared.state().stop = true;
        self.shared.changed.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop();
        // The guard releases the lock as it drops.
    }
}

/// Records the loss once, wakes the waiters and calls the callbacks.
fn lose(shared: &Shared, lost: Lost) {
    let callbacks = {
        let mut state = shared.state();
        if state.lost.is_some() {
            return;
        }
        state.lost = Some(lost.clone());
        std::mem::take(&mut state.callbacks)
    };
    shared.changed.notify_all();
    for callback in callbacks {
        callback(&lost);
    }
}

/// The renewal thread: renews every third of the lifetime until stopped or
/// lost.
fn renew(locker: &Locker, path: &str, token: &str, lifetime: Duration, shared: &Shared) {
    let interval = lifetime / RENEWALS_PER_LIFETIME;
    let mut last_renewed = Instant::now();
    let mut next = last_renewed + interval;
    loop {
        {
            let state = shared.state();
            let wait = next.saturating_duration_since(Instant::now());
            let (state, _) = shared
                .changed
                .wait_timeout_while(state, wait, |state| !state.stop)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if state.stop {
                return;
            }
        }
        match locker.refresh_guest_path(path, token) {
            Ok(()) => {
                last_renewed = Instant::now();
                next = last_renewed + interval;
                shared.state().renewals += 1;
            }
            Err(LockError::NotOwner) => return lose(shared, Lost::NotOwner),
            Err(e) if last_renewed.elapsed() >= lifetime => return lose(shared, Lost::Unreachable(e.to_string())),
            // Try again soon: contenders may break the lock a lifetime after
            // the last renewal that succeeded.
            Err(_) => next = Instant::now() + interval / 4,
        }
    }
}
