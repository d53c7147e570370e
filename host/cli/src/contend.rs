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
//! `--runner none` skips the lock: a control run that shows the checks do
//! catch a broken lock. Workers may also be Python's lock libraries
//! ([`crate::peers`]), alone or taking turns with uuidlock's on the same
//! lock (`--runner peers`, or a list such as
//! `--runner component,command,uuid-filelock`). The bench runs other programs through the same
//! checks by giving a worker [`Program`] of their own.
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

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, FromArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};
use uuidlock::stale;

use crate::progress::progress_bar;
use crate::stats::percentile;
use crate::{exit, peers, plot};
use uuidlock::cli;
use uuidlock_host::{Grant, Lease, LockError, Locker, Options, Runtime};

/// The hidden subcommand a worker process runs.
pub const WORKER_COMMAND: &str = "contend-worker";

/// The lock file and counter file names inside the run's directory.
const LOCK_FILE: &str = "contend.lock";
const COUNTER_FILE: &str = "counter";
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
    /// Draw the wait-time distribution as an SVG file
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
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

/// One critical section, as a worker reported it.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub worker: usize,
    pub enter_ns: u128,
    pub exit_ns: u128,
    pub wait: Duration,
    /// The acquisition's fencing number (0: the worker has none).
    pub fence: u64,
    /// The worker learnt at release that its lock had been broken.
    pub evicted: bool,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    /// The directories the workers used: one, or mounts of one share.
    pub dirs: Vec<PathBuf>,
    pub elapsed: Duration,
    /// Sorted by entry time.
    pub sections: Vec<Section>,
    pub counter: u64,
    pub overlaps: usize,
    /// When workers were killed (wall clock, ns since the epoch).
    pub kills: Vec<u128>,
    /// The CPU time (user + system) the workers used from their start
    /// signal on, as the OS counts it.
    pub cpu: Duration,
}

impl Report {
    pub fn expected(&self) -> u64 {
        (self.config.processes * self.config.iterations) as u64
    }

    /// Overlapping sections, fence inversions, and (in one directory) lost
    /// counter updates; see [`Report::counter_off`].
    pub fn violations(&self) -> usize {
        let counted = if self.dirs.len() == 1 { self.counter_off() } else { 0 };
        self.overlaps + counted as usize + self.fence_inversions()
    }

    /// How far the counter is from the sections reported. A killed holder
    /// may have written its update without living to report it, so the
    /// counter may exceed them by up to one per kill. Across several mounts a
    /// caching client may also lose updates with no overlap (module docs).
    pub fn counter_off(&self) -> u64 {
        let (low, high) = (self.expected(), self.expected() + self.kills.len() as u64);
        if self.counter < low {
            low - self.counter
        } else {
            self.counter.saturating_sub(high)
        }
    }

    /// Sections whose holder learnt at release that its lock had been broken
    /// as stale while it held it.
    pub fn evictions(&self) -> usize {
        self.sections.iter().filter(|s| s.evicted).count()
    }

    /// Sections whose fencing number was not larger than every earlier one's.
    pub fn fence_inversions(&self) -> usize {
        count_fence_inversions(&self.sections)
    }

    /// The longest time from a kill to the next acquisition by anyone: how
    /// long a dead holder's lock kept the others out.
    pub fn longest_gap_after_a_kill(&self) -> Duration {
        self.kills
            .iter()
            .filter_map(|&killed| self.sections.iter().find(|s| s.enter_ns > killed).map(|s| s.enter_ns - killed))
            .max()
            .map_or(Duration::ZERO, |ns| Duration::from_nanos(ns as u64))
    }

    /// Waits (from asking for the lock to holding it), sorted.
    pub fn waits(&self) -> Vec<Duration> {
        let mut waits: Vec<Duration> = self.sections.iter().map(|s| s.wait).collect();
        waits.sort();
        waits
    }

