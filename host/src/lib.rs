//! The uuidlock host: runs the lock protocol inside the uuidlock component
//! in wasmtime, confined to the directories you grant.
//!
//! This crate is the library an embedder takes: its dependencies are
//! wasmtime and wasmtime-wasi and what the embedding needs. The `uuidlock`
//! binary and its tools (`run`, `contend`, `bench`, `doctor`) are the
//! `uuidlock-cli` package (`host/cli`), built on this one.
//!
//! # Layout
//!
//! - this module: the public API, [`Locker`] and its [`Guard`];
//! - [`lease`]: [`Lease`], a guard that renews its lock in the background
//!   and reports when it is lost;
//! - [`engine`]: engine, compiled-code cache, linkers, stores and grants, the
//!   one `bindgen!` of the `guest` world of `wit/`, the guest's sleeps (timed by the
//!   thread), and running the command module;
//! - `sandbox_fs`: the two WASI filesystem calls this host makes its own
//!   way: opens that never wait on a FIFO, directories as shared as their
//!   parent;
//! - `wake`: ends the queue's waits as soon as the lock file goes (inotify
//!   on the lock file during an acquire);
//! - [`interrupt`]: [`Interrupt`], a request the caller makes that guest
//!   calls honour at their next sleep, so that an interrupted call can be
//!   undone ([`Locker::undo_acquire`]);
//! - [`plugin`]: the lock as a wasmtime host provides it to its plugins
//!   ([`plugin::add_to_linker`]), each plugin's calls confined to its own
//!   grants;
//! - [`paths`]: host paths to the guest's view of them.
//!
//! # Example
//!
//! ```no_run
//! use uuidlock_host::{Locker, Options, Runtime};
//!
//! let runtime = Runtime::new()?; // compile once per process
//! let locker = Locker::new(&runtime, &["/srv/locks"])?; // the guest sees only this
//! {
//!     let guard = locker.acquire("/srv/locks/job.lock", &Options::default())?;
//!     println!("holding with token {}", guard.token());
//! } // released here
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod engine;
pub mod interrupt;
pub mod lease;
pub mod paths;
pub mod plugin;
mod sandbox_fs;
mod wake;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use wasmtime::Store;

pub use engine::{CommandOutput, Grant, Runtime};
pub use interrupt::Interrupt;
pub use lease::{Lease, Lost};
pub use uuidlock::format::Held;
use uuidlock::owned::{self, Owned};
use uuidlock::protocol::nanos;
pub use uuidlock::protocol::{Acquired, Status};
pub use uuidlock::{LockError, Marker, Mode, Options, Token};

use engine::{bindings, ComponentState};

/// Acquires and releases locks through component instances that are reused
/// from call to call. Clones share them. Calls from several threads run at
/// once, each in an instance of its own, so a waiting `acquire` never blocks a
/// guard's release.
#[derive(Clone)]
pub struct Locker {
    runtime: Runtime,
    grants: Arc<[Grant]>,
    /// Idle instances; a call takes one (or makes one) and puts it back.
    idle: Arc<Mutex<Vec<Instance>>>,
    /// The locks acquired through this locker, by guest path.
    held: Arc<Mutex<Owned>>,
}

struct Instance {
    store: Store<ComponentState>,
    guest: bindings::Guest,
}

impl Locker {
    /// A locker whose guest sees exactly the directories `dirs`, each under
    /// its own absolute host path.
    ///
    /// # Errors
    /// A directory does not exist or cannot be opened.
    pub fn new(runtime: &Runtime, dirs: &[impl AsRef<Path>]) -> Result<Locker> {
        let grants = dirs.iter().map(|dir| paths::grant(dir.as_ref())).collect::<Result<Arc<[Grant]>>>()?;
        // Made now, so that a bad grant is reported here rather than on first use.
        let instance = Instance::new(runtime, &grants)?;
        Ok(Locker {
            runtime: runtime.clone(),
            grants,
            idle: Arc::new(Mutex::new(vec![instance])),
            held: Arc::default(),
        })
    }

