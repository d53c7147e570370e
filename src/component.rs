//! The WIT export (`wit/`): protocol errors become WIT errors here, and
//! nowhere else. An instance remembers the locks acquired through it
//! ([`Owned`]), so that a second acquire of one it still holds fails with
//! `already-held` instead of waiting for itself; a `guard` releases its lock
//! when the caller drops it.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::format::{Held, Marker, Token};
use crate::owned::{self, Owned};
use crate::protocol::{self, nanos, Status};
use crate::LockError;

wit_bindgen::generate!({ world: "guest", path: "wit" });

use exports::uuidlock::lock::lock::{Guest, GuestGuard};
use exports::uuidlock::lock::types::{Acquired, Error, Holder, LockInfo, LockStatus, Mode, Options, SharedHolder};

thread_local! {
    /// The locks acquired through this instance and not released through
    /// it. (A wasm instance has one thread.)
    static HELD: RefCell<Owned> = RefCell::new(Owned::default());
}

struct Component;

impl Guest for Component {
    type Guard = LockGuard;

    fn default_options() -> Options {
        let defaults = protocol::Options::default();
        Options {
            prefix: defaults.prefix,
            verification_delay_ns: nanos(defaults.verification_delay),
            retry_interval_ns: nanos(defaults.retry_interval),
            timeout_ns: defaults.timeout.map(nanos),
            stale_after_ns: defaults.stale_after.map(nanos),
            queue: defaults.queue,
            max_clock_skew_ns: nanos(defaults.max_clock_skew),
            mode: Mode::Exclusive,
        }
    }

    fn acquire(path: String, options: Options) -> Result<Acquired, Error> {
        take(path, None, options)
    }

    fn acquire_as(path: String, token: String, options: Options) -> Result<Acquired, Error> {
        let token = Token::parse(&token).map_err(|why| to_wit(LockError::InvalidToken(why)))?;
        take(path, Some(token), options)
    }

    fn release(path: String, token: String) -> Result<(), Error> {
        release(&path, &token).map_err(to_wit)
    }

    fn abandon(path: String, token: String) -> Result<(), Error> {
        let result = protocol::abandon(&path, &token);
        if result.is_ok() {
            HELD.with_borrow_mut(|held| held.released(&path, &token));
        }
        result.map_err(to_wit)
    }

    fn refresh(path: String, token: String) -> Result<(), Error> {
        protocol::refresh(&path, &token).map_err(to_wit)
    }

    fn holds(path: String, token: String) -> Result<bool, Error> {
        protocol::holds(&path, &token).map_err(to_wit)
    }

    fn status(path: String) -> Result<Option<LockStatus>, Error> {
        let status = protocol::status(&path).map_err(to_wit)?;
        Ok(status.map(|status| LockStatus {
            fence: status.fence,
            age_ns: nanos(status.age),
            renewed_ns: status.renewed.map(nanos),
            stale: status.stale,
            holder: holder(status),
        }))
    }

    fn holders(path: String) -> Result<Vec<SharedHolder>, Error> {
        let holders = protocol::holders(&path).map_err(to_wit)?;
        Ok(holders
            .into_iter()
            .map(|(slot, status)| SharedHolder {
                slot,
                age_ns: nanos(status.age),
                renewed_ns: status.renewed.map(nanos),
                stale: status.stale,
                holder: holder(status),
            })
            .collect())
    }
}

/// A lock held through this instance until released or dropped.
pub struct LockGuard {
    path: String,
    token: String,
    fence: u64,
    slot: Option<u32>,
    /// Released through this guard (or found no longer ours by a release).
    released: Cell<bool>,
}

impl GuestGuard for LockGuard {
    fn acquire(path: String, options: Options) -> Result<exports::uuidlock::lock::lock::Guard, Error> {
        let acquired = take(path.clone(), None, options)?;
        Ok(exports::uuidlock::lock::lock::Guard::new(LockGuard {
            path,
            token: acquired.token,
            fence: acquired.fence,
            slot: acquired.slot,
            released: Cell::new(false),
        }))
    }