    /// The fraction of consecutive acquisitions made by different processes.
    pub fn handoff_ratio(&self) -> f64 {
        let changes = self.sections.windows(2).filter(|pair| pair[0].worker != pair[1].worker).count();
        changes as f64 / self.sections.len().saturating_sub(1).max(1) as f64
    }

    pub fn per_second(&self) -> f64 {
        self.sections.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The workers' CPU time per acquisition.
    pub fn cpu_per_acquisition(&self) -> Duration {
        self.cpu / (self.sections.len().max(1) as u32)
    }

    /// The workers' CPU time over the run's, in cores kept busy.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn to_text(&self) -> String {
        let c = &self.config;
        let waits = self.waits();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "uuidlock contend: {} processes x {} acquisitions, hold {:?}, runner {}, verification delay {:?}, retry interval {:?}",
            c.processes, c.iterations, c.hold, c.runner_name(), c.verification_delay, c.retry_interval
        );
        for dir in &self.dirs {
            let _ = writeln!(text, "  directory         {}", dir.display());
        }
        let _ = writeln!(
            text,
            "  acquisitions      {} in {:.2} s ({:.0}/s)",
            self.sections.len(),
            self.elapsed.as_secs_f64(),
            self.per_second()
        );
        let _ = writeln!(
            text,
            "  wait p50/p99/max  {} / {} / {}",
            ms(percentile(&waits, 0.50)),
            ms(percentile(&waits, 0.99)),
            ms(waits.last().copied().unwrap_or_default())
        );
        let _ = writeln!(text, "  hand-off ratio    {:.2}", self.handoff_ratio());
        let _ = writeln!(
            text,
            "  workers' cpu      {:.2} s ({} per acquisition, {:.2} cores)",
            self.cpu.as_secs_f64(),
            ms(self.cpu_per_acquisition()),
            self.cores()
        );
        if self.dirs.len() > 1 {
            let _ = writeln!(
                text,
                "  counter           {} (expected {}; across mounts only overlaps count: a caching client may lose updates)",
                self.counter,
                self.expected()
            );
        } else if self.kills.is_empty() {
            let _ = writeln!(text, "  counter           {} (expected {})", self.counter, self.expected());
        } else {
            let _ = writeln!(
                text,
                "  counter           {} (expected {} to {}: a killed holder may have written without reporting)",
                self.counter,
                self.expected(),
                self.expected() + self.kills.len() as u64
            );
            let _ = writeln!(
                text,
                "  kills             {} (longest gap from a kill to the next acquisition: {})",
                self.kills.len(),
                ms(self.longest_gap_after_a_kill())
            );
        }
        let _ = writeln!(text, "  overlaps          {}", self.overlaps);
        let fenced = self.sections.iter().filter(|s| s.fence > 0).count();
        if fenced > 0 {
            let _ = writeln!(text, "  fences            {} of {fenced} out of order", self.fence_inversions());
        }
        let _ = writeln!(text, "  evictions         {}", self.evictions());
        let verdict = match (self.violations(), self.evictions()) {
            (0, 0) => "OK: mutual exclusion held",
            (0, _) => "EVICTIONS: live holders lost their locks (a lifetime too short for this load?)",
            _ => "VIOLATIONS: mutual exclusion broken",
        };
        let _ = writeln!(text, "  result            {verdict}");
        text
    }

    /// The report's figures, as `--json` prints them.
    pub fn summary(&self) -> Summary {
        let c = &self.config;
        let waits = self.waits();
        Summary {
            processes: c.processes,
            iterations: c.iterations,
            hold_s: c.hold.as_secs_f64(),
            runner: c.runner_name(),
            directories: self.dirs.len(),
            verification_delay_s: c.verification_delay.as_secs_f64(),
            retry_interval_s: c.retry_interval.as_secs_f64(),
            acquisitions: self.sections.len(),
            elapsed_s: self.elapsed.as_secs_f64(),
            per_second: self.per_second(),
            wait_p50_s: percentile(&waits, 0.50).as_secs_f64(),
            wait_p99_s: percentile(&waits, 0.99).as_secs_f64(),
            wait_max_s: waits.last().copied().unwrap_or_default().as_secs_f64(),
            handoff_ratio: self.handoff_ratio(),
            cpu_s: self.cpu.as_secs_f64(),
            cpu_per_acquisition_s: self.cpu_per_acquisition().as_secs_f64(),
            cores: self.cores(),
            counter: self.counter,
            expected: self.expected(),
            counter_off: self.counter_off(),
            overlaps: self.overlaps,
            fence_inversions: self.fence_inversions(),
            violations: self.violations(),
            evictions: self.evictions(),
            renew: c.renew,
            kills: self.kills.len(),
            longest_gap_after_kill_s: self.longest_gap_after_a_kill().as_secs_f64(),
        }
    }

    /// The wait-time distribution, as an SVG document.
    pub fn draw(&self) -> Result<String> {
        let c = &self.config;
        let title = format!(
            "uuidlock contend: wait before holding the lock ({} processes x {}, hold {:?})",
            c.processes, c.iterations, c.hold
        );
        plot::wait_histograms(&title, &[plot::Series { name: &c.runner_name(), waits: &self.waits() }])
    }
}

