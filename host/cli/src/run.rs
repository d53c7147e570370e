//! `uuidlock run PATH [options] -- CMD [ARGS...]`: a command under a lock,
//! as `flock(1)` runs one, with a lease that renews itself.
//!
//! 1. Take the lock as a [`Lease`] (always with a lifetime: `--stale-after`,
//!    or [`uuidlock_host::lease::DEFAULT_LIFETIME`]), with a token made here so that an
//!    interrupted acquire can be undone ([`crate::signals`]).
//! 2. Run CMD as a child with `UUIDLOCK_PATH`, `UUIDLOCK_TOKEN` and
//!    `UUIDLOCK_FENCE` in its environment (and `UUIDLOCK_SLOT`, with
//!    `--slots`); SIGINT, SIGTERM and SIGHUP sent
//!    to `uuidlock run` are passed on to it.
//! 3. When CMD exits, release and exit with its status (128+N for a child
//!    killed by signal N, as shells report it). After a SIGTERM, every
//!    process CMD started is gone first (SIGTERM again, SIGKILL after
//!    `--kill-after`), so that none runs once the lock is released.
//! 4. If the lease is lost, stop CMD: SIGTERM, then SIGKILL after
//!    `--kill-after`; exit with [`exit::LEASE_LOST`].
//!
//! If `uuidlock run` itself is killed (SIGKILL), renewals stop, and
//! contenders break the lock one lifetime (plus a retry interval) after the
//! last renewal.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Args;

use crate::exit;
use crate::signals::{self as interrupt, Settled};
use uuidlock::cli::{self, AcquireOptions};
use uuidlock_host::{lease, paths, Lease, LockError, Locker, Lost, Options, Token};

/// The flags of `uuidlock run`.
#[derive(Args, Debug)]
#[command(
    after_help = "run always holds the lock with a lifetime: --stale-after, or 30 s. It renews every third of it.

Exit codes: CMD's own status (128+N if a signal N killed it); 1 the lock stayed held until --timeout
(see --conflict-exit-code); 2 usage error; 4 outside the sandbox or I/O error; 75 the lease was lost
and CMD stopped; 126 CMD cannot be run; 127 CMD not found.

Examples:
  uuidlock run /srv/locks/backup.lock --timeout 0 -- rsync -a /data /backup
  uuidlock run /srv/locks/job.lock --stale-after 10 -- sh -c 'echo \"fence $UUIDLOCK_FENCE\"'"
)]
pub struct RunArgs {
    /// The lock file
    pub path: String,
    #[command(flatten)]
    pub options: AcquireOptions,
    /// The exit code when the lock stays held by someone else until --timeout
    #[arg(long, value_name = "CODE", default_value = "1", value_parser = clap::value_parser!(u8))]
    pub conflict_exit_code: u8,
    /// When the lease is lost, or after a SIGTERM, how long CMD and what it
    /// started get between SIGTERM and SIGKILL (at most 3600)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = kill_after)]
    pub kill_after: Duration,
    /// The command to run while holding the lock, and its arguments
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// `--kill-after`: seconds, at most an hour.
fn kill_after(value: &str) -> Result<Duration, String> {
    cli::seconds(value).and_then(|grace| {
        if grace <= Duration::from_secs(3600) {
            Ok(grace)
        } else {
            Err("at most 3600 seconds".into())
        }
    })
}

/// What ends the wait for CMD.
enum Event {
    Exited(io::Result<ExitStatus>),
    Lost(Lost),
}

/// `uuidlock run`: returns the exit code.
pub fn main(args: RunArgs) -> i32 {
    let fail = |code: i32, message: String| {
        eprintln!("uuidlock run: {}", cli::one_line(&message));
        code
    };
    let (options, _) = lease::with_lifetime(&args.options.options());
    if let Err(e) = options.check() {
        return fail(exit::USAGE, format!("{e}; see 'uuidlock run --help'"));
    }
    // Orphans of CMD's (a shell's background jobs) come to us, so that
    // stopping CMD stops all it started.
    become_subreaper();
    // The child's pid once it runs: signals go to it from then on.
    let child_pid = Arc::new(AtomicI32::new(0));
    let forward_to = child_pid.clone();
    let forwarding = interrupt::catch(move |signal, sent| {
        // The terminal's Ctrl-C reaches CMD by itself (it is in our process
        // group): passing it on too would deliver it twice.
        if sent {
            forward(forward_to.load(Ordering::SeqCst), signal);
        }
    });
    if let Err(e) = forwarding {
        return fail(exit::IO, format!("cannot catch signals: {e}"));
    }
    let (lease, locker, file) = match take(&args.path, &options) {
        Ok(taken) => taken,
        Err(Taken::Interrupted(signal, message)) => return fail(exit::signal(signal), message),
        Err(Taken::Failed(LockError::Timeout)) => {
            let message = format!("{} stayed held until the timeout; CMD was not run", args.path);
            return fail(i32::from(args.conflict_exit_code), message);
        }
        Err(Taken::Failed(e)) => return fail(cli::exit_code(&e), e.to_string()),
    };

    let mut command = Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    command.env("UUIDLOCK_PATH", &args.path);
    command.env("UUIDLOCK_TOKEN", lease.token().as_str());
    command.env("UUIDLOCK_FENCE", lease.fence().to_string());
    if let Some(slot) = lease.slot() {
        command.env("UUIDLOCK_SLOT", slot.to_string());
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let released = lease.release().err().map_or(String::new(), |e| format!(" (releasing: {e})"));
            let (code, what) = match e.kind() {
                io::ErrorKind::NotFound => (exit::NOT_FOUND, "not found"),
                _ => (exit::NOT_EXECUTABLE, "cannot be run"),
            };
            let name = Path::new(&args.command[0]).display();
            return fail(code, format!("{name}: {what} ({e}); the lock was released{released}"));
        }
    };
    child_pid.store(child.id() as i32, Ordering::SeqCst);
    // A signal that came after the lock was taken but before CMD existed:
    // nobody passed it on yet, whoever sent it.
    if let Some(signal) = interrupt::requested() {
        forward(child.id() as i32, signal);
    }

