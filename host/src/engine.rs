//! The wasmtime side: one engine, the guest compiled once (and cached on
//! disk), linkers with WASI, and stores with the granted directories.
//!
//! One piece of WASI is replaced: the component's sleeps. wasmtime-wasi
//! times a component's `subscribe-duration` with tokio's timer, which counts
//! whole milliseconds (wasmtime issue #14364), so a guest that asks to sleep
//! 100 µs between attempts sleeps 1 to 2 ms; under contention that gap is
//! most of a hand-off. Our guest only ever sleeps (Rust's `thread::sleep`
//! through the preview 1 adapter: one subscription, then `poll`), and its
//! stores may block their thread, so its sleeps are timed by the thread
//! instead ([`ThreadSleep`]). The command module needs nothing: wasmtime's
//! preview 1 host already sleeps with the thread.
//!
//! The guest's absolute-time sleeps (`subscribe-instant`) are the queue's
//! waits for the lock file to go; they are timed by the thread too, and end
//! early when it goes (`crate::wake`). For that the instance's
//! monotonic clock is ours ([`GuestClock`]), so that an instant the guest
//! names is an [`Instant`] here.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{self, ResourceTable};
use wasmtime::error::Context;
use wasmtime::Result;
use wasmtime::{Engine, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p2::Pollable;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::interrupt::Interrupt;
use crate::wake::{Ender, Wake};

/// The component, as built by `build.rs`.
pub const COMPONENT_WASM: &[u8] = include_bytes!(env!("UUIDLOCK_COMPONENT_WASM"));
/// The command module (`uuidlock.wasm`), as built by `build.rs`.
pub const COMMAND_WASM: &[u8] = include_bytes!(env!("UUIDLOCK_COMMAND_WASM"));

/// The generated bindings of the `guest` world of `wit/`; the rest of the host uses these types.
pub mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "guest" });
    pub use exports::uuidlock::lock::types::{Acquired, Error, Holder, LockStatus, Mode, Options, SharedHolder};
}

/// A directory granted to the guest: `host` is visible inside as `guest`.
#[derive(Clone, Debug)]
pub struct Grant {
    pub host: PathBuf,
    pub guest: String,
    /// The guest may only read there: it can say who holds a lock
    /// (`status`, `holds`), but take, release or break none. A plugin host
    /// grants a plugin's locks what it grants the plugin's files.
    pub read_only: bool,
}

impl Grant {
    /// `host`, seen by the guest as `guest`, to read and write.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<String>) -> Grant {
        Grant { host: host.into(), guest: guest.into(), read_only: false }
    }

    /// `host`, seen by the guest as `guest`, only to read.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl Into<String>) -> Grant {
        Grant { read_only: true, ..Grant::new(host, guest) }
    }
}

/// The per-store state of a component instance.
pub struct ComponentState {
    ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    /// The runtime's interrupt, which this instance's sleeps honour.
    interrupt: Interrupt,
    /// How many sleeps the guest has asked for; see [`ThreadSleep`].
    pub(crate) sleeps: u64,
    /// What the guest's instant sleeps are about: the lock file of the
    /// acquire in progress, if any.
    pub(crate) wake: Wake,
    /// Instant 0 of the guest's monotonic clock.
    epoch: Instant,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// The engine with both guests compiled and linked, ready to instantiate.
/// Cheap to clone; build it once per process.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    interrupt: Interrupt,
    component: bindings::GuestPre<ComponentState>,
    command: wasmtime::InstancePre<WasiP1Ctx>,
}

impl Runtime {
    /// Compiles (or loads from the cache) the component and the command
    /// module and links them with WASI.
    ///
    /// # Errors
    /// Compiling or linking failed; the message says which.
    pub fn new() -> Result<Runtime> {
        Runtime::with_interrupt(Interrupt::new())
    }