    fn path(&self) -> String {
        self.path.clone()
    }

    fn token(&self) -> String {
        self.token.clone()
    }

    fn fence(&self) -> u64 {
        self.fence
    }

    fn slot(&self) -> Option<u32> {
        self.slot
    }

    fn refresh(&self) -> Result<(), Error> {
        if self.released.get() {
            return Err(Error::NotOwner);
        }
        protocol::refresh(&self.path, &self.token).map_err(to_wit)
    }

    fn holds(&self) -> Result<bool, Error> {
        if self.released.get() {
            return Ok(false);
        }
        protocol::holds(&self.path, &self.token).map_err(to_wit)
    }

    fn release(&self) -> Result<(), Error> {
        if self.released.get() {
            return Err(Error::NotOwner);
        }
        let result = release(&self.path, &self.token);
        // Ours no more, or released: never try again. An I/O error (a full
        // disk, a share gone away) leaves the lock ours, to release later
        // or on drop.
        if !matches!(result, Err(LockError::Io(_))) {
            self.released.set(true);
        }
        result.map_err(to_wit)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released.get() {
            let _ = release(&self.path, &self.token);
        }
    }
}

/// `release`, and the instance forgets the lock.
fn release(path: &str, token: &str) -> Result<(), LockError> {
    let result = protocol::release(path, token);
    if !matches!(result, Err(LockError::InvalidToken(_))) {
        HELD.with_borrow_mut(|held| held.released(path, token));
    }
    result
}

/// `acquire` (with a new token) or `acquire-as` (with the caller's).
fn take(path: String, token: Option<Token>, options: Options) -> Result<Acquired, Error> {
    let remembered = HELD.with_borrow(|held| held.token(&path));
    owned::refuse_retake(&path, "this instance", remembered, |token| protocol::holds(&path, token)).map_err(to_wit)?;
    let options = protocol::Options {
        prefix: options.prefix,
        verification_delay: Duration::from_nanos(options.verification_delay_ns),
        retry_interval: Duration::from_nanos(options.retry_interval_ns),
        timeout: options.timeout_ns.map(Duration::from_nanos),
        stale_after: options.stale_after_ns.map(Duration::from_nanos),
        queue: options.queue,
        max_clock_skew: Duration::from_nanos(options.max_clock_skew_ns),
        mode: match options.mode {
            Mode::Exclusive => crate::Mode::Exclusive,
            Mode::Shared => crate::Mode::Shared,
            Mode::Slots(n) => crate::Mode::Slots(n),
        },
    };
    let acquired = match token {
        None => protocol::acquire(&path, &options),
        Some(token) => protocol::acquire_as(&path, token, &options),
    }
    .map_err(to_wit)?;
    let token = acquired.token.into_string();
    HELD.with_borrow_mut(|held| held.taken(path, token.clone()));
    Ok(Acquired { token, fence: acquired.fence, slot: acquired.slot })
}

fn holder(status: Status) -> Holder {
    match status.marker {
        Marker::Uuidlock(held) => Holder::Uuidlock(lock_info(held)),
        Marker::Foreign(shown) => Holder::Foreign(shown),
    }
}

fn lock_info(held: Held) -> LockInfo {
    LockInfo {
        prefix: held.token.prefix().to_owned(),
        token: held.token.into_string(),
        stale_after_ns: held.stale_after.map(nanos),
    }
}

fn to_wit(error: LockError) -> Error {
    // Messages cross as one line, as they are shown.
    let message = error.to_string();
    match error {
        LockError::Timeout => Error::Timeout,
        LockError::NotOwner => Error::NotOwner,
        LockError::AlreadyHeld(_) => Error::AlreadyHeld(message),
        LockError::InvalidPath(_) => Error::InvalidPath(message),
        LockError::InvalidOptions(_) => Error::InvalidOptions(message),
        LockError::InvalidToken(_) => Error::InvalidToken(message),
        LockError::OutsideSandbox(_) => Error::OutsideSandbox(message),
        LockError::Io(_) => Error::Io(message),
    }
}

export!(Component);
