//! The lock as a wasmtime host provides it to its plugins: a plugin whose
//! world includes `uuidlock:lock/plugin` imports `uuidlock:lock/lock`, and
//! the host serves that import from its own linker, with no composition.
//!
//! Each plugin store holds a [`PluginLock`]: a uuidlock component instance
//! of its own, granted exactly the directories the host grants that plugin,
//! under the same guest names. A plugin's lock path therefore means what
//! its own file calls mean, and it can lock nothing outside its grants
//! (`outside-sandbox`, nothing touched), whatever another plugin was
//! granted.
//!
//! ```no_run
//! use uuidlock_host::plugin::{self, PluginLock};
//! use uuidlock_host::{Grant, Runtime};
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct PluginState {
//!     wasi: WasiCtx,
//!     table: ResourceTable,
//!     lock: PluginLock,
//! }
//!
//! impl WasiView for PluginState {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! let runtime = Runtime::new()?;
//! let mut linker = Linker::<PluginState>::new(runtime.engine());
//! wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//! plugin::add_to_linker(&mut linker, |state| &mut state.lock)?;
//! // For each plugin: the same grants for its files and for its locks.
//! let grants = [Grant::new("/srv/plugin-data", "/data")];
//! let lock = PluginLock::new(&runtime, &grants)?;
//! # Ok::<(), wasmtime::Error>(())
//! ```
//!
//! Every call runs in the plugin's instance, on the plugin's thread. Calls
//! honour the runtime's [`Interrupt`](crate::Interrupt): an acquire cut
//! short by it is undone (`abandon`, inside the sandbox) and the plugin's
//! call traps with the interrupt, so a host can stop a plugin stuck waiting
//! for a lock and leave nothing behind. Acquisitions use tokens this module
//! makes for that reason; the plugin sees them as its own.

use std::collections::HashMap;

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{Result, Store};

use crate::engine::{bindings as guest, ComponentState};
use crate::{Grant, Runtime, Token};

/// The generated bindings of the `plugin` world: what a plugin imports.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: trappable },
        with: {
            "uuidlock:lock/lock.guard": super::PluginGuard,
        },
    });
}

use bindings::uuidlock::lock::{lock as lock_api, types};

/// The lock a plugin's store holds: a uuidlock instance granted the
/// plugin's directories, and the plugin's guards. Dropping it (with the
/// plugin's store, when the plugin ends, exits or traps) releases the locks
/// its guards still hold, as dropping each guard would have.
pub struct PluginLock {
    runtime: Runtime,
    grants: Vec<Grant>,
    /// `None` after a trap, until the next call makes a new one.
    instance: Option<(Store<ComponentState>, guest::Guest)>,
    guards: ResourceTable,
    /// The guards that still hold their lock, by the guard's handle: what
    /// dropping this releases.
    holding: HashMap<u32, (String, String)>,
}

/// What a plugin's `guard` is: the lock it took, by token.
pub struct PluginGuard {
    path: String,
    token: String,
    fence: u64,
    slot: Option<u32>,
    /// Released through this guard, or found no longer ours by a release.
    released: bool,
}

impl PluginLock {
    /// The lock for one plugin, which sees `grants` (each `host` directory
    /// as `guest`): the grants its host gives its WASI context.
    ///
    /// # Errors
    /// A directory cannot be opened, or the instance cannot be made.
    pub fn new(runtime: &Runtime, grants: &[Grant]) -> Result<PluginLock> {
        let instance = runtime.instantiate(grants)?;
        Ok(PluginLock {
            runtime: runtime.clone(),
            grants: grants.to_vec(),
            instance: Some(instance),
            guards: ResourceTable::new(),
            holding: HashMap::new(),
        })
    }

    /// Calls into the instance (a new one if the last trapped). A trap is
    /// the plugin's trap too; the instance is then discarded.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&guest::Guest, &mut Store<ComponentState>) -> wasmtime::Result<R>,
    ) -> wasmtime::Result<R> {
        let (mut store, guest) = match self.instance.take() {
            Some(instance) => instance,
            None => self.runtime.instantiate(&self.grants)?,
        };
        let result = f(&guest, &mut store)?;
        self.instance = Some((store, guest));
        Ok(result)
    }

    /// `acquire-as` with a token made here, so that a call cut short (a
    /// trap: the runtime's interrupt) is undone before the trap goes on.
    fn take(
        &mut self,
        path: &str,
        options: &types::Options,
    ) -> wasmtime::Result<Result<types::Acquired, types::Error>> {
        let token = match Token::generate(&options.prefix) {
            Ok(token) => token.to_string(),
            Err(why) => return Ok(Err(types::Error::InvalidOptions(why))),
        };
        let options = to_guest_options(options);
        let taken = self.call(|guest, store| guest.uuidlock_lock_lock().call_acquire_as(store, path, &token, &options));
        match taken {
            Ok(result) => Ok(result.map(from_guest_acquired).map_err(from_guest_error)),
            Err(trap) => {
                // A new instance: this one trapped mid-call. What the undo
                // finds to remove is only ever this token's.
                let _ = self.call(|guest, store| guest.uuidlock_lock_lock().call_abandon(store, path, &token));
                Err(trap)
            }
        }
    }

    fn guard(&self, guard: &Resource<PluginGuard>) -> wasmtime::Result<&PluginGuard> {
        Ok(self.guards.get(guard)?)
    }
}

