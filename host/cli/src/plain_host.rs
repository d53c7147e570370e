//! The component in wasmtime-wasi as it comes: the baseline, in `bench`
//! and in `contend --runner plain`, for any embedder that follows
//! wasmtime's documentation rather than using `uuidlock-host`.
//!
//! It is linked with `wasmtime_wasi::p2::add_to_linker_sync` and nothing
//! else, and granted one directory with `WasiCtxBuilder::preopened_dir`:
//! file calls go to wasmtime-wasi's blocking pool (a hand-off to another
//! thread and back for each), sleeps to tokio's millisecond timer, and no
//! wait ends at a release. With `allow_blocking`, the one setting an
//! embedder most needs to know of is added
//! (`WasiCtxBuilder::allow_blocking_current_thread`, which `uuidlock-host`
//! sets too): file calls run on the calling thread. Only the compiled code
//! is shared with `uuidlock-host` (the same bytes, the same bindings).
//! Nothing here is a way to use the lock: it exists to be measured.

use std::path::Path;

use uuidlock_host::engine::{bindings, COMPONENT_WASM};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{Engine, Error, Result, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The component compiled once for every plain host of a run: an engine
/// as it comes and the component in it.
pub struct Compiled {
    engine: Engine,
    component: Component,
}

impl Compiled {
    /// Compiles the component (no cache) in `Engine::default()`.
    ///
    /// # Errors
    /// Compiling failed.
    pub fn new() -> Result<Compiled> {
        let engine = Engine::default();
        let component = Component::new(&engine, COMPONENT_WASM).context("compiling the component")?;
        Ok(Compiled { engine, component })
    }
}

/// One instance of the component in a plain wasmtime-wasi host.
pub struct PlainHost {
    store: Store<State>,
    guest: bindings::Guest,
    options: bindings::Options,
}

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl PlainHost {
    /// Instantiates the `compiled` component with `dir` visible as
    /// `guest_dir`, with the guest's `default-options()` less the
    /// verification delay, as the bench's other subjects; with
    /// `allow_blocking`, file calls run on the calling thread.
    ///
    /// # Errors
    /// Linking or instantiating failed, or `dir` cannot be granted.
    pub fn new(compiled: &Compiled, dir: &Path, guest_dir: &str, allow_blocking: bool) -> Result<PlainHost> {
        let Compiled { engine, component } = compiled;
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).context("linking WASI p2")?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(allow_blocking);
        wasi.preopened_dir(dir, guest_dir, FsPerms::ReadWrite)
            .with_context(|| format!("cannot grant {} to the guest", dir.display()))?;
        let mut store = Store::new(engine, State { ctx: wasi.build(), table: ResourceTable::new() });
        let guest = bindings::Guest::instantiate(&mut store, component, &linker).context("instantiating")?;
        let mut options = guest.uuidlock_lock_lock().call_default_options(&mut store)?;
        options.verification_delay_ns = 0;
        Ok(PlainHost { store, guest, options })
    }

    /// Acquires and releases the lock at `path` (a guest path) once.
    ///
    /// # Errors
    /// The guest answered an error, or trapped.
    pub fn acquire_and_release(&mut self, path: &str) -> Result<()> {
        let acquired = match self.guest.uuidlock_lock_lock().call_acquire(&mut self.store, path, &self.options)? {
            Ok(acquired) => acquired,
            Err(e) => return Err(Error::msg(format!("acquire {path}: {e:?}"))),
        };
        match self.release(path, acquired.token)? {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::msg(format!("release {path}: {e:?}"))),
        }
    }

    /// Acquires the lock at `path` (a guest path) with `options`: the
    /// guest's answer, or `Err` if it trapped.
    pub fn acquire(
        &mut self,
        path: &str,
        options: &bindings::Options,
    ) -> Result<Result<bindings::Acquired, bindings::Error>> {
        self.guest.uuidlock_lock_lock().call_acquire(&mut self.store, path, options)
    }

    /// Releases the lock at `path` held with `token`: the guest's answer,
    /// or `Err` if it trapped.
    pub fn release(&mut self, path: &str, token: String) -> Result<Result<(), bindings::Error>> {
        self.guest.uuidlock_lock_lock().call_release(&mut self.store, path, &token)
    }
}