    let (events, received) = mpsc::channel();
    let on_lost = events.clone();
    lease.on_lost(move |lost| {
        let _ = on_lost.send(Event::Lost(lost.clone()));
    });
    let waiter = std::thread::Builder::new().name("uuidlock-run-wait".into()).spawn(move || {
        let _ = events.send(Event::Exited(child.wait()));
    });
    if let Err(e) = waiter {
        // CMD runs, and nothing would wait for it: stop it, as on a lost lease.
        for pid in descendants() {
            signal(pid, libc::SIGKILL);
        }
        let _ = lease.release();
        return fail(
            exit::IO,
            format!("cannot start a thread to wait for CMD ({e}); CMD was killed and the lock released"),
        );
    }
    let code = match received.recv() {
        Ok(Event::Exited(status)) => {
            // Stopped by a SIGTERM passed on: what CMD started goes too,
            // before the lock does.
            if interrupt::requested() == Some(libc::SIGTERM) {
                stop_stragglers(args.kill_after);
            }
            let token = lease.token().clone();
            let released = lease.release();
            // Not released, but still ours: something in the way of the
            // release (a claim planted beside the lock, a directory that
            // does not let this user delete); the lock was held throughout.
            let kept = released.is_err() && locker.holds(&file, token.as_str()).unwrap_or(false);
            match &released {
                Err(e) if kept => eprintln!(
                    "uuidlock run: {}: CMD ran holding the lock, but it could not be released ({e}); it is no longer \
                     renewed, so contenders take it once its lifetime is over",
                    cli::one_line(&args.path)
                ),
                Err(e) => {
                    eprintln!("uuidlock run: {}: the lease was lost before CMD exited ({e})", cli::one_line(&args.path))
                }
                Ok(()) => {}
            }
            match (status, released) {
                (Ok(status), Ok(())) => status_code(status),
                (Ok(status), Err(_)) if kept => status_code(status),
                (Ok(_), Err(_)) => exit::LEASE_LOST,
                (Err(e), _) => fail(exit::IO, format!("cannot wait for CMD: {e}")),
            }
        }
        Ok(Event::Lost(lost)) => {
            eprintln!(
                "uuidlock run: the lease on {} was lost ({lost}); stopping CMD and every process it started \
                 (SIGTERM, SIGKILL after {:?})",
                cli::one_line(&args.path),
                args.kill_after
            );
            stop_all(&received, args.kill_after);
            drop(lease);
            exit::LEASE_LOST
        }
        Err(_) => fail(exit::IO, "lost track of CMD".into()),
    };
    reap_orphans();
    code
}