impl Drop for PluginLock {
    fn drop(&mut self) {
        // The plugin ended without dropping these guards (it exited, trapped,
        // or leaked them): release their locks now, as their drop would
        // have. Errors have no one left to see them.
        for (_, (path, token)) in std::mem::take(&mut self.holding) {
            let _ = self.call(|guest, store| guest.uuidlock_lock_lock().call_release(store, &path, &token));
        }
    }
}

/// Adds `uuidlock:lock/types` and `uuidlock:lock/lock` to a plugin linker;
/// `get` finds the plugin's [`PluginLock`] in its store.
///
/// # Errors
/// The linker already defines them.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut PluginLock) -> Result<()> {
    bindings::Plugin::add_to_linker::<T, PluginLockData>(linker, get)
}

/// The `HasData` of [`add_to_linker`]: calls see the plugin's `PluginLock`.
struct PluginLockData;

impl wasmtime::component::HasData for PluginLockData {
    type Data<'a> = &'a mut PluginLock;
}

impl types::Host for PluginLock {}

impl lock_api::Host for PluginLock {
    fn default_options(&mut self) -> wasmtime::Result<types::Options> {
        let options = self.call(|guest, store| guest.uuidlock_lock_lock().call_default_options(store))?;
        Ok(from_guest_options(options))
    }

    fn acquire(
        &mut self,
        path: String,
        options: types::Options,
    ) -> wasmtime::Result<Result<types::Acquired, types::Error>> {
        self.take(&path, &options)
    }

    fn acquire_as(
        &mut self,
        path: String,
        token: String,
        options: types::Options,
    ) -> wasmtime::Result<Result<types::Acquired, types::Error>> {
        let options = to_guest_options(&options);
        let result =
            self.call(|guest, store| guest.uuidlock_lock_lock().call_acquire_as(store, &path, &token, &options))?;
        Ok(result.map(from_guest_acquired).map_err(from_guest_error))
    }

    fn abandon(&mut self, path: String, token: String) -> wasmtime::Result<Result<(), types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_abandon(store, &path, &token))?;
        Ok(result.map_err(from_guest_error))
    }

    fn release(&mut self, path: String, token: String) -> wasmtime::Result<Result<(), types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_release(store, &path, &token))?;
        Ok(result.map_err(from_guest_error))
    }

    fn refresh(&mut self, path: String, token: String) -> wasmtime::Result<Result<(), types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_refresh(store, &path, &token))?;
        Ok(result.map_err(from_guest_error))
    }

    fn holds(&mut self, path: String, token: String) -> wasmtime::Result<Result<bool, types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_holds(store, &path, &token))?;
        Ok(result.map_err(from_guest_error))
    }

    fn status(&mut self, path: String) -> wasmtime::Result<Result<Option<types::LockStatus>, types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_status(store, &path))?;
        Ok(result.map(|status| status.map(from_guest_status)).map_err(from_guest_error))
    }

    fn holders(&mut self, path: String) -> wasmtime::Result<Result<Vec<types::SharedHolder>, types::Error>> {
        let result = self.call(|guest, store| guest.uuidlock_lock_lock().call_holders(store, &path))?;
        Ok(result.map(|holders| holders.into_iter().map(from_guest_holder).collect()).map_err(from_guest_error))
    }
}

impl lock_api::HostGuard for PluginLock {
    fn acquire(
        &mut self,
        path: String,
        options: types::Options,
    ) -> wasmtime::Result<Result<Resource<PluginGuard>, types::Error>> {
        let acquired = match self.take(&path, &options)? {
            Ok(acquired) => acquired,
            Err(error) => return Ok(Err(error)),
        };
        let held = (path.clone(), acquired.token.clone());
        let guard = self.guards.push(PluginGuard {
            path,
            token: acquired.token,
            fence: acquired.fence,
            slot: acquired.slot,
            released: false,
        })?;
        self.holding.insert(guard.rep(), held);
        Ok(Ok(guard))
    }

