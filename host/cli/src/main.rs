//! The native `uuidlock`: the shared lock commands, run inside the component
//! with exactly the lock file's directory granted, plus `contend`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::exit;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use uuidlock::cli;
use uuidlock_cli::signals::{self as interrupt, Settled};
use uuidlock_cli::{bench, compose, contend, doctor, exit, run, simulate};
use uuidlock_host::{engine, paths, Acquired, Guard, LockError, Locker, Options, Runtime, Status, Token};

/// The native binary's arguments: the lock commands, and its own.
#[derive(Parser)]
#[command(
    name = "uuidlock",
    bin_name = "uuidlock",
    version,
    about = cli::ABOUT,
    long_about = format!("{}\n\nThe native binary runs the lock inside wasmtime: PATH is a host path, and the \
        guest is granted only the directory that holds it.", cli::ABOUT),
    after_help = format!("{}\n\nExamples:\n  \
        token=$(uuidlock acquire /srv/locks/job.lock --timeout 60) || exit 1\n  \
        uuidlock release /srv/locks/job.lock \"$token\"\n  \
        uuidlock contend    # 4 processes contend on a temporary directory", cli::EXIT_CODES),
)]
struct NativeArgs {
    #[command(subcommand)]
    command: NativeCommand,
}

#[derive(Subcommand)]
enum NativeCommand {
    #[command(flatten)]
    Lock(cli::LockCommand),
    /// Run processes against one lock and check mutual exclusion
    ///
    /// N processes of this binary each take the lock M times and, holding it,
    /// do a non-atomic read-modify-write of a shared counter file. Checks that
    /// the counter ends at N*M and that no two critical sections overlap, and
    /// reports throughput, waits and the hand-off ratio (the fraction of
    /// consecutive acquisitions by different processes).
    Contend(contend::Config),
    /// Measure latency, contention and cold start side by side
    ///
    /// Uncontended acquire+release latency (the raw syscall floor, the
    /// protocol natively, the component, the command module; with --anchors
    /// the Python libraries), contention (with and without the queue of waiters, and
    /// the ceiling: no lock, one process), and cold start, in one run on one
    /// directory; medians, 99th percentiles and ratios.
    Bench(bench::Config),
    /// Check whether a directory (a share) is safe for uuidlock
    ///
    /// Probes DIR, in a directory of its own that it removes: exclusive
    /// create, hard links, rename over a file, deleting an open file, the
    /// share's clock. Given DIR2, the same share through another mount or
    /// client, it also races creates across the two and times how long one
    /// client takes to see the other's files. Prints a verdict (safe; safe
    /// with a verification delay of at least X; unsafe, and why) and whether
    /// locks with a lifetime work.
    Doctor(doctor::Config),
    /// Run the guest against a simulated share, interleaved by a seed
    ///
    /// Runs CLIENTS instances of the shipped guest command in one process,
    /// against a simulated share (a profile: local, sshfs, smb, nfs, rclone,
    /// gluster) and simulated time, with faults (stalls, kills, errors, clock
    /// steps), every call interleaved by a scheduler seeded per run. Checks
    /// every run: never two live holders, fences increasing, no live holder's
    /// file deleted, and someone acquires within a bound once faults stop. A
    /// failing seed prints its trace and the command that replays it.
    Simulate(simulate::Config),
    /// Run a command while holding a lock
    ///
    /// Takes the lock (waiting as acquire does), runs CMD with UUIDLOCK_PATH,
    /// UUIDLOCK_TOKEN and UUIDLOCK_FENCE (and UUIDLOCK_SLOT with --slots) in
    /// its environment while renewing the lock in the background, releases
    /// it when CMD exits, and exits with CMD's status.
    Run(run::RunArgs),
    /// Join a plugin component with the lock, for any component host
    ///
    /// PLUGIN imports uuidlock:lock/lock@0.3.0 (its world includes
    /// uuidlock:lock/plugin@0.3.0). Writes to OUT one component in which the
    /// embedded uuidlock component serves that import, so that it imports
    /// only what PLUGIN imports besides (for a WASI plugin, only WASI) and
    /// runs under stock `wasmtime run --dir`, jco or wasmtime-py, the lock
    /// confined to the plugin's preopened directories. Prints OUT.
    Compose(compose::Config),
    /// Write the embedded wasm files into DIR
    ///
    /// Writes uuidlock.wasm (the WASI command module) and
    /// uuidlock.component.wasm (the component of the WIT world
    /// uuidlock:lock/guest@0.3.0) into DIR.
    Export {
        /// An existing directory
        dir: PathBuf,
    },
    /// Print a shell completion script
    ///
    /// Prints a completion script for SHELL on stdout, e.g.
    /// `uuidlock completions bash > /etc/bash_completion.d/uuidlock`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `uuidlock contend-worker ...`: one worker of `uuidlock contend`, for
/// contend only, so parsed apart from the public commands (and kept out of
/// their help and completions).
#[derive(Parser)]
#[command(name = "uuidlock contend-worker")]
struct WorkerArgs {
    #[command(flatten)]
    config: contend::Config,
}

/// Runs each call in the component, granting the lock file's directory.
#[derive(Default)]
struct NativeBackend {
    runtime: Option<Runtime>,
    lockers: HashMap<PathBuf, Locker>,
    /// The signal that cut an acquire short.
    interrupted: Option<i32>,
}

impl NativeBackend {
    /// The locker for `path`'s directory and the path the guest should use.
    fn locker_for(&mut self, path: &str) -> Result<(Locker, PathBuf), LockError> {
        let (file, dir) = paths::lock_file_and_dir(Path::new(path))?;
        if self.runtime.is_none() {
            let runtime =
                interrupt::runtime().map_err(|e| LockError::Io(format!("cannot start the wasm runtime: {e:#}")))?;
            self.runtime = Some(runtime);
        }
        let runtime = self.runtime.as_ref().expect("set above");
        let locker = match self.lockers.get(&dir) {
            Some(locker) => locker.clone(),
            None => {
                let locker = Locker::new(runtime, &[&dir])
                    .map_err(|e| LockError::Io(format!("cannot grant {}: {e:#}", dir.display())))?;
                self.lockers.insert(dir, locker.clone());
                locker
            }
        };
        Ok((locker, file))
    }
}

impl cli::Backend for NativeBackend {
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Acquired, LockError> {
        // Here, before the durations become WIT's nanoseconds (which
        // saturate), so that the message shows the values given.
        options.check()?;
        let (locker, file) = self.locker_for(path)?;
        // Our own token, known before the call, so that an interrupted call
        // can be undone (crate::interrupt).
        let token = Token::generate(&options.prefix).map_err(LockError::InvalidOptions)?;
        let acquire = || locker.acquire_as(&file, token.clone(), options).map(Guard::into_acquired);
        match interrupt::acquire_undoable(&locker, &file, &token, acquire) {
            Settled::Done(result) => result,
            Settled::Interrupted { signal, message } => {
                self.interrupted = Some(signal);
                Err(LockError::Io(message))
            }
        }
    }
    fn release(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.release(file, token)
    }
    fn refresh(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.refresh(file, token)
    }
    fn holds(&mut self, path: &str, token: &str) -> Result<bool, LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.holds(file, token)
    }
    fn status(&mut self, path: &str) -> Result<Option<Status>, LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.status(file)
    }
    fn holders(&mut self, path: &str) -> Result<Vec<(u32, Status)>, LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.holders(file)
    }
}