/// What `uuidlock contend --json` prints: one object, durations in seconds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub processes: usize,
    pub iterations: usize,
    pub hold_s: f64,
    pub runner: String,
    /// How many mounts of the lock's directory the workers were spread over.
    pub directories: usize,
    pub verification_delay_s: f64,
    pub retry_interval_s: f64,
    pub acquisitions: usize,
    pub elapsed_s: f64,
    pub per_second: f64,
    pub wait_p50_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    /// The fraction of consecutive acquisitions by different processes.
    pub handoff_ratio: f64,
    /// The workers' CPU time (user + system) from their start on, in all,
    /// per acquisition, and over the run's time (cores kept busy).
    pub cpu_s: f64,
    pub cpu_per_acquisition_s: f64,
    pub cores: f64,
    pub counter: u64,
    pub expected: u64,
    /// `counter` against the sections reported (a violation in one
    /// directory only; see the module docs).
    pub counter_off: u64,
    /// Critical sections that began before an earlier one had ended.
    pub overlaps: usize,
    /// Sections whose fencing number was not larger than every earlier one's.
    pub fence_inversions: usize,
    /// Overlaps, fence inversions, and in one directory lost (or extra)
    /// counter updates.
    pub violations: usize,
    /// Holders told at release that their lock had been broken under them.
    pub evictions: usize,
    /// Workers held self-renewing leases.
    pub renew: bool,
    pub kills: usize,
    pub longest_gap_after_kill_s: f64,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Counts sections (sorted by entry) whose fencing number is not larger than
/// every earlier one's, as a resource that refuses old fences would judge
/// them; sections without a fence (0) are not judged.
fn count_fence_inversions(sorted: &[Section]) -> usize {
    let mut highest = 0;
    let mut inversions = 0;
    for fence in sorted.iter().map(|s| s.fence).filter(|&fence| fence > 0) {
        if fence <= highest {
            inversions += 1;
        }
        highest = highest.max(fence);
    }
    inversions
}

/// Counts sections that start before an earlier one has ended.
fn count_overlaps(sorted: &[Section]) -> usize {
    let mut latest_exit = 0;
    let mut overlaps = 0;
    for section in sorted {
        if section.enter_ns < latest_exit {
            overlaps += 1;
        }
        latest_exit = latest_exit.max(section.exit_ns);
    }
    overlaps
}