    /// As [`Runtime::new`], with guest calls that honour `interrupt` (see
    /// [`crate::interrupt`]); the `uuidlock` binary shares one between its
    /// signal handler and its runtimes.
    ///
    /// # Errors
    /// As [`Runtime::new`].
    pub fn with_interrupt(interrupt: Interrupt) -> Result<Runtime> {
        let engine = Engine::default();

        let component = load_cached(
            &engine,
            COMPONENT_WASM,
            "component",
            |bytes| component::Component::new(&engine, bytes),
            |path| unsafe {
                // SAFETY: the file was written by `serialize` below, in the
                // user's own cache directory, under a name keyed on the exact
                // wasm bytes and engine configuration; wasmtime also checks its
                // header against this engine and refuses a mismatch.
                component::Component::deserialize_file(&engine, path)
            },
            |c| c.serialize(),
        )?;
        let mut linker = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).context("linking WASI p2 for the component")?;
        link_thread_sleep(&engine, &component, &mut linker)?;
        crate::sandbox_fs::link(&engine, &component, &mut linker)?;
        let component =
            bindings::GuestPre::new(linker.instantiate_pre(&component).context("pre-instantiating the component")?)
                .context("checking the component's exports against the guest world of wit/")?;

        let module = load_cached(
            &engine,
            COMMAND_WASM,
            "command",
            |bytes| Module::new(&engine, bytes),
            |path| unsafe {
                // SAFETY: as for the component above.
                Module::deserialize_file(&engine, path)
            },
            |m| m.serialize(),
        )?;
        let mut linker = wasmtime::Linker::new(&engine);
        p1::add_to_linker_sync(&mut linker, |cx| cx).context("linking WASI p1 for the command")?;
        let command = linker.instantiate_pre(&module).context("pre-instantiating the command module")?;

        Ok(Runtime { engine, interrupt, component, command })
    }

    /// The engine the guests run on: a plugin host makes its own linker and
    /// stores with it (see [`crate::plugin`]).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The interrupt that this runtime's guest calls honour: request it to
    /// stop them at their next sleep.
    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    /// A new component instance that sees exactly `grants`.
    pub(crate) fn instantiate(&self, grants: &[Grant]) -> Result<(Store<ComponentState>, bindings::Guest)> {
        let mut wasi = WasiCtxBuilder::new();
        // Our calls are synchronous: run file operations on this thread
        // instead of handing each to a blocking pool.
        wasi.allow_blocking_current_thread(true);
        preopen(&mut wasi, grants)?;
        let epoch = Instant::now();
        wasi.monotonic_clock(GuestClock { epoch });
        let state = ComponentState {
            ctx: wasi.build(),
            table: ResourceTable::new(),
            interrupt: self.interrupt.clone(),
            sleeps: 0,
            wake: Wake::default(),
            epoch,
        };
        let mut store = Store::new(&self.engine, state);
        let guest = self.component.instantiate(&mut store).context("instantiating the component")?;
        Ok((store, guest))
    }

    /// Runs the command module like `wasmtime run --dir HOST::GUEST uuidlock.wasm ARGS`.
    ///
    /// # Errors
    /// A directory could not be granted, or the guest trapped.
    pub fn run_command(&self, args: &[&str], grants: &[Grant]) -> Result<CommandOutput> {
        let stdout = MemoryOutputPipe::new(64 << 10);
        let stderr = MemoryOutputPipe::new(64 << 10);
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true);
        wasi.arg("uuidlock").args(args).stdout(stdout.clone()).stderr(stderr.clone());
        preopen(&mut wasi, grants)?;
        let mut store = Store::new(&self.engine, wasi.build_p1());
        let instance = self.command.instantiate(&mut store).context("instantiating the command module")?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start").context("finding _start")?;
        let code = match start.call(&mut store, ()) {
            Ok(()) => 0,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => return Err(e).context("the uuidlock command trapped"),
            },
        };
        let text = |pipe: &MemoryOutputPipe| String::from_utf8_lossy(&pipe.contents()).into_owned();
        Ok(CommandOutput { code, stdout: text(&stdout), stderr: text(&stderr) })
    }
}

