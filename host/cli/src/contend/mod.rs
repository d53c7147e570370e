//! The cross-process contention runner: `uuidlock contend`.
//!
//! The parent spawns N worker processes of this same binary. Once all of
//! them are ready (the guest compiled and instantiated), it starts them
//! together. Each takes the lock M times through the wasm guest. Inside the
//! critical section it does a non-atomic read-modify-write of a shared
//! counter file, and it reports its enter and exit times (wall clock, which
//! is shared by every process on one machine). The parent checks that the
//! counter equals N*M and that no two critical sections overlap, and reports
//! throughput, waits and hand-offs.
//!
//! Each section also reports the acquisition's fencing number, and the
//! parent checks that fences strictly increase in critical-section order. A
//! worker whose release (or lease) says the lock was no longer its own was
//! *evicted* (its lock broken as stale while it held it): it reports so and
//! carries on, and the run counts evictions and exits 1. With `--renew`
//! workers hold self-renewing leases instead of plain guards.
//!
//! **Readers and writers, semaphores.** With `--readers R` workers 0 to
//! R-1 hold the lock shared ([`Mode::Shared`]) and the others exclusive:
//! writers do the read-modify-write, readers read the counter as they enter
//! and again as they leave, and report whether it changed under them. The
//! parent checks that no writer's section overlapped any other section,
//! and counts how many readers held at once (readers must overlap, or the
//! mode is exclusive in disguise) and how long writers waited (writer
//! preference: a waiting writer keeps later readers out). With `--slots N`
//! every worker holds one of N slots ([`Mode::Slots`]) and does the
//! read-modify-write of the counter of its slot (`counter-K`); the parent
//! checks that no section began while N others were held, and none while
//! another held its slot.
//!
//! `--runner none` skips the lock: a control run that shows the checks do
//! catch a broken lock (in every mode; slot holders then take slots in
//! turn, as a lock that hands out one slot twice would). Workers may also
//! be Python's lock libraries ([`crate::peers`]), alone or taking turns
//! with uuidlock's on the same lock (`--runner peers`, or a list such as
//! `--runner component,command,uuid-filelock`), in the exclusive mode only.
//! The bench runs other programs through the same checks by giving a
//! worker [`Program`] of their own.
//!
//! **Across clients of a share.** Given several `--dir`s that are mounts of
//! one shared directory (an sshfs or SMB share mounted twice), workers take
//! turns over them: worker *i* uses the *i*-th directory, round the list.
//! The parent first checks that a file made through the first directory
//! shows through each other one. The start signal is a line on each
//! worker's stdin, not a file, because a caching client may not see a new
//! file for seconds. Overlaps are judged from the hold intervals, timed by
//! the one machine's clock; the counter is read and written through each
//! worker's own client, and a caching client can serve a stale counter with
//! no fault in the lock, so across several directories a counter that is
//! off is reported, not counted as a violation.
//!
//! # Layout
//!
//! - this module: the flags ([`Config`]), the runners, `uuidlock contend`'s
//!   `main`;
//! - `parent`: the run itself: workers spawned, started together, killed
//!   and replaced, their lines collected;
//! - `worker`: one worker process (`uuidlock contend-worker`): the lock
//!   taken and released, the critical section, its line per acquisition;
//! - [`report`]: what the workers reported, judged (overlaps, fences,
//!   evictions) and rendered as text, JSON and a plot.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, FromArgMatches, ValueEnum};
use uuidlock::cli;
use uuidlock::shared::MAX_SLOTS;
use uuidlock_host::{Mode, Options};

use crate::{exit, peers};

mod parent;
pub mod report;
mod worker;

pub use parent::run;
pub use report::{Report, Section, Summary};
pub use worker::worker_main;

/// The hidden subcommand a worker process runs.
pub const WORKER_COMMAND: &str = "contend-worker";

/// The lock file and counter file names inside the run's directory.
const LOCK_FILE: &str = "contend.lock";
const COUNTER_FILE: &str = "counter";

/// The counter of a semaphore's slot `slot`, beside the lock.
fn slot_counter(slot: u32) -> String {
    format!("{COUNTER_FILE}-{slot}")
}

/// How long a worker waits for the lock before it gives up (a lock left by a
/// dead worker would otherwise keep the run waiting for ever).
const WORKER_TIMEOUT: Duration = Duration::from_secs(60);

/// Which way workers take the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runner {
    /// The component through the host API
    Component,
    /// The command module, one run per call
    Command,
    /// Half of each
    Mixed,
    /// The component in wasmtime-wasi as it comes (no uuidlock host): what
    /// an embedder that follows wasmtime's documentation gets
    Plain,
    /// The same, allowed to block (`allow_blocking_current_thread`): file
    /// calls on the calling thread, as in uuidlock's host
    PlainBlocking,
    /// Python's filelock.SoftFileLock (never breaks a stale lock)
    SoftFileLock,
    /// Python's uuid-filelock at its default verification delay (0.1 s)
    UuidFilelock,
    /// Component, command module, SoftFileLock and uuid-filelock in turn
    Peers,
    /// No lock at all: a control run that must show violations
    None,
}

