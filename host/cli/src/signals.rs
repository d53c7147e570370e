//! Signals for the native binary: SIGINT, SIGTERM and SIGHUP become an
//! [`Interrupt`] request that guest calls honour at their next sleep
//! (`uuidlock_host::interrupt`), and an interrupted acquire is undone.
//!
//! A step that never ends must not keep the process either: the guest
//! looks at a file's type before it opens it (WASI cannot open without
//! blocking), and someone who can write the lock's directory can swap a
//! FIFO in between the look and the open. So while a call is [`arm`]ed, an
//! interrupt it has not honoured within [`GRACE`] ends the process anyway
//! (128+N), after undoing the acquire in flight from another instance; a
//! second signal ends it at once.
//!
//! The binary's runtimes share one [`Interrupt`] ([`interrupt`]), which
//! [`catch`] requests; nothing here runs unless the binary calls it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use uuidlock_host::{Interrupt, LockError, Locker, Runtime, Token};

/// The interrupt this process's runtimes share, requested by [`catch`].
pub fn interrupt() -> &'static Interrupt {
    static SHARED: OnceLock<Interrupt> = OnceLock::new();
    SHARED.get_or_init(Interrupt::new)
}

/// A runtime whose guest calls honour this process's signals.
///
/// # Errors
/// As [`Runtime::new`].
pub fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::with_interrupt(interrupt().clone())?)
}

/// How long an armed call has to honour an interrupt before the process
/// ends without it: longer than any step (a busy delete on a share is
/// retried for at most 2 s), short enough for a person at Ctrl-C.
pub const GRACE: Duration = Duration::from_secs(5);

/// Whether a call that must end on an interrupt is running, and the acquire
/// to undo if it does not.
static ARMED: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: Mutex<Option<(Locker, PathBuf, Token)>> = Mutex::new(None);

/// The signal that asked to interrupt, if one did.
pub fn requested() -> Option<i32> {
    interrupt().requested()
}

/// Asks running and future guest calls to stop at their next sleep.
pub fn request(signal: i32) {
    interrupt().request(signal);
}

/// Catches SIGINT, SIGTERM and SIGHUP from now on: each becomes a request,
/// and is passed to `forward` with whether a process sent it (`kill`), as
/// opposed to the terminal (Ctrl-C reaches the whole foreground process
/// group by itself). `uuidlock run` forwards to its child.
///
/// # Errors
/// The handlers could not be installed.
pub fn catch(forward: impl Fn(i32, bool) + Send + 'static) -> std::io::Result<()> {
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::low_level::siginfo::Cause;
    let mut signals = signal_hook::iterator::SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new().name("uuidlock-signals".into()).spawn(move || {
        for origin in signals.forever() {
            let signal = origin.signal;
            let again = requested().is_some();
            request(signal);
            if ARMED.load(Ordering::SeqCst) {
                if again {
                    stop(signal, "a second signal");
                }
                watch(signal);
            }
            forward(signal, matches!(origin.cause, Cause::Sent(_)));
        }
    })?;
    Ok(())
}

/// While the guard lives, an interrupt this call does not honour within
/// [`GRACE`] ends the process; `undo` names the acquire in flight, which is
/// then undone from another instance first. Guards nest: dropping one puts
/// back what was armed before it.
pub fn arm(undo: Option<(&Locker, &Path, &Token)>) -> Armed {
    let undo = undo.map(|(locker, file, token)| (locker.clone(), file.to_owned(), token.clone()));
    let previous = std::mem::replace(&mut *in_flight(), undo);
    let was_armed = ARMED.swap(true, Ordering::SeqCst);
    if let Some(signal) = requested() {
        watch(signal);
    }
    Armed { previous, was_armed }
}

/// See [`arm`].
pub struct Armed {
    previous: Option<(Locker, PathBuf, Token)>,
    was_armed: bool,
}

impl Drop for Armed {
    fn drop(&mut self) {
        *in_flight() = self.previous.take();
        ARMED.store(self.was_armed, Ordering::SeqCst);
    }
}

fn in_flight() -> std::sync::MutexGuard<'static, Option<(Locker, PathBuf, Token)>> {
    IN_FLIGHT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Ends the process [`GRACE`] from now if the armed call is still running.
fn watch(signal: i32) {
    static WATCHING: AtomicBool = AtomicBool::new(false);
    if WATCHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = std::thread::Builder::new().name("uuidlock-watchdog".into()).spawn(move || {
        std::thread::sleep(GRACE);
        if ARMED.load(Ordering::SeqCst) {
            stop(signal, &format!("a filesystem call that did not end within {GRACE:?} of it"));
        }
    });
}

/// Ends the process with 128+`signal`, undoing the acquire in flight first
/// (for at most [`GRACE`]: the undo may meet the same blocking file).
fn stop(signal: i32, why: &str) -> ! {
    let undo = in_flight().clone();
    let outcome = match undo {
        None => "nothing was in flight to undo".to_owned(),
        Some((locker, file, token)) => {
            let (done, result) = std::sync::mpsc::channel();
            let name = file.display().to_string();
            let shown = token.to_string();
            let _ = std::thread::Builder::new().spawn(move || {
                let _ = done.send(locker.undo_acquire(&file, &token));
            });
            match result.recv_timeout(GRACE) {
                Ok(Ok(())) => format!("the acquire of {name} was undone"),
                Ok(Err(e)) => format!("undoing the acquire of {name} failed: {e}"),
                Err(_) => format!(
                    "undoing the acquire of {name} did not end either; files named by token {shown} may be left \
                     (remove them with `uuidlock release {name} {shown}`)"
                ),
            }
        }
    };
    eprintln!(
        "uuidlock: interrupted by signal {signal}: stopping after {why} (something beside the lock may block: a FIFO \
         put there by someone who can write its directory); {outcome}"
    );
    std::process::exit(crate::exit::signal(signal));
}

/// How an acquire with a caller-made token ended.
pub enum Settled<T> {
    /// No interrupt: the acquire's own result.
    Done(Result<T, LockError>),
    /// An interrupt came: whatever the acquire took was dropped and undone.
    Interrupted { signal: i32, message: String },
}

/// Runs `acquire`, an acquire of the lock file `file` with `token` through
/// `locker`, armed ([`arm`]); if an interrupt was requested meanwhile, what
/// it returned is dropped (a guard or lease releases) and the acquire undone
/// ([`Locker::undo_acquire`]), whatever point it had reached.
pub fn acquire_undoable<T>(
    locker: &Locker,
    file: &Path,
    token: &Token,
    acquire: impl FnOnce() -> Result<T, LockError>,
) -> Settled<T> {
    let armed = arm(Some((locker, file, token)));
    let taken = acquire();
    let Some(signal) = requested() else { return Settled::Done(taken) };
    drop(taken);
    let undone = match locker.undo_acquire(file, token) {
        Ok(()) => "nothing of it was left behind".to_owned(),
        Err(e) => format!("undoing it failed: {e}"),
    };
    drop(armed);
    let message = format!("interrupted by signal {signal} while acquiring {}; {undone}", file.display());
    Settled::Interrupted { signal, message }
}