/// Runs the contention and collects the report.
///
/// # Errors
/// The directory, a worker process, or its output failed.
pub fn run(config: &Config) -> Result<Report> {
    if config.dir.is_empty() {
        let dir = std::env::temp_dir().join(format!("uuidlock-contend-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let result = run_in(config, std::slice::from_ref(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        return result;
    }
    let mut dirs = Vec::new();
    for dir in &config.dir {
        ensure!(dir.is_dir(), "--dir {}: no such directory; create it first", dir.display());
        dirs.push(std::path::absolute(dir)?);
    }
    run_in(config, &dirs)
}

fn run_in(config: &Config, dirs: &[PathBuf]) -> Result<Report> {
    let lock = dirs[0].join(LOCK_FILE);
    ensure!(!lock.exists(), "{} exists from an earlier run; remove it or choose another --dir", lock.display());
    std::fs::write(dirs[0].join(COUNTER_FILE), "0").context("writing the counter file")?;
    one_share(dirs)?;
    contend_in(config, dirs)
}

/// How long a file made through the first `--dir` may take to show through
/// the others before they are judged not to be one share (a new name showed
/// within milliseconds through every share measured).
const SHARE_CHECK: Duration = Duration::from_secs(5);

/// Checks that a file made through the first of `dirs` shows through each
/// other one. Its name is new, so no client has a cached "no such file".
fn one_share(dirs: &[PathBuf]) -> Result<()> {
    let Some((first, others)) = dirs.split_first() else { return Ok(()) };
    if others.is_empty() {
        return Ok(());
    }
    let name = format!("contend-{}-{}.same", std::process::id(), now_ns());
    std::fs::write(first.join(&name), "").with_context(|| format!("writing in {}", first.display()))?;
    let start = Instant::now();
    let mut result = Ok(());
    for dir in others {
        while !dir.join(&name).exists() {
            if start.elapsed() > SHARE_CHECK {
                result = Err(anyhow::anyhow!(
                    "--dir {} does not show a file made through --dir {} within {SHARE_CHECK:?}; the directories must be mounts of one share",
                    dir.display(),
                    first.display()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(first.join(&name));
    result
}

/// What a worker's output thread reports.
enum Event {
    Line(usize, String),
    /// The worker closed its stdout: it has exited, or is about to.
    Done(usize),
}

/// One worker's place in the run: its current process, and how many
/// acquisitions the slot has reported (across the processes it has had).
struct Slot {
    child: Child,
    /// Where the start signal goes (a line), taken when sent.
    start: Option<ChildStdin>,
    reported: usize,
    /// Killed on purpose by `--kill`; to be replaced, not reported.
    killed: bool,
    /// The CPU time it had used when it was started (compiling and
    /// instantiating the guest is not the run's).
    cpu_at_start: Option<Duration>,
}

impl Slot {
    /// The CPU time it used since its start signal (before it is reaped).
    fn cpu_since_start(&self) -> Duration {
        match (self.cpu_at_start, crate::cpu::used(self.child.id())) {
            (Some(from), Some(now)) => now.saturating_sub(from),
            _ => Duration::ZERO,
        }
    }
}

/// The worker processes; dropping them kills and reaps any still running,
/// so that no error path leaves workers behind.
struct Workers(Vec<Slot>);

impl Drop for Workers {
    fn drop(&mut self) {
        for slot in &mut self.0 {
            let _ = slot.child.kill();
            let _ = slot.child.wait();
        }
    }
}

fn contend_in(config: &Config, dirs: &[PathBuf]) -> Result<Report> {
    // Compile the guest once here, so the workers load it from the cache.
    Runtime::new()?;
    let python = if config.has_python() && config.program.is_none() { Some(peers::venv()?) } else { None };

    let exe = std::env::current_exe().context("finding this binary to spawn workers")?;
    let (events, received) = mpsc::channel();
    let spawn = |slot: usize, iterations: usize| -> Result<Child> {
        let dir = &dirs[slot % dirs.len()];
        let program = match (&config.program, config.runner_for(slot).python(), &python) {
            (Some(Program { argv, .. }), _, _) => Some(argv.clone()),
            (None, Some(anchor), Some(python)) => Some(peers::worker_argv(python, anchor)),
            _ => None,
        };
        let mut command = match program {
            Some(argv) => {
                let mut command = Command::new(argv.first().context("a worker program needs a command")?);
                command.args(&argv[1..]).args([LOCK_FILE, COUNTER_FILE].map(|name| dir.join(name)));
                command.args([iterations.to_string(), config.hold.as_secs_f64().to_string()]);
                command
            }
            None => {
                let mut command = Command::new(&exe);
                command.arg(WORKER_COMMAND).args(worker_args(config, dir, slot, iterations));
                command
            }
        };
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context(
                "cannot start a worker process; use fewer --processes or raise the process limit (ulimit -u)",
            )?;
        let stdout = child.stdout.take().context("no worker stdout")?;
        let events = events.clone();
        let reader = std::thread::Builder::new().name(format!("worker-{slot}")).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if events.send(Event::Line(slot, line)).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Done(slot));
        });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("cannot start a thread to read worker {slot} ({e}); use fewer --processes or raise the process limit (ulimit -u)");
        }
        Ok(child)
    };
    let mut workers = Workers(Vec::new());
    let slot = |child: Result<Child>, reported| -> Result<Slot> {
        let mut child = child?;
        Ok(Slot { start: child.stdin.take(), child, reported, killed: false, cpu_at_start: None })
    };
    for worker in 0..config.processes {
        workers.0.push(slot(spawn(worker, config.iterations), 0)?);
    }

    let total = config.processes * config.iterations;
    let progress = progress_bar(total as u64, "acquisitions");
    let mut ready = 0;
    let mut started = None;
    let mut sections = Vec::with_capacity(total);
    let mut kills = Vec::new();
    let mut random = Random::seeded();
    let mut next_kill = None;
    let mut finished = 0;
    let mut cpu = Duration::ZERO;
    while finished < config.processes {
        let wait =
            next_kill.map_or(Duration::from_secs(3600), |at: Instant| at.saturating_duration_since(Instant::now()));
        let event = match received.recv_timeout(wait) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Kill a worker that still has work, wherever it is in the protocol.
                let candidates: Vec<usize> = (0..workers.0.len())
                    .filter(|&i| !workers.0[i].killed && workers.0[i].reported < config.iterations)
                    .collect();
                if !candidates.is_empty() {
                    let slot = &mut workers.0[candidates[random.below(candidates.len())]];
                    let spent = slot.cpu_since_start();
                    if slot.child.kill().is_ok() {
                        cpu += spent;
                        slot.killed = true;
                        kills.push(now_ns());
                    }
                }
                next_kill = (kills.len() < config.kills).then(|| Instant::now() + random.kill_pause());
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("lost every worker's output"),
        };
        match event {
            Event::Line(_, line) if line == "ready" => {
                ready += 1;
                if ready == config.processes && started.is_none() {
                    for worker in &mut workers.0 {
                        start(worker);
                    }
                    started = Some(Instant::now());
                    next_kill = (config.kills > 0).then(|| Instant::now() + random.kill_pause());
                }
            }
            Event::Line(slot, line) => {
                sections.push(parse_section(slot, &line)?);
                workers.0[slot].reported += 1;
                progress.inc(1);
            }
            Event::Done(index) => {
                let worker = &mut workers.0[index];
                if !worker.killed {
                    cpu += worker.cpu_since_start();
                }
                let status = worker.child.wait()?;
                let left = config.iterations - worker.reported.min(config.iterations);
                if worker.killed && left > 0 {
                    // A replacement starts at once: the run is under way.
                    *worker = slot(spawn(index, left), worker.reported)?;
                    start(worker);
                    continue;
                }
                // One failure ends the run: the others may be waiting on a
                // start signal or a lock that will never come.
                ensure!(worker.killed || status.success(), "worker {index} failed ({status}); its message is above");
                finished += 1;
            }
        }
    }
    let elapsed = started.map(|at| at.elapsed()).unwrap_or_default();
    progress.finish_and_clear();
    ensure!(sections.len() == total, "workers reported {} of {total} acquisitions", sections.len());

    let counter_file = dirs[0].join(COUNTER_FILE);
    let counter = stale::again(|| std::fs::read_to_string(&counter_file))
        .with_context(|| format!("reading the counter {}", counter_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("parsing the counter {}", counter_file.display()))?;
    sections.sort_by_key(|s| s.enter_ns);
    let overlaps = count_overlaps(&sections);
    Ok(Report { config: config.clone(), dirs: dirs.to_vec(), elapsed, sections, counter, overlaps, kills, cpu })
}

/// Sends `worker` the start signal: a line on its stdin.
fn start(worker: &mut Slot) {
    worker.cpu_at_start = crate::cpu::used(worker.child.id());
    if let Some(mut stdin) = worker.start.take() {
        // A worker killed meanwhile has closed its end: nothing to start.
        let _ = writeln!(stdin, "go");
    }
}

/// A small xorshift generator: where and when `--kill` strikes need not be
/// unpredictable, only spread.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        Random(now_ns() as u64 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// 5 to 50 ms: often enough to catch workers in every step.
    fn kill_pause(&mut self) -> Duration {
        Duration::from_micros(5_000 + self.next() % 45_000)
    }
}

fn worker_args(config: &Config, dir: &Path, worker: usize, iterations: usize) -> Vec<String> {
    debug_assert!(config.runner_for(worker).python().is_none());
    let mut args = vec![
        "--dir".into(),
        dir.display().to_string(),
        "--iterations".into(),
        iterations.to_string(),
        "--hold-ms".into(),
        (config.hold.as_secs_f64() * 1e3).to_string(),
        "--runner".into(),
        config.runner_for(worker).name().into(),
        "--verification-delay".into(),
        config.verification_delay.as_secs_f64().to_string(),
        "--retry-interval".into(),
        config.retry_interval.as_secs_f64().to_string(),
    ];
    if let Some(lifetime) = config.stale_after {
        args.extend(["--stale-after".into(), lifetime.as_secs_f64().to_string()]);
    }
    if config.no_queue {
        args.push("--no-queue".into());
    }
    if config.renew {
        args.push("--renew".into());
    }
    args
}

/// `[evicted] ENTER_NS EXIT_NS WAIT_NS [FENCE]` (other programs' workers
/// print no fence).
fn parse_section(worker: usize, line: &str) -> Result<Section> {
    let (evicted, numbers) = match line.strip_prefix(EVICTED) {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let fields: Vec<u128> = numbers
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("worker {worker} printed {line:?}"))?;
    let (enter_ns, exit_ns, wait_ns, fence) = match fields[..] {
        [enter, exit, wait] => (enter, exit, wait, 0),
        [enter, exit, wait, fence] => (enter, exit, wait, fence as u64),
        _ => bail!("worker {worker} printed {line:?}"),
    };
    Ok(Section { worker, enter_ns, exit_ns, wait: Duration::from_nanos(wait_ns as u64), fence, evicted })
}

/// What a worker prints before a section whose lock was broken under it.
const EVICTED: &str = "evicted ";

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// `uuidlock contend-worker ARGS`: one worker process. Prints `ready`, waits
/// for the start signal (a line on stdin), then one line `ENTER_NS EXIT_NS WAIT_NS` per
/// acquisition.
pub fn worker_main(config: Config) -> i32 {
    match work(&config) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("uuidlock {WORKER_COMMAND}: {e:#}");
            exit::IO
        }
    }
}