impl Runner {
    /// The name `--runner` takes.
    pub fn name(self) -> &'static str {
        match self {
            Runner::Component => "component",
            Runner::Command => "command",
            Runner::Mixed => "mixed",
            Runner::Plain => "plain",
            Runner::PlainBlocking => "plain-blocking",
            Runner::SoftFileLock => "soft-file-lock",
            Runner::UuidFilelock => "uuid-filelock",
            Runner::Peers => "peers",
            Runner::None => "none",
        }
    }

    /// What worker number `worker` runs: mixed runs alternate.
    fn for_worker(self, worker: usize) -> Runner {
        const PEERS: [Runner; 4] = [Runner::Component, Runner::Command, Runner::SoftFileLock, Runner::UuidFilelock];
        match self {
            Runner::Mixed if worker.is_multiple_of(2) => Runner::Component,
            Runner::Mixed => Runner::Command,
            Runner::Peers => PEERS[worker % PEERS.len()],
            other => other,
        }
    }

    /// The Python library a worker of this runner is, if any.
    fn python(self) -> Option<&'static peers::Anchor> {
        match self {
            Runner::SoftFileLock => peers::anchor("filelock.SoftFileLock"),
            Runner::UuidFilelock => peers::anchor("uuid-filelock (delay 0.1 s)"),
            _ => None,
        }
    }

    /// Whether some worker of this runner is a Python library.
    fn has_python(self) -> bool {
        matches!(self, Runner::SoftFileLock | Runner::UuidFilelock | Runner::Peers)
    }
}

/// A worker program other than this binary, for comparisons (the bench's
/// Python anchors). It is run as `ARGV... LOCK COUNTER ITERATIONS
/// HOLD_SECONDS` and speaks the worker protocol of [`worker_main`].
#[derive(Clone, Debug)]
pub struct Program {
    /// What the report calls it, in place of the runner.
    pub name: String,
    pub argv: Vec<OsString>,
}

/// A contention run's settings: the flags of `uuidlock contend`.
#[derive(Args, Clone, Debug)]
#[command(after_help = "Progress goes to stderr when it is a terminal.
Exit codes: 0 no violation, 1 violations or evictions found, 2 usage error, 4 a worker or I/O failed.")]
pub struct Config {
    /// Worker processes (1 to 1024)
    #[arg(long, value_name = "N", default_value = "4", value_parser = count::<MAX_PROCESSES>)]
    pub processes: usize,
    /// Acquisitions per worker (1 to 1000000; processes times acquisitions at
    /// most 10000000)
    #[arg(long, value_name = "M", default_value = "25", value_parser = count::<MAX_ITERATIONS>)]
    pub iterations: usize,
    /// Time inside the critical section, in milliseconds (at most 60000)
    #[arg(long = "hold-ms", value_name = "H", default_value = "1", value_parser = millis)]
    pub hold: Duration,
    /// Where the lock and counter live [default: a new temporary directory,
    /// removed afterwards]. Repeat it to spread the workers over several
    /// mounts of one shared directory (worker i uses the i-th, round the
    /// list): contention across the clients of a network share
    #[arg(long, value_name = "D")]
    pub dir: Vec<PathBuf>,
    /// How workers take the lock; a list (`component,uuid-filelock`) has
    /// the workers take turns over it
    #[arg(long, value_name = "R", value_enum, value_delimiter = ',', default_value = "component")]
    pub runner: Vec<Runner>,
    /// How many of the processes are readers (0 to --processes): workers 0
    /// to R-1 hold the lock shared, the others exclusive (writers);
    /// uuidlock's runners only. Checks that no writer holds beside anyone,
    /// and reports how many readers held at once and how long writers waited
    #[arg(
        long,
        value_name = "R",
        default_value = "0",
        value_parser = count_or_none::<MAX_PROCESSES>,
        conflicts_with = "slots"
    )]
    pub readers: usize,
    /// Every process holds one of the N slots of a semaphore (1 to 1024);
    /// uuidlock's runners only. Checks that at most N hold at once, never
    /// two in one slot, and reports the acquisitions per slot
    #[arg(long, value_name = "N", value_parser = slot_count)]
    pub slots: Option<u32>,
    /// As for acquire
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = cli::seconds)]
    pub verification_delay: Duration,
    /// As for acquire
    #[arg(long, value_name = "SECS", default_value = "0.001", value_parser = cli::seconds)]
    pub retry_interval: Duration,
    /// The lifetime every worker's lock declares [default: none]
    #[arg(long, value_name = "SECS", value_parser = cli::seconds)]
    pub stale_after: Option<Duration>,
    /// SIGKILL a random worker K times during the run, at random points of
    /// the protocol, and replace it; needs --stale-after (the killed
    /// holder's lock is broken once stale; at most 10000)
    #[arg(long = "kill", value_name = "K", default_value = "0", value_parser = count_or_none::<10_000>)]
    pub kills: usize,
    /// uuidlock workers do not wait in the queue of waiters: each polls the
    /// lock every retry interval, as uuidlock 0.1 did
    #[arg(long)]
    pub no_queue: bool,
    /// Component workers hold self-renewing leases (renewed every third of
    /// --stale-after, or of 30 s without it) instead of plain guards
    #[arg(long)]
    pub renew: bool,
    /// Workers run this instead of taking the lock through `runner`; the
    /// lock options above (delay, interval, lifetime, queue) are then the
    /// program's own business and do not apply.
    #[arg(skip)]
    pub program: Option<Program>,
    /// Draw the wait-time distribution as an SVG file (readers' and
    /// writers' apart)
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write every acquisition as a line of CSV, in the order of entry
    /// (worker, entered and left in seconds from the first entry, the wait,
    /// the gap since the one before left, the fencing number): to find the
    /// turns behind a long wait
    #[arg(long, value_name = "FILE.csv")]
    pub log: Option<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