    /// Takes the lock at `path` (a host path inside a granted directory),
    /// waiting as `options` say. The guard releases it when dropped.
    ///
    /// A second acquire of a lock that this locker (or a clone) still holds
    /// fails at once with [`LockError::AlreadyHeld`] rather than waiting for
    /// itself.
    ///
    /// # Errors
    /// As [`uuidlock::protocol::acquire`]; a failure of the guest itself is
    /// reported as [`LockError::Io`].
    pub fn acquire(&self, path: impl AsRef<Path>, options: &Options) -> Result<Guard, LockError> {
        self.take(path.as_ref(), None, options)
    }

    /// As [`Locker::acquire`], with a token the caller made (a fresh one,
    /// from [`Token::generate`]; `options.prefix` is not used). Knowing the
    /// token before the call, a caller that cuts the call short (an
    /// interrupt) can undo it with [`Locker::undo_acquire`].
    ///
    /// # Errors
    /// As [`Locker::acquire`]; [`LockError::InvalidToken`] for a token
    /// whose UUID is not a random (version 4) one.
    pub fn acquire_as(&self, path: impl AsRef<Path>, token: Token, options: &Options) -> Result<Guard, LockError> {
        self.take(path.as_ref(), Some(token), options)
    }

    /// Undoes an [`Locker::acquire_as`] with `token` that was cut short:
    /// releases the lock if the call had taken it, and removes the staging
    /// file, the heartbeat and the queue entry it may have left, all inside
    /// the guest (the WIT `abandon`), so that nothing outside the granted
    /// directories is touched. Touches nothing that is not `token`'s.
    ///
    /// # Errors
    /// As [`Locker::release`], but for [`LockError::NotOwner`].
    pub fn undo_acquire(&self, path: impl AsRef<Path>, token: &Token) -> Result<(), LockError> {
        let path = paths::guest_path(path.as_ref())?;
        let result =
            self.call(|guest, store| guest.uuidlock_lock_lock().call_abandon(store, &path, &token.to_string()));
        if result.is_ok() {
            self.owned().released(&path, token.as_str());
        }
        result
    }

    fn take(&self, path: &Path, token: Option<Token>, options: &Options) -> Result<Guard, LockError> {
        let path = paths::guest_path(path)?;
        let remembered = self.owned().token(&path);
        owned::refuse_retake(&path, "this locker", remembered, |token| self.holds_guest_path(&path, token))?;
        let options = bindings::Options::from(options);
        let acquired = self.call(|guest, store| {
            // The guest's path is the host's (crate::paths).
            store.data_mut().wake.watch_for(Path::new(&path));
            let acquired = match &token {
                None => guest.uuidlock_lock_lock().call_acquire(&mut *store, &path, &options),
                Some(token) => {
                    guest.uuidlock_lock_lock().call_acquire_as(&mut *store, &path, &token.to_string(), &options)
                }
            };
            store.data_mut().wake.stop();
            acquired
        })?;
        let token = parse_token(&acquired.token)?;
        self.owned().taken(path.clone(), token.to_string());
        Ok(Guard { locker: self.clone(), path, token: Some(token), fence: acquired.fence, slot: acquired.slot })
    }

    /// Deletes the lock file at `path` if, and only if, it holds `token`.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] (nothing deleted), and as [`Locker::acquire`].
    pub fn release(&self, path: impl AsRef<Path>, token: &str) -> Result<(), LockError> {
        let path = paths::guest_path(path.as_ref())?;
        self.release_guest_path(&path, token)
    }