/// What a run of the command module printed, and its exit code.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Replaces the component's `monotonic-clock.subscribe-duration` and
/// `subscribe-instant` with ones whose pollables sleep the calling thread,
/// the instant ones until the awaited lock file goes (see the module docs).
fn link_thread_sleep(
    engine: &Engine,
    component: &component::Component,
    linker: &mut component::Linker<ComponentState>,
) -> Result<()> {
    // The interface under the version the guest's adapter imports. It must be
    // the version wasmtime-wasi defines (both crates come from one wasmtime
    // release, 48), or this makes a second instance holding only this
    // function and instantiating fails, naming the missing ones.
    let imports = component.component_type();
    let Some(clock) =
        imports.imports(engine).map(|(name, _)| name).find(|name| name.starts_with("wasi:clocks/monotonic-clock@"))
    else {
        return Ok(()); // a guest that never sleeps
    };
    linker.allow_shadowing(true);
    let mut clock = linker.instance(clock)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, ComponentState>, (nanos,): (u64,)| {
            // A deadline too far to represent: sleep for ever, as wasmtime-wasi does.
            let until = Instant::now().checked_add(Duration::from_nanos(nanos));
            Ok((subscribe_sleep(store.data_mut(), until, None)?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: wasmtime::StoreContextMut<'_, ComponentState>, (when,): (u64,)| {
            let state = store.data_mut();
            let until = state.epoch.checked_add(Duration::from_nanos(when));
            let ender = state.wake.ender();
            Ok((subscribe_sleep(state, until, ender)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A pollable for a sleep until `until`, which `ender` may end early.
fn subscribe_sleep(
    state: &mut ComponentState,
    until: Option<Instant>,
    ender: Option<Ender>,
) -> wasmtime::Result<wasmtime::component::Resource<wasmtime_wasi::p2::DynPollable>> {
    // An interrupted call stops here, in a wait, where it holds no
    // claim and has nothing half done (see crate::interrupt).
    if let Some(reason) = state.interrupt.requested() {
        wasmtime::bail!("interrupted ({reason})");
    }
    state.sleeps += 1;
    let sleep = state.table.push(ThreadSleep { until, interrupt: state.interrupt.clone(), ender })?;
    wasmtime_wasi::p2::subscribe(&mut state.table, sleep)
}

/// The guest's monotonic clock: nanoseconds since the instance was made.
struct GuestClock {
    epoch: Instant,
}

impl wasmtime_wasi::HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().try_into().unwrap_or(u64::MAX)
    }
}

/// A sleep timed by the thread (`std::thread::sleep`, precise to tens of
/// microseconds) rather than by tokio's millisecond timer.
///
/// Its first poll only answers whether the deadline has passed, so that
/// `pollable.ready` (one poll) tells the truth without blocking; `poll` and
/// `block` poll again and sleep the thread, which is what a synchronous call
/// into our guest does anyway. A guest that polled it beside other pollables
/// would find them blocked until the deadline; ours never does.
struct ThreadSleep {
    /// `None`: too far to represent, never.
    until: Option<Instant>,
    interrupt: Interrupt,
    /// Ends the sleep when the awaited lock file goes (instant sleeps only).
    ender: Option<Ender>,
}

#[wasmtime_wasi::async_trait]
impl Pollable for ThreadSleep {
    async fn ready(&mut self) {
        if self.until.is_some_and(|until| until <= Instant::now()) {
            return;
        }
        NotYet(false).await;
        // In slices, so that an interrupt ends the sleep within one.
        while self.interrupt.requested().is_none() {
            let left = self.until.map_or(INTERRUPT_SLICE, |until| until.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return;
            }
            match &mut self.ender {
                Some(ender) => {
                    if ender.wait(left.min(INTERRUPT_SLICE)) {
                        return;
                    }
                }
                None => std::thread::sleep(left.min(INTERRUPT_SLICE)),
            }
        }
    }
}

use crate::interrupt::SLICE as INTERRUPT_SLICE;

/// Pending once (asking to be polled again at once), then ready.
struct NotYet(bool);

impl std::future::Future for NotYet {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn preopen(wasi: &mut WasiCtxBuilder, grants: &[Grant]) -> Result<()> {
    for grant in grants {
        let perms = if grant.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        wasi.preopened_dir(&grant.host, &grant.guest, perms).with_context(|| {
            format!("cannot grant {} to the guest: it must be an existing directory", grant.host.display())
        })?;
    }
    Ok(())
}

/// Compiles `wasm`, going through a cache of compiled code on disk so that
/// each process does not compile the guest again. Any cache failure falls
/// back to compiling.
fn load_cached<T>(
    engine: &Engine,
    wasm: &[u8],
    name: &str,
    compile: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
    deserialize: impl FnOnce(&Path) -> wasmtime::Result<T>,
    serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
) -> Result<T> {
    let path = cache_dir().map(|dir| {
        let mut hasher = DefaultHasher::new();
        wasm.hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        dir.join(format!("{name}-{:016x}.cwasm", hasher.finish()))
    });
    if let Some(path) = &path {
        if only_we_can_write(path) {
            if let Ok(compiled) = deserialize(path) {
                return Ok(compiled);
            }
        }
    }
    let compiled = compile(wasm).with_context(|| format!("compiling the uuidlock {name}"))?;
    if let Some(path) = &path {
        // Best effort: without a cache every process compiles again.
        if let Ok(bytes) = serialize(&compiled) {
            let _ = store(path, &bytes);
        }
    }
    Ok(compiled)
}

/// Writes a cache file aside under a name no other thread or process uses,
/// then renames it into place, so that no reader ever sees half a file and
/// no writer truncates a file another process has mapped.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let aside = dir.join(format!(".{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&aside).and_then(|mut file| file.write_all(bytes));
    let renamed = written.and_then(|()| std::fs::rename(&aside, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    renamed
}

/// Loading compiled code runs it, so only a file that this user alone can
/// write, in a directory this user alone can write, is loaded.
fn only_we_can_write(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // The owner of /proc/self is this process's user, where /proc exists.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        let private =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o022 == 0 && me.is_none_or(|uid| m.uid() == uid));
        private(path) && path.parent().is_some_and(private)
    }
    #[cfg(not(unix))]
    {
        path.exists()
    }
}

/// `$UUIDLOCK_CACHE_DIR` (empty: no cache), else `$XDG_CACHE_HOME/uuidlock`,
/// else `~/.cache/uuidlock`.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("UUIDLOCK_CACHE_DIR") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("uuidlock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuidlock::protocol::nanos;

    /// A temporary directory, its grant, and a lock in it held natively.
    fn held_lock() -> (tempfile::TempDir, Grant, String, uuidlock::protocol::Acquired) {
        let dir = tempfile::tempdir().unwrap();
        let grant = crate::paths::grant(dir.path()).unwrap();
        let lock = format!("{}/job.lock", grant.guest);
        let fast = uuidlock::Options { verification_delay: Duration::ZERO, ..uuidlock::Options::default() };
        let held = uuidlock::protocol::acquire(&lock, &fast).unwrap();
        (dir, grant, lock, held)
    }

    #[test]
    fn the_components_sleeps_are_timed_by_the_thread() {
        let (_dir, grant, lock, _held) = held_lock();

        let runtime = Runtime::new().unwrap();
        let (mut store, guest) = runtime.instantiate(&[grant]).unwrap();
        let options = bindings::Options {
            prefix: String::new(),
            verification_delay_ns: 0,
            retry_interval_ns: nanos(Duration::from_millis(1)),
            timeout_ns: Some(nanos(Duration::from_millis(20))),
            stale_after_ns: None,
            queue: true,
            max_clock_skew_ns: 0,
            mode: bindings::Mode::Exclusive,
        };
        let result = guest.uuidlock_lock_lock().call_acquire(&mut store, &lock, &options).unwrap();
        assert!(matches!(result, Err(bindings::Error::Timeout)), "{result:?}");
        // The guest slept between attempts, and through our clock, not wasmtime-wasi's.
        assert!(store.data().sleeps > 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_head_takes_a_released_lock_at_once_not_at_its_next_look() {
        let (dir, _grant, lock, held) = held_lock();

        let runtime = Runtime::new().unwrap();
        let locker = crate::Locker::new(&runtime, &[dir.path()]).unwrap();
        // A 40 s retry interval: the head looks every 10 s, so only the
        // host's wake can hand it the lock within seconds of the release.
        let patient = crate::Options {
            verification_delay: Duration::ZERO,
            retry_interval: Duration::from_secs(40),
            timeout: Some(Duration::from_secs(120)),
            ..crate::Options::default()
        };
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let guard = locker.acquire(&lock, &patient).unwrap();
                (Instant::now(), guard.release())
            })
        };
        // Long enough for the waiter to join the queue and sleep.
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiter.is_finished(), "the waiter took a held lock");
        let released = Instant::now();
        uuidlock::protocol::release(&lock, held.token.as_str()).unwrap();
        let (acquired, release) = waiter.join().unwrap();
        release.unwrap();
        let after = acquired.duration_since(released);
        assert!(after < Duration::from_secs(5), "the head took the lock {after:?} after its release");
    }
}