/// How a worker takes and releases the lock.
enum Taker {
    Component(Locker),
    /// Component workers holding self-renewing leases (`--renew`).
    Lease(Locker),
    Command(Runtime, Vec<Grant>),
    None,
}

/// A lock a worker holds.
enum Held {
    Token(String),
    Lease(Box<Lease>),
    Nothing,
}

impl Taker {
    /// Takes the lock; what is held, and the fence (0 without a lock).
    fn acquire(&self, lock: &Path, options: &Options) -> Result<(Held, u64)> {
        match self {
            Taker::Component(locker) => {
                let acquired = locker.acquire(lock, options)?.into_acquired();
                Ok((Held::Token(acquired.token.into_string()), acquired.fence))
            }
            Taker::Lease(locker) => {
                let lease = locker.lease(lock, options)?;
                let fence = lease.fence();
                Ok((Held::Lease(Box::new(lease)), fence))
            }
            Taker::Command(runtime, grants) => {
                let lock = lock.to_str().context("the lock path is not UTF-8")?;
                let seconds = |d: Duration| d.as_secs_f64().to_string();
                let mut args = vec![
                    "acquire".to_owned(),
                    lock.to_owned(),
                    "--fence".into(),
                    "--verification-delay".into(),
                    seconds(options.verification_delay),
                    "--retry-interval".into(),
                    seconds(options.retry_interval),
                    "--timeout".into(),
                    seconds(WORKER_TIMEOUT),
                ];
                if let Some(lifetime) = options.stale_after {
                    args.extend(["--stale-after".into(), seconds(lifetime)]);
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = runtime.run_command(&args, grants)?;
                ensure!(output.code == 0, "acquire exited {}: {}", output.code, output.stderr.trim());
                let (token, fence) =
                    output.stdout.trim().split_once(' ').context("acquire --fence printed no fence")?;
                Ok((Held::Token(token.to_owned()), fence.parse().context("acquire --fence printed a bad fence")?))
            }
            Taker::None => Ok((Held::Nothing, 0)),
        }
    }

    /// Releases the lock; `true` when it turned out to have been broken
    /// under us (an eviction), so that there was nothing to release.
    fn release(&self, lock: &Path, held: Held) -> Result<bool> {
        let evicted = |result: Result<(), LockError>| match result {
            Ok(()) => Ok(false),
            Err(LockError::NotOwner) => Ok(true),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        match (self, held) {
            (_, Held::Lease(lease)) => evicted(lease.release()),
            (Taker::Component(locker), Held::Token(token)) => evicted(locker.release(lock, &token)),
            (Taker::Command(runtime, grants), Held::Token(token)) => {
                let lock = lock.to_str().context("the lock path is not UTF-8")?;
                let output = runtime.run_command(&["release", lock, &token], grants)?;
                match output.code {
                    exit::OK => Ok(false),
                    exit::NOT_OWNER => Ok(true),
                    code => bail!("release exited {code}: {}", output.stderr.trim()),
                }
            }
            _ => Ok(false),
        }
    }
}

fn work(config: &Config) -> Result<()> {
    let dir = config.dir.first().context("a worker needs --dir")?;
    let runtime = Runtime::new()?;
    let &[runner] = &config.runner[..] else { bail!("a worker takes one --runner") };
    let taker = match runner {
        Runner::Component | Runner::Mixed if config.renew => Taker::Lease(Locker::new(&runtime, &[dir])?),
        Runner::Component | Runner::Mixed => Taker::Component(Locker::new(&runtime, &[dir])?),
        Runner::Command => Taker::Command(runtime, vec![uuidlock_host::paths::grant(dir)?]),
        Runner::None => Taker::None,
        python => bail!("--runner {}: not a worker of this binary", python.name()),
    };
    let options = config.lock_options();
    let (lock, counter) = (dir.join(LOCK_FILE), dir.join(COUNTER_FILE));
    let counter_aside = dir.join(format!("{COUNTER_FILE}.{}", std::process::id()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    // The start signal; a closed stdin (the parent gone) starts nothing.
    if std::io::stdin().read_line(&mut String::new())? == 0 {
        bail!("the contend parent went away before the start");
    }
    for _ in 0..config.iterations {
        let asked = Instant::now();
        let (held, fence) = taker.acquire(&lock, &options)?;
        let wait = asked.elapsed();
        let enter_ns = now_ns();
        // The non-atomic read-modify-write that only mutual exclusion keeps
        // whole. On a share, through each worker's own client: a stale
        // handle (another client replaced the counter) is looked up again,
        // as the lock's own files are (uuidlock::stale).
        let read = stale::again(|| std::fs::read_to_string(&counter))
            .with_context(|| format!("reading the counter {}", counter.display()))?;
        let value: u64 = read.trim().parse().with_context(|| format!("parsing the counter {}", counter.display()))?;
        std::thread::sleep(config.hold);
        // Replaced whole (written aside, renamed), so that without a lock the
        // run shows lost updates rather than a torn read.
        std::fs::write(&counter_aside, (value + 1).to_string())
            .with_context(|| format!("writing {}", counter_aside.display()))?;
        stale::again(|| std::fs::rename(&counter_aside, &counter))
            .with_context(|| format!("replacing the counter {}", counter.display()))?;
        let exit_ns = now_ns();
        let evicted = if taker.release(&lock, held)? { EVICTED } else { "" };
        writeln!(out, "{evicted}{enter_ns} {exit_ns} {} {fence}", wait.as_nanos())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(worker: usize, enter_ns: u128, exit_ns: u128) -> Section {
        Section { worker, enter_ns, exit_ns, wait: Duration::ZERO, fence: 0, evicted: false }
    }

    #[test]
    fn fences_must_rise_in_section_order() {
        let fenced = |fence, enter| Section { fence, ..section(0, enter, enter + 1) };
        assert_eq!(count_fence_inversions(&[fenced(1, 0), fenced(2, 10), fenced(5, 20)]), 0);
        assert_eq!(count_fence_inversions(&[fenced(1, 0), fenced(3, 10), fenced(2, 20), fenced(3, 30)]), 2);
        // Workers without fences (other programs) are not judged.
        assert_eq!(count_fence_inversions(&[fenced(0, 0), fenced(0, 10)]), 0);
    }

    #[test]
    fn worker_lines_parse_with_and_without_fence_and_eviction() {
        let plain = parse_section(3, "10 20 5").unwrap();
        assert_eq!((plain.worker, plain.enter_ns, plain.fence, plain.evicted), (3, 10, 0, false));
        let evicted = parse_section(1, "evicted 10 20 5 42").unwrap();
        assert_eq!((evicted.fence, evicted.evicted), (42, true));
        assert!(parse_section(0, "10 20").is_err() && parse_section(0, "evicted x").is_err());
    }

    #[test]
    fn overlaps_are_counted_even_behind_a_long_section() {
        let sorted = [section(0, 0, 100), section(1, 10, 20), section(2, 50, 60), section(0, 100, 110)];
        assert_eq!(count_overlaps(&sorted), 2);
        assert_eq!(count_overlaps(&[section(0, 0, 10), section(1, 10, 20)]), 0);
    }

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

    #[test]
    fn the_json_summary_round_trips() {
        let report = Report {
            config: Config::default(),
            dirs: vec![PathBuf::from("/tmp/x")],
            elapsed: Duration::from_secs(1),
            sections: vec![section(0, 0, 10), section(1, 20, 30)],
            counter: 2,
            overlaps: 0,
            kills: vec![],
            cpu: Duration::from_millis(500),
        };
        let json = serde_json::to_string(&report.summary()).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report.summary());
        assert_eq!((back.counter, back.expected, back.handoff_ratio), (2, 100, 1.0));
        assert_eq!((back.cpu_per_acquisition_s, back.cores), (0.25, 0.5));
    }
}