impl Default for Config {
    /// The defaults `uuidlock contend --help` documents: the flags' own, so
    /// that they are written down once.
    fn default() -> Self {
        let command = Config::augment_args(clap::Command::new("contend"));
        Config::from_arg_matches(&command.get_matches_from(["contend"])).expect("the defaults parse")
    }
}

/// A count from 1 to `MAX` (for clap). Every count a run takes is bounded:
/// it sizes buffers and the number of processes and threads.
pub(crate) fn count<const MAX: usize>(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|&n| (1..=MAX).contains(&n))
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX}"))
}

/// A count from 0 to `MAX` (for clap).
fn count_or_none<const MAX: usize>(text: &str) -> Result<usize, String> {
    text.parse().ok().filter(|&n| n <= MAX).ok_or_else(|| format!("must be a whole number from 0 to {MAX}"))
}

/// A semaphore's slots, from 1 to [`MAX_SLOTS`] (for clap).
fn slot_count(text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|&n| (1..=MAX_SLOTS).contains(&n))
        .ok_or_else(|| format!("must be a whole number from 1 to {MAX_SLOTS}"))
}

/// The most worker processes a run starts.
pub const MAX_PROCESSES: usize = 1024;
/// The most acquisitions per worker.
pub const MAX_ITERATIONS: usize = 1_000_000;
/// The most critical sections in one run (processes times iterations): the
/// report keeps each.
pub const MAX_SECTIONS: usize = 10_000_000;

/// Decimal milliseconds, at most a minute.
fn millis(text: &str) -> Result<Duration, String> {
    cli::seconds(text).map(|seconds| seconds / 1000).and_then(|hold| {
        if hold <= Duration::from_secs(60) {
            Ok(hold)
        } else {
            Err("at most 60000 ms".into())
        }
    })
}

impl Config {
    /// How the workers take the lock, as reports name it.
    pub fn runner_name(&self) -> String {
        match &self.program {
            Some(program) => program.name.clone(),
            None => self.runner.iter().map(|runner| runner.name()).collect::<Vec<_>>().join(","),
        }
    }

    /// What worker number `worker` runs: the runners in turn, each of them
    /// (mixed, peers) alternating in turn.
    fn runner_for(&self, worker: usize) -> Runner {
        let n = self.runner.len().max(1);
        self.runner.get(worker % n).copied().unwrap_or(Runner::Component).for_worker(worker / n)
    }

    /// Whether some worker is a Python library.
    fn has_python(&self) -> bool {
        self.runner.iter().any(|runner| runner.has_python())
    }

    /// How worker number `worker` holds the lock: in one of the slots with
    /// `--slots`, shared when it is one of the first `--readers`, exclusive
    /// otherwise. (A worker process is told `--readers 1` for shared.)
    pub fn mode_for(&self, worker: usize) -> Mode {
        match self.slots {
            Some(n) => Mode::Slots(n),
            None if worker < self.readers => Mode::Shared,
            None => Mode::Exclusive,
        }
    }

    /// Whether worker number `worker` is a reader.
    pub fn is_reader(&self, worker: usize) -> bool {
        self.mode_for(worker) == Mode::Shared
    }