    fn path(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<String> {
        Ok(self.guard(&guard)?.path.clone())
    }

    fn token(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<String> {
        Ok(self.guard(&guard)?.token.clone())
    }

    fn fence(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<u64> {
        Ok(self.guard(&guard)?.fence)
    }

    fn slot(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<Option<u32>> {
        Ok(self.guard(&guard)?.slot)
    }

    fn refresh(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<Result<(), types::Error>> {
        let PluginGuard { path, token, released, .. } = self.guard(&guard)?;
        if *released {
            return Ok(Err(types::Error::NotOwner));
        }
        let (path, token) = (path.clone(), token.clone());
        lock_api::Host::refresh(self, path, token)
    }

    fn holds(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<Result<bool, types::Error>> {
        let PluginGuard { path, token, released, .. } = self.guard(&guard)?;
        if *released {
            return Ok(Ok(false));
        }
        let (path, token) = (path.clone(), token.clone());
        lock_api::Host::holds(self, path, token)
    }

    fn release(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<Result<(), types::Error>> {
        let PluginGuard { path, token, released, .. } = self.guard(&guard)?;
        if *released {
            return Ok(Err(types::Error::NotOwner));
        }
        let (path, token) = (path.clone(), token.clone());
        let result = lock_api::Host::release(self, path, token)?;
        // As the component's own guard: an I/O error leaves the lock ours,
        // to release again or on drop.
        if !matches!(result, Err(types::Error::Io(_))) {
            self.guards.get_mut(&guard)?.released = true;
            self.holding.remove(&guard.rep());
        }
        Ok(result)
    }

    fn drop(&mut self, guard: Resource<PluginGuard>) -> wasmtime::Result<()> {
        self.holding.remove(&guard.rep());
        let PluginGuard { path, token, released, .. } = self.guards.delete(guard)?;
        if !released {
            // Errors are the plugin's to see only through `release`.
            let _ = lock_api::Host::release(self, path, token)?;
        }
        Ok(())
    }
}

// The plugin's types and the guest's are generated apart (one world
// imports them, the other exports them); these carry values across.

fn to_guest_options(options: &types::Options) -> guest::Options {
    guest::Options {
        prefix: options.prefix.clone(),
        verification_delay_ns: options.verification_delay_ns,
        retry_interval_ns: options.retry_interval_ns,
        timeout_ns: options.timeout_ns,
        stale_after_ns: options.stale_after_ns,
        queue: options.queue,
        max_clock_skew_ns: options.max_clock_skew_ns,
        mode: match options.mode {
            types::Mode::Exclusive => guest::Mode::Exclusive,
            types::Mode::Shared => guest::Mode::Shared,
            types::Mode::Slots(n) => guest::Mode::Slots(n),
        },
    }
}

fn from_guest_options(options: guest::Options) -> types::Options {
    types::Options {
        prefix: options.prefix,
        verification_delay_ns: options.verification_delay_ns,
        retry_interval_ns: options.retry_interval_ns,
        timeout_ns: options.timeout_ns,
        stale_after_ns: options.stale_after_ns,
        queue: options.queue,
        max_clock_skew_ns: options.max_clock_skew_ns,
        mode: match options.mode {
            guest::Mode::Exclusive => types::Mode::Exclusive,
            guest::Mode::Shared => types::Mode::Shared,
            guest::Mode::Slots(n) => types::Mode::Slots(n),
        },
    }
}

fn from_guest_acquired(acquired: guest::Acquired) -> types::Acquired {
    types::Acquired { token: acquired.token, fence: acquired.fence, slot: acquired.slot }
}

fn from_guest_holder_kind(holder: guest::Holder) -> types::Holder {
    match holder {
        guest::Holder::Uuidlock(info) => types::Holder::Uuidlock(types::LockInfo {
            token: info.token,
            prefix: info.prefix,
            stale_after_ns: info.stale_after_ns,
        }),
        guest::Holder::Foreign(shown) => types::Holder::Foreign(shown),
    }
}

fn from_guest_holder(holder: guest::SharedHolder) -> types::SharedHolder {
    types::SharedHolder {
        slot: holder.slot,
        holder: from_guest_holder_kind(holder.holder),
        age_ns: holder.age_ns,
        renewed_ns: holder.renewed_ns,
        stale: holder.stale,
    }
}

fn from_guest_status(status: guest::LockStatus) -> types::LockStatus {
    types::LockStatus {
        holder: from_guest_holder_kind(status.holder),
        age_ns: status.age_ns,
        renewed_ns: status.renewed_ns,
        stale: status.stale,
        fence: status.fence,
    }
}

fn from_guest_error(error: guest::Error) -> types::Error {
    match error {
        guest::Error::Timeout => types::Error::Timeout,
        guest::Error::NotOwner => types::Error::NotOwner,
        guest::Error::AlreadyHeld(why) => types::Error::AlreadyHeld(why),
        guest::Error::InvalidPath(why) => types::Error::InvalidPath(why),
        guest::Error::InvalidOptions(why) => types::Error::InvalidOptions(why),
        guest::Error::InvalidToken(why) => types::Error::InvalidToken(why),
        guest::Error::OutsideSandbox(why) => types::Error::OutsideSandbox(why),
        guest::Error::Io(why) => types::Error::Io(why),
    }
}