    fn release_guest_path(&self, path: &str, token: &str) -> Result<(), LockError> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_release(store, path, &token.to_owned()));
        self.owned().released(path, token);
        result
    }

    /// Extends the lifetime of the lock at `path` held with `token`.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when it is no longer ours (broken as stale,
    /// being broken, released), and as [`Locker::acquire`].
    pub fn refresh(&self, path: impl AsRef<Path>, token: &str) -> Result<(), LockError> {
        let path = paths::guest_path(path.as_ref())?;
        self.refresh_guest_path(&path, token)
    }

    fn refresh_guest_path(&self, path: &str, token: &str) -> Result<(), LockError> {
        self.call(|guest, store| guest.uuidlock_lock_lock().call_refresh(store, path, &token.to_owned()))
    }

    /// Whether the lock at `path` is held with `token`.
    ///
    /// # Errors
    /// As [`Locker::acquire`].
    pub fn holds(&self, path: impl AsRef<Path>, token: &str) -> Result<bool, LockError> {
        let path = paths::guest_path(path.as_ref())?;
        self.holds_guest_path(&path, token)
    }

    fn holds_guest_path(&self, path: &str, token: &str) -> Result<bool, LockError> {
        self.call(|guest, store| guest.uuidlock_lock_lock().call_holds(store, path, &token.to_owned()))
    }

    /// Who holds the lock at `path`, and since when; `None` when it is free.
    ///
    /// # Errors
    /// As [`Locker::acquire`].
    pub fn status(&self, path: impl AsRef<Path>) -> Result<Option<Status>, LockError> {
        let path = paths::guest_path(path.as_ref())?;
        let status = self.call(|guest, store| guest.uuidlock_lock_lock().call_status(store, &path))?;
        status
            .map(|status| {
                Ok(Status {
                    marker: marker(status.holder)?,
                    age: Duration::from_nanos(status.age_ns),
                    renewed: status.renewed_ns.map(Duration::from_nanos),
                    stale: status.stale,
                    fence: status.fence,
                })
            })
            .transpose()
    }

    /// The shared holders of the lock at `path` (readers, or a semaphore's
    /// holders), each with its slot; empty when there are none.
    ///
    /// # Errors
    /// As [`Locker::acquire`].
    pub fn holders(&self, path: impl AsRef<Path>) -> Result<Vec<(u32, Status)>, LockError> {
        let path = paths::guest_path(path.as_ref())?;
        let holders = self.call(|guest, store| guest.uuidlock_lock_lock().call_holders(store, &path))?;
        holders
            .into_iter()
            .map(|holder| {
                let status = Status {
                    marker: marker(holder.holder)?,
                    age: Duration::from_nanos(holder.age_ns),
                    renewed: holder.renewed_ns.map(Duration::from_nanos),
                    stale: holder.stale,
                    fence: None,
                };
                Ok((holder.slot, status))
            })
            .collect()
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls into an idle instance, holding no lock during the call. A trap
    /// discards the instance and is reported as an I/O error.
    fn call<T>(
        &self,
        f: impl FnOnce(&bindings::Guest, &mut Store<ComponentState>) -> wasmtime::Result<Result<T, bindings::Error>>,
    ) -> Result<T, LockError> {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => Instance::new(&self.runtime, &self.grants).map_err(guest_failure)?,
        };
        match f(&instance.guest, &mut instance.store) {
            Ok(result) => {
                self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(instance);
                result.map_err(from_wit)
            }
            Err(trap) => Err(guest_failure(trap.into())),
        }
    }
}

/// The options as the WIT interface takes them.
impl From<&Options> for bindings::Options {
    fn from(options: &Options) -> bindings::Options {
        bindings::Options {
            prefix: options.prefix.clone(),
            verification_delay_ns: nanos(options.verification_delay),
            retry_interval_ns: nanos(options.retry_interval),
            timeout_ns: options.timeout.map(nanos),
            stale_after_ns: options.stale_after.map(nanos),
            queue: options.queue,
            max_clock_skew_ns: nanos(options.max_clock_skew),
            mode: match options.mode {
                Mode::Exclusive => bindings::Mode::Exclusive,
                Mode::Shared => bindings::Mode::Shared,
                Mode::Slots(n) => bindings::Mode::Slots(n),
            },
        }
    }
}

