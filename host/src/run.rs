//! `uuidlock run PATH [options] -- CMD [ARGS...]`: a command under a lock,
//! as `flock(1)` runs one, with a lease that renews itself.
//!
//! 1. Take the lock as a [`Lease`] (always with a lifetime: `--stale-after`,
//!    or [`crate::lease::DEFAULT_LIFETIME`]), with a token made here so that an
//!    interrupted acquire can be undone ([`crate::interrupt`]).
//! 2. Run CMD as a child with `UUIDLOCK_PATH`, `UUIDLOCK_TOKEN` and
//!    `UUIDLOCK_FENCE` in its environment; SIGINT, SIGTERM and SIGHUP sent
//!    to `uuidlock run` are passed on to it.
//! 3. When CMD exits, release and exit with its status (128+N for a child
//!    killed by signal N, as shells report it).
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

use crate::cli::{self, AcquireOptions};
use crate::interrupt::{self, Settled};
use crate::{lease, paths, Lease, LockError, Locker, Lost, Options, Runtime, Token};

/// The exit codes of `uuidlock run` that are its own (otherwise it exits
/// with the command's status).
pub mod exit {
    /// The lock stayed held by someone else until `--timeout` (change it
    /// with `--conflict-exit-code`).
    pub const TIMEOUT: i32 = 1;
    /// A usage error or an invalid value.
    pub const USAGE: i32 = 2;
    /// The lease was lost while CMD ran; CMD was stopped.
    pub const LEASE_LOST: i32 = 75;
    /// CMD exists but cannot be run.
    pub const NOT_EXECUTABLE: i32 = 126;
    /// CMD was not found.
    pub const NOT_FOUND: i32 = 127;
}

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
    /// When the lease is lost, how long CMD gets between SIGTERM and SIGKILL
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = cli::seconds)]
    pub kill_after: Duration,
    /// The command to run while holding the lock, and its arguments
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
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
    // The child's pid once it runs: signals go to it from then on.
    let child_pid = Arc::new(AtomicI32::new(0));
    let forward_to = child_pid.clone();
    if let Err(e) = interrupt::catch(move |signal| signal_child(forward_to.load(Ordering::SeqCst), signal)) {
        return fail(cli::exit::IO, format!("cannot catch signals: {e}"));
    }
    let lease = match take(&args.path, &options) {
        Ok(lease) => lease,
        Err(Taken::Interrupted(signal, message)) => return fail(128 + signal, message),
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
    // A signal that came while the child was being started.
    if let Some(signal) = interrupt::requested() {
        signal_child(child.id() as i32, signal);
    }

    let (events, received) = mpsc::channel();
    let on_lost = events.clone();
    lease.on_lost(move |lost| {
        let _ = on_lost.send(Event::Lost(lost.clone()));
    });
    let pid = child.id() as i32;
    std::thread::spawn(move || {
        let _ = events.send(Event::Exited(child.wait()));
    });
    match received.recv() {
        Ok(Event::Exited(status)) => {
            let released = lease.release();
            if let Err(e) = &released {
                eprintln!("uuidlock run: {}: the lease was lost before CMD exited ({e})", cli::one_line(&args.path));
            }
            match (status, released) {
                (Ok(status), Ok(())) => status_code(status),
                (Ok(_), Err(_)) => exit::LEASE_LOST,
                (Err(e), _) => fail(cli::exit::IO, format!("cannot wait for CMD: {e}")),
            }
        }
        Ok(Event::Lost(lost)) => {
            eprintln!(
                "uuidlock run: the lease on {} was lost ({lost}); stopping CMD (SIGTERM, SIGKILL after {:?})",
                cli::one_line(&args.path),
                args.kill_after
            );
            signal_child(pid, libc::SIGTERM);
            if !matches!(received.recv_timeout(args.kill_after), Ok(Event::Exited(_))) {
                signal_child(pid, libc::SIGKILL);
                let _ = received.recv();
            }
            drop(lease);
            exit::LEASE_LOST
        }
        Err(_) => fail(cli::exit::IO, "lost track of CMD".into()),
    }
}

/// Why no lease was taken.
enum Taken {
    Failed(LockError),
    /// A signal cut the acquire short; it was undone.
    Interrupted(i32, String),
}

/// Takes the lease on the lock file `path`, granting its directory.
fn take(path: &str, options: &Options) -> Result<Lease, Taken> {
    let (file, dir) = paths::lock_file_and_dir(Path::new(path)).map_err(Taken::Failed)?;
    let runtime = Runtime::new().map_err(|e| Taken::Failed(LockError::Io(format!("cannot start wasm: {e:#}"))))?;
    let locker = Locker::new(&runtime, &[&dir])
        .map_err(|e| Taken::Failed(LockError::Io(format!("cannot grant {}: {e:#}", dir.display()))))?;
    let token = Token::generate(&options.prefix).map_err(|why| Taken::Failed(LockError::InvalidOptions(why)))?;
    let taken = locker.lease_as(&file, token.clone(), options);
    match interrupt::settle(&locker, &file, &token, taken) {
        Settled::Done(result) => result.map_err(Taken::Failed),
        Settled::Interrupted { signal, message } => Err(Taken::Interrupted(signal, message)),
    }
}

/// Sends `signal` to the process `pid` (nothing for pid 0: no child yet).
fn signal_child(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) takes plain integers and has no memory effects.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A child's exit status as a shell reports it: its code, or 128+N when
/// signal N killed it.
fn status_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(cli::exit::IO)
}