fn main() {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let parsed = cli::args().map_err(|message| {
        eprintln!("uuidlock: {message}");
        exit::USAGE
    });
    let code = match parsed {
        Err(code) => code,
        Ok(args) if args.get(1).is_some_and(|command| command == contend::WORKER_COMMAND) => {
            match cli::parse::<WorkerArgs>(&args[1..], &mut out, &mut err) {
                Ok(worker) => contend::worker_main(worker.config),
                Err(code) => code,
            }
        }
        Ok(args) => match cli::parse::<NativeArgs>(&args, &mut out, &mut err) {
            Err(code) => code,
            Ok(NativeArgs { command }) => match command {
                NativeCommand::Lock(command) => {
                    // Signals wait for the command's current step, and an
                    // interrupted acquire is undone (crate::interrupt).
                    if let Err(e) = interrupt::catch(|_, _| {}) {
                        eprintln!("uuidlock: cannot catch signals ({e}); an interrupt may leave files behind");
                    }
                    // Every lock command ends on an interrupt, even one stuck in a call.
                    let _armed = interrupt::arm(None);
                    let mut backend = NativeBackend::default();
                    let code = cli::run(command, &mut backend, &mut out, &mut err);
                    backend.interrupted.map_or(code, exit::signal)
                }
                NativeCommand::Run(args) => run::main(args),
                NativeCommand::Contend(config) => contend::main(config),
                NativeCommand::Bench(config) => bench::main(config),
                NativeCommand::Doctor(config) => doctor::main(config),
                NativeCommand::Simulate(config) => simulate::main(config),
                NativeCommand::Compose(config) => compose::main(config),
                NativeCommand::Export { dir } => export(&dir),
                NativeCommand::Completions { shell } => {
                    // Written whole, so that a failed write is an error
                    // message (clap_complete panics on one).
                    let mut script = Vec::new();
                    clap_complete::generate(shell, &mut NativeArgs::command(), "uuidlock", &mut script);
                    match std::io::Write::write_all(&mut out, &script).and_then(|()| std::io::Write::flush(&mut out)) {
                        Ok(()) => exit::OK,
                        Err(e) => {
                            eprintln!("uuidlock: cannot write the completion script to stdout: {e}");
                            exit::IO
                        }
                    }
                }
            },
        },
    };
    exit(code);
}

/// `uuidlock export DIR`: the guest artifacts this binary embeds, for
/// `wasmtime run` and for other component hosts.
fn export(dir: &Path) -> i32 {
    for (name, bytes) in [("uuidlock.wasm", engine::COMMAND_WASM), ("uuidlock.component.wasm", engine::COMPONENT_WASM)]
    {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("uuidlock: cannot write {}: {e}; the directory must exist and be writable", path.display());
            return exit::IO;
        }
        println!("{}", path.display());
    }
    0
}