impl Instance {
    fn new(runtime: &Runtime, grants: &[Grant]) -> Result<Instance> {
        let (store, guest) = runtime.instantiate(grants)?;
        Ok(Instance { store, guest })
    }
}

/// A held lock. Dropping it releases the lock (ignoring errors); call
/// [`Guard::release`] to see them.
pub struct Guard {
    locker: Locker,
    path: String,
    token: Option<Token>,
    fence: u64,
    slot: Option<u32>,
}

/// What a holder's marker says, from the component's answer.
fn marker(holder: bindings::Holder) -> Result<Marker, LockError> {
    Ok(match holder {
        bindings::Holder::Uuidlock(info) => Marker::Uuidlock(Held {
            token: parse_token(&info.token)?,
            stale_after: info.stale_after_ns.map(Duration::from_nanos),
        }),
        bindings::Holder::Foreign(shown) => Marker::Foreign(shown),
    })
}

impl Guard {
    /// The owner token.
    pub fn token(&self) -> &Token {
        self.token.as_ref().expect("a guard holds its token until released")
    }

    /// The fencing number of this acquisition: larger than that of every
    /// earlier acquisition of the same path. Send it with every write to the
    /// resource the lock protects; the resource refuses a number lower than
    /// one it has seen.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// A semaphore holder's slot ([`Mode::Slots`]): from 0 to N - 1, and
    /// no other holder has it meanwhile. `None` in the other modes.
    pub fn slot(&self) -> Option<u32> {
        self.slot
    }

    /// Keeps the lock held past the guard: the token and the fence.
    pub fn into_acquired(self) -> Acquired {
        let (fence, slot) = (self.fence, self.slot);
        Acquired { token: self.into_token(), fence, slot }
    }

    /// Renews the lock; see [`Locker::refresh`].
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when the lock was broken as stale.
    pub fn refresh(&self) -> Result<(), LockError> {
        self.locker.refresh_guest_path(&self.path, self.token().as_str())
    }

    /// Releases the lock now.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] if the lock file no longer holds our token
    /// (someone deleted or replaced it); nothing was deleted.
    pub fn release(mut self) -> Result<(), LockError> {
        let token = self.token.take().expect("a guard holds its token until released");
        self.locker.release_guest_path(&self.path, token.as_str())
    }

    /// Keeps the lock held past the guard: returns the token, which
    /// [`Locker::release`] takes later.
    pub fn into_token(mut self) -> Token {
        self.token.take().expect("a guard holds its token until released")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let _ = self.locker.release_guest_path(&self.path, token.as_str());
        }
    }
}

/// The WIT error back to the protocol's: the one mapping at this boundary.
fn from_wit(error: bindings::Error) -> LockError {
    match error {
        bindings::Error::Timeout => LockError::Timeout,
        bindings::Error::NotOwner => LockError::NotOwner,
        bindings::Error::AlreadyHeld(why) => LockError::AlreadyHeld(why),
        bindings::Error::InvalidPath(why) => LockError::InvalidPath(why),
        bindings::Error::InvalidOptions(why) => LockError::InvalidOptions(why),
        bindings::Error::InvalidToken(why) => LockError::InvalidToken(why),
        bindings::Error::OutsideSandbox(why) => LockError::OutsideSandbox(why),
        bindings::Error::Io(why) => LockError::Io(why),
    }
}

fn parse_token(token: &str) -> Result<Token, LockError> {
    Token::parse(token).map_err(|why| LockError::Io(format!("the guest returned a bad token: {why}")))
}

fn guest_failure(error: anyhow::Error) -> LockError {
    LockError::Io(format!("the uuidlock guest failed: {error:#}"))
}

// The Rust examples of the docs compile (and the README's), as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;

#[cfg(doctest)]
#[doc = include_str!("../../docs/src/getting-started.md")]
struct GettingStartedExamples;

#[cfg(doctest)]
#[doc = include_str!("../../docs/src/embedding.md")]
struct EmbeddingExamples;

#[cfg(doctest)]
#[doc = include_str!("../../docs/src/plugins.md")]
struct PluginsExamples;