/// Stops CMD and everything it started: SIGTERM to every descendant of
/// ours, then SIGKILL to those still there after `grace`; returns once CMD
/// has exited.
fn stop_all(received: &mpsc::Receiver<Event>, grace: Duration) {
    for pid in descendants() {
        signal(pid, libc::SIGTERM);
    }
    let start = std::time::Instant::now();
    let mut exited = false;
    while start.elapsed() < grace {
        if !exited {
            exited = matches!(received.recv_timeout(Duration::from_millis(20)), Ok(Event::Exited(_)));
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        reap_orphans();
        if exited && descendants().is_empty() {
            return;
        }
    }
    for pid in descendants() {
        signal(pid, libc::SIGKILL);
    }
    if !exited {
        let _ = received.recv();
    }
}

/// After CMD exited on a SIGTERM passed on to every process it started:
/// any of them still there is signalled again until it is gone (one that
/// was between its fork and its program when the signal came can miss it),
/// and killed once `grace` is over.
fn stop_stragglers(grace: Duration) {
    let start = std::time::Instant::now();
    loop {
        reap_orphans();
        let left = descendants();
        if left.is_empty() {
            return;
        }
        let last = start.elapsed() >= grace;
        for pid in left {
            signal(pid, if last { libc::SIGKILL } else { libc::SIGTERM });
        }
        std::thread::sleep(Duration::from_millis(20));
        if last {
            reap_orphans();
            return;
        }
    }
}

/// Passes `signal` on to CMD (`pid`, 0 before it runs); SIGTERM, which asks
/// the job to stop, goes to every process CMD started as well.
fn forward(pid: i32, signal_number: i32) {
    if pid <= 0 {
        return;
    }
    if signal_number == libc::SIGTERM {
        for pid in descendants() {
            signal(pid, signal_number);
        }
    } else {
        signal(pid, signal_number);
    }
}

/// Makes this process the one that CMD's orphans are given to (Linux's
/// child subreaper), so that [`descendants`] finds them.
fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Every live process below this one (CMD, what it started, and orphans
/// of theirs given to us), from `/proc`; empty where there is none.
fn descendants() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let parents: Vec<(i32, i32)> = entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let mut fields = after.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            (state != "Z").then_some((pid, ppid))
        })
        .collect();
    let mut found = vec![std::process::id() as i32];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        at += 1;
    }
    found.remove(0);
    found
}

/// Collects orphans given to us that have exited (never CMD itself, whose
/// status its own thread waits for).
fn reap_orphans() {
    for pid in zombies() {
        // SAFETY: waitpid takes a pid, a null status pointer and flags.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    }
}

/// Our children that have exited and not been waited for, but CMD.
fn zombies() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(children) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else { return Vec::new() };
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat[stat.rfind(')')? + 1..].split_whitespace().next().map(|state| state == "Z"))
                .unwrap_or(false)
        })
        .collect()
}

/// Why no lease was taken.
enum Taken {
    Failed(LockError),
    /// A signal cut the acquire short; it was undone.
    Interrupted(i32, String),
}

/// Takes the lease on the lock file `path`, granting its directory; with
/// the locker and the host path of the lock file.
fn take(path: &str, options: &Options) -> Result<(Lease, Locker, std::path::PathBuf), Taken> {
    let (file, dir) = paths::lock_file_and_dir(Path::new(path)).map_err(Taken::Failed)?;
    let runtime =
        crate::signals::runtime().map_err(|e| Taken::Failed(LockError::Io(format!("cannot start wasm: {e:#}"))))?;
    let locker = Locker::new(&runtime, &[&dir])
        .map_err(|e| Taken::Failed(LockError::Io(format!("cannot grant {}: {e:#}", dir.display()))))?;
    let token = Token::generate(&options.prefix).map_err(|why| Taken::Failed(LockError::InvalidOptions(why)))?;
    match interrupt::acquire_undoable(&locker, &file, &token, || locker.lease_as(&file, token.clone(), options)) {
        Settled::Done(result) => result.map(|lease| (lease, locker.clone(), file.clone())).map_err(Taken::Failed),
        Settled::Interrupted { signal, message } => Err(Taken::Interrupted(signal, message)),
    }
}

/// Sends `signal_number` to the process `pid`.
fn signal(pid: i32, signal_number: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe { libc::kill(pid, signal_number) };
}

/// A child's exit status as a shell reports it: its code, or 128+N when
/// signal N killed it.
fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(exit::signal)).unwrap_or(exit::IO)
}