    /// The run's mode, as reports name it: `exclusive`, `shared` (readers
    /// beside writers) or `slots`.
    pub fn mode_name(&self) -> &'static str {
        match (self.slots, self.readers) {
            (Some(_), _) => "slots",
            (None, 0) => "exclusive",
            (None, _) => "shared",
        }
    }

    /// The options every worker acquires with.
    fn lock_options(&self) -> Options {
        Options {
            verification_delay: self.verification_delay,
            retry_interval: self.retry_interval,
            timeout: Some(WORKER_TIMEOUT),
            stale_after: self.stale_after,
            queue: !self.no_queue,
            ..Options::default()
        }
    }
}

/// `uuidlock contend`: returns the exit code.
pub fn main(config: Config) -> i32 {
    let checked = match config.lock_options().check() {
        Err(e) => Err(e.to_string()),
        Ok(()) if config.kills > 0 && config.stale_after.is_none() => {
            Err("--kill needs --stale-after: a killed holder's lock must be breakable".into())
        }
        Ok(()) if config.kills > 0 && config.has_python() => {
            Err("--kill is for uuidlock's runners: a killed Python holder's lock is never broken".into())
        }
        Ok(()) if config.readers > config.processes => {
            Err(format!("--readers {} is more than --processes {}", config.readers, config.processes))
        }
        Ok(())
            if (config.readers > 0 || config.slots.is_some()) && (config.has_python() || config.program.is_some()) =>
        {
            Err("--readers and --slots are for uuidlock's runners: Python's locks know only exclusive holders".into())
        }
        Ok(()) if config.processes.saturating_mul(config.iterations) > MAX_SECTIONS => Err(format!(
            "--processes {} times --iterations {} is more than {MAX_SECTIONS} acquisitions in one run",
            config.processes, config.iterations
        )),
        Ok(()) => Ok(()),
    };
    if let Err(message) = checked {
        eprintln!("uuidlock contend: {message}; see 'uuidlock contend --help'");
        return exit::USAGE;
    }
    match run(&config) {
        Ok(report) => {
            if config.json {
                println!("{}", serde_json::to_string(&report.summary()).expect("plain data serialises"));
            } else {
                print!("{}", report.to_text());
            }
            if let Some(path) = &config.plot {
                if let Err(e) = report.draw().and_then(|svg| Ok(std::fs::write(path, svg)?)) {
                    eprintln!("uuidlock contend: cannot write the plot to {}: {e:#}", path.display());
                    return exit::IO;
                }
            }
            if let Some(path) = &config.log {
                if let Err(e) = std::fs::write(path, report.to_csv()) {
                    eprintln!("uuidlock contend: cannot write the log to {}: {e}", path.display());
                    return exit::IO;
                }
            }
            if report.violations() == 0 && report.evictions() == 0 {
                exit::OK
            } else {
                exit::FOUND
            }
        }
        Err(e) => {
            eprintln!("uuidlock contend: {e:#}");
            exit::IO
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Config, clap::Error> {
        let command = Config::augment_args(clap::Command::new("contend"));
        let matches = command.try_get_matches_from(std::iter::once("contend").chain(line.split_whitespace()))?;
        Config::from_arg_matches(&matches)
    }

    #[test]
    fn bad_options_are_refused() {
        for line in ["--processes 0", "--processes x", "--hold-ms -1", "--runner fast", "--bogus", "--dir"] {
            assert!(parse(line).is_err(), "{line}");
        }
        for line in ["--slots 0", "--slots 1025", "--slots x", "--readers -1", "--readers 2 --slots 3"] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn readers_come_first_and_slot_holders_are_all() {
        let parsed = parse("--processes 4 --readers 3").unwrap();
        let modes: Vec<Mode> = (0..4).map(|worker| parsed.mode_for(worker)).collect();
        assert_eq!(modes, [Mode::Shared, Mode::Shared, Mode::Shared, Mode::Exclusive]);
        assert_eq!(parsed.mode_name(), "shared");
        let parsed = parse("--slots 1024").unwrap();
        assert_eq!((parsed.mode_for(3), parsed.mode_name()), (Mode::Slots(1024), "slots"));
        assert_eq!((Config::default().mode_for(0), Config::default().mode_name()), (Mode::Exclusive, "exclusive"));
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = Config::default();
        assert_eq!((config.processes, config.iterations, &config.runner[..]), (4, 25, &[Runner::Component][..]));
        assert_eq!((config.hold, config.retry_interval), (Duration::from_millis(1), Duration::from_millis(1)));
        let parsed = parse("--hold-ms 0.5 --runner mixed --kill 2").unwrap();
        assert_eq!(
            (parsed.hold, &parsed.runner[..], parsed.kills),
            (Duration::from_micros(500), &[Runner::Mixed][..], 2)
        );
        // A list: the workers take turns over it, each runner alternating in turn.
        let parsed = parse("--runner command,peers").unwrap();
        let turns: Vec<Runner> = (0..6).map(|worker| parsed.runner_for(worker)).collect();
        use Runner::*;
        assert_eq!(turns, [Command, Component, Command, Command, Command, SoftFileLock]);
    }
}
