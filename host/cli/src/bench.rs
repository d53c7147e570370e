//! The side-by-side benchmark: `uuidlock bench`.
//!
//! Everything is measured in one run, on one directory, so ratios compare
//! like with like on a shared, noisy machine:
//!
//! 1. *Uncontended* acquire+release latency, in interleaved rounds (each
//!    round runs a batch of every subject, so drift hits all alike):
//!    - `floor`: the raw syscalls the protocol needs at least, natively
//!      (exclusive create + write, read back, read, unlink);
//!    - `native`: the protocol code compiled natively (`uuidlock::protocol`);
//!    - `component`: the component through the host API, instance reused;
//!    - `component, plain wasmtime`: the same component in wasmtime-wasi as
//!      it comes ([`crate::plain_host`]), what a plain embedding gets, and
//!      `plain wasmtime, allow_blocking` with the setting that runs file
//!      calls on the calling thread;
//!    - `command`: the command module, one instantiation per call, as a
//!      script's `wasmtime run` would (but without process start);
//!    - `component renewal`: one renewal (refresh) of a held lock with a
//!      lifetime, what a lease does every third of its lifetime;
//!    - with `--anchors`, Python's uuid-filelock (delay 0 and its default
//!      0.1 s), filelock.SoftFileLock and flufl.lock, from a venv the bench
//!      makes.
//! 2. *Contention*: `contend` with N processes, with a 1 ms critical section
//!    and with none, and with 8N processes: throughput, waits, hand-off
//!    ratio, and the CPU time the workers used. Beside them, the
//!    ceiling (one process, no lock: what the critical section allows) and,
//!    with `--anchors`, the Python libraries under the same checks.
//! 3. *Cold start*: from process start to the first lock held and released,
//!    for the native binary (compiled code cached) and, when a `wasmtime`
//!    CLI is found, for `wasmtime run uuidlock.wasm`.
//! 4. *Calls*: the WASI calls of each operation (acquire, release, renewal,
//!    the modes, a hand-off), by kind, counted by the simulator's host
//!    ([`crate::simulate::calls`]); alone with `--calls`, in moments.
//! 5. *Host syscalls*: with `--syscalls` (alone, no timing), the syscalls
//!    the process makes per operation of each subject of 1, counted by
//!    `strace` ([`crate::syscalls`]).
//!
//! Medians and 99th percentiles are reported, with ratios to the floor.
//! Nothing here asserts a time: figures are for people to read.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::contend::{self, count, MAX_ITERATIONS, MAX_PROCESSES};
use crate::plain_host::{Compiled, PlainHost};
use crate::progress::progress_bar;
use crate::signals as interrupt;
use crate::simulate::{self, calls};
use crate::stats::percentile;
use crate::{exit, peers, plot, syscalls};
use uuidlock_host::{engine, Grant, Locker, Options};

/// The bench's settings: the flags of `uuidlock bench`.
#[derive(Args, Clone, Debug)]
#[command(after_help = "Progress goes to stderr when it is a terminal.
Exit codes: 0 done, 2 usage error, 4 a measurement failed.")]
pub struct Config {
    /// Where to measure (e.g. a tmpfs or a disk) [default: a new temporary
    /// directory]
    #[arg(long, value_name = "D")]
    pub dir: Option<PathBuf>,
    /// Interleaved rounds for latency (1 to 10000)
    #[arg(long, value_name = "R", default_value = "20", value_parser = count::<10_000>)]
    pub rounds: usize,
    /// Acquire+release pairs per subject per round (1 to 100000)
    #[arg(long, value_name = "B", default_value = "50", value_parser = count::<100_000>)]
    pub batch: usize,
    /// Contending processes (1 to 1024)
    #[arg(long, value_name = "N", default_value = "8", value_parser = count::<MAX_PROCESSES>)]
    pub processes: usize,
    /// Acquisitions per process (1 to 1000000)
    #[arg(long, value_name = "M", default_value = "100", value_parser = count::<MAX_ITERATIONS>)]
    pub acquisitions: usize,
    /// Also measure the Python libraries (installs them from PyPI into a
    /// venv under the uuidlock cache directory)
    #[arg(long)]
    pub anchors: bool,
    /// A smoke run: few rounds, small batches, short contention (overrides
    /// the four counts above)
    #[arg(long)]
    pub quick: bool,
    /// Print the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Draw each contention run's wait distribution as SVG, one panel per
    /// run on one time axis
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Only count the WASI calls of each operation (no timing; takes a
    /// second or two)
    #[arg(long, conflicts_with_all = ["anchors", "plot", "quick", "dir"])]
    pub calls: bool,
    /// Count the calls of another build of the guest command (a
    /// wasm32-wasip1 module), to compare two builds
    #[arg(long, value_name = "FILE", requires = "calls")]
    pub guest: Option<PathBuf>,
    /// Only count the host's syscalls per operation of each uncontended
    /// subject, with strace (no timing; takes ten seconds or so)
    #[arg(long, conflicts_with_all = ["anchors", "plot", "quick", "calls"])]
    pub syscalls: bool,
    /// Set up, then run one uncontended subject B times (`--batch`) in
    /// `--dir`, and print nothing: what `--syscalls` counts
    #[arg(long, value_name = "SUBJECT", hide = true, requires = "dir")]
    pub repeat: Option<String>,
}

impl Default for Config {
    /// The defaults `uuidlock bench --help` documents: the flags' own.
    fn default() -> Self {
        let command = Config::augment_args(clap::Command::new("bench"));
        Config::from_arg_matches(&command.get_matches_from(["bench"])).expect("the defaults parse")
    }
}

/// `uuidlock bench`: returns the exit code.
pub fn main(mut config: Config) -> i32 {
    if config.quick {
        (config.rounds, config.batch, config.processes, config.acquisitions) = (3, 10, 3, 10);
    }
    // An interrupt ends the bench at its next step, and its directory goes.
    if let Err(e) = interrupt::catch(|_, _| {}) {
        eprintln!("uuidlock bench: cannot catch signals ({e}); an interrupt may leave its directory behind");
    }
    if config.calls {
        return calls_only(&config);
    }
    if let Some(subject) = &config.repeat {
        return match repeat(&config, subject) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("uuidlock bench: {e:#}");
                exit::IO
            }
        };
    }
    if config.syscalls {
        return syscalls_only(&config);
    }
    let result = run(&config);
    if let Some(signal) = interrupt::requested() {
        eprintln!("uuidlock bench: interrupted by signal {signal}; its directory was removed");
        return exit::signal(signal);
    }
    match result {
        Ok(results) => {
            if config.json {
                println!("{}", serde_json::to_string(&results.summary()).expect("plain data serialises"));
            } else {
                print!("{}", results.to_text());
            }
            if let Some(path) = &config.plot {
                if let Err(e) = results.draw().and_then(|svg| Ok(fs::write(path, svg)?)) {
                    eprintln!("uuidlock bench: cannot write the plot to {}: {e:#}", path.display());
                    return exit::IO;
                }
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("uuidlock bench: {e:#}");
            exit::IO
        }
    }
}

/// `uuidlock bench --calls`: the call table alone.
fn calls_only(config: &Config) -> i32 {
    match simulate::count_calls(config.guest.as_deref()) {
        Ok(rows) if config.json => {
            println!("{}", serde_json::to_string(&calls_summary(&rows)).expect("plain data serialises"));
            exit::OK
        }
        Ok(rows) => {
            print!("{}", calls::table(&rows));
            exit::OK
        }
        Err(e) => {
            eprintln!("uuidlock bench: counting the calls: {e:#}");
            exit::IO
        }
    }
}

/// One subject's latencies, sorted.
#[derive(Debug)]
pub struct Latency {
    pub name: String,
    pub samples: Vec<Duration>,
}

impl Latency {
    pub fn median(&self) -> Duration {
        percentile(&self.samples, 0.5)
    }
    pub fn p99(&self) -> Duration {
        percentile(&self.samples, 0.99)
    }
}

/// A contention run's summary.
#[derive(Debug)]
pub struct Contention {
    /// Who took the lock, and how.
    pub name: String,
    pub processes: usize,
    pub hold: Duration,
    pub per_second: f64,
    pub handoff_ratio: f64,
    pub violations: usize,
    /// Every wait, sorted.
    pub waits: Vec<Duration>,
    /// The workers' CPU time per acquisition, and in cores kept busy.
    pub cpu_per_acquisition: Duration,
    pub cores: f64,
    /// Cores the whole run kept busy, start-up and this process included.
    pub whole_cores: Option<f64>,
}

impl Contention {
    pub fn wait_p50(&self) -> Duration {
        percentile(&self.waits, 0.5)
    }
    pub fn wait_p99(&self) -> Duration {
        percentile(&self.waits, 0.99)
    }
    pub fn wait_max(&self) -> Duration {
        self.waits.last().copied().unwrap_or_default()
    }
}

/// Everything a bench run measured.
#[derive(Debug)]
pub struct Results {
    pub dir: PathBuf,
    pub latencies: Vec<Latency>,
    pub contention: Vec<Contention>,
    pub cold_starts: Vec<Latency>,
    pub processes: usize,
    pub acquisitions: usize,
    /// The WASI calls of each operation.
    pub calls: Vec<calls::Row>,
}

/// Runs every measurement.
///
/// # Errors
/// A subject failed (the message names it).
pub fn run(config: &Config) -> Result<Results> {
    in_own_dir(config, |dir| measure(config, dir))
}

/// Runs `f` in a directory of the bench's own inside `--dir` (or the
/// temporary directory), removed at the end (also when interrupted):
/// nothing of the bench's is left in the user's.
fn in_own_dir<T>(config: &Config, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let base = match &config.dir {
        Some(dir) => {
            ensure!(dir.is_dir(), "--dir {}: no such directory; create it first", dir.display());
            std::path::absolute(dir)?
        }
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("uuidlock-bench-{}", std::process::id()));
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = f(&dir);
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Stops a measurement that an interrupt asked to stop (the guest's own
/// calls stop at their next sleep; the native loops look here).
fn stop_if_interrupted() -> Result<()> {
    match interrupt::requested() {
        Some(signal) => anyhow::bail!("interrupted by signal {signal}; the bench's directory was removed"),
        None => Ok(()),
    }
}

fn measure(config: &Config, dir: &Path) -> Result<Results> {
    let runs = contention_runs(config)?;
    // Steps: uncontended, the anchors, each contention run, cold start.
    let progress = progress_bar(2 + u64::from(config.anchors) + runs.len() as u64, "");
    let step = |what: String| {
        progress.set_message(what);
        progress.inc(1);
    };
    progress.set_message("uncontended latency");
    let mut latencies = uncontended(config, dir)?;
    if config.anchors {
        step("Python anchors".into());
        latencies.extend(anchors(config, dir)?);
    }
    let mut contention = Vec::new();
    for (index, (name, run)) in runs.into_iter().enumerate() {
        stop_if_interrupted()?;
        step(format!("contention: {name}"));
        contention.push(contended(&dir.join(format!("contend-{index}")), name, &run)?);
    }
    stop_if_interrupted()?;
    step("cold start".into());
    let cold_starts = cold_starts(config, dir)?;
    let calls = simulate::count_calls(None).map_err(|e| anyhow::anyhow!("counting the calls: {e:#}"))?;
    progress.finish_and_clear();
    Ok(Results {
        dir: dir.to_path_buf(),
        latencies,
        contention,
        cold_starts,
        processes: config.processes,
        acquisitions: config.acquisitions,
        calls,
    })
}

/// `uuidlock bench --syscalls`: the host's syscalls per operation alone.
fn syscalls_only(config: &Config) -> i32 {
    let counted = in_own_dir(config, |dir| {
        let exe = std::env::current_exe().context("finding this program")?;
        let repeat = |subject: &str, times: usize, at: &Path| {
            let mut command = Command::new(&exe);
            command.args(["bench", "--repeat", subject, "--batch", &times.to_string(), "--dir"]).arg(at);
            command
        };
        syscalls::count(dir, &SUBJECTS, repeat, stop_if_interrupted)
    });
    // An interrupt reaches strace's process too, and ends the run there.
    if let Some(signal) = interrupt::requested() {
        eprintln!("uuidlock bench: interrupted by signal {signal}; its directory was removed");
        return exit::signal(signal);
    }
    match counted {
        Ok(rows) if config.json => {
            println!("{}", serde_json::to_string(&rows).expect("plain data serialises"));
            exit::OK
        }
        Ok(rows) => {
            print!("{}", syscalls::table(&rows));
            exit::OK
        }
        Err(e) => {
            eprintln!("uuidlock bench: {e:#}");
            exit::IO
        }
    }
}

/// `uuidlock bench --repeat SUBJECT`: sets up, runs `subject` once to warm
/// up and then `--batch` times.
fn repeat(config: &Config, subject: &str) -> Result<()> {
    if !SUBJECTS.contains(&subject) {
        bail!("--repeat {subject:?}: no such subject; the subjects are {}", SUBJECTS.join(", "));
    }
    let dir = config.dir.as_deref().context("--repeat needs --dir")?;
    let dir = std::path::absolute(dir)?;
    with_subjects(&dir, |subjects| {
        let (_, run) = subjects.iter_mut().find(|(name, _)| *name == subject).context("a subject of SUBJECTS")?;
        for _ in 0..=config.batch {
            stop_if_interrupted()?;
            run()?;
        }
        Ok(())
    })
}

/// An acquire+release pair under test.
type Subject<'a> = (&'static str, Box<dyn FnMut() -> Result<()> + 'a>);

/// Where the guest sees the bench's directory (the command's and the plain
/// hosts' grant).
const GUEST_DIR: &str = "/bench";

/// The uncontended subjects, by name, in the order they are measured.
const SUBJECTS: [&str; 7] = [
    "floor",
    "native",
    "component",
    "component, plain wasmtime",
    "plain wasmtime, allow_blocking",
    "component renewal",
    "command",
];

fn uncontended(config: &Config, dir: &Path) -> Result<Vec<Latency>> {
    with_subjects(dir, |subjects| {
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
        // Warm up every subject once, then interleave.
        for (name, subject) in subjects.iter_mut() {
            subject().with_context(|| format!("warming up {name}"))?;
        }
        for _ in 0..config.rounds {
            for (i, (name, subject)) in subjects.iter_mut().enumerate() {
                stop_if_interrupted()?;
                for _ in 0..config.batch {
                    let start = Instant::now();
                    subject().with_context(|| format!("measuring {name}"))?;
                    samples[i].push(start.elapsed());
                }
            }
        }
        Ok(subjects
            .iter()
            .zip(samples)
            .map(|((name, _), mut samples)| {
                samples.sort();
                Latency { name: (*name).into(), samples }
            })
            .collect())
    })
}

/// Runs `f` with the uncontended subjects ([`SUBJECTS`]), set up in `dir`.
fn with_subjects<T>(dir: &Path, f: impl FnOnce(&mut [Subject]) -> Result<T>) -> Result<T> {
    let lock = |name: &str| dir.join(name).to_str().map(str::to_owned).context("the directory is not UTF-8");
    let runtime = crate::signals::runtime()?;
    let locker = Locker::new(&runtime, &[dir])?;
    let grants = [Grant::new(dir.to_path_buf(), GUEST_DIR)];
    let fast = Options { verification_delay: Duration::ZERO, ..Options::default() };
    let (floor, native, component) = (lock("floor.lock")?, lock("native.lock")?, lock("component.lock")?);
    let lifetime = Options { stale_after: Some(Duration::from_secs(600)), ..fast.clone() };
    let renewed = locker.acquire(lock("renewed.lock")?, &lifetime)?;
    // The plain hosts are made at their first call (the warm-up), so that
    // `--repeat` of another subject does not compile the component; the
    // two compile it once between them.
    let compiled: OnceCell<Compiled> = OnceCell::new();
    let plain = |allow_blocking: bool| {
        let compiled = &compiled;
        let mut host: Option<PlainHost> = None;
        move || -> Result<()> {
            let host = match &mut host {
                Some(host) => host,
                None => {
                    let compiled = match compiled.get() {
                        Some(compiled) => compiled,
                        None => {
                            let made = Compiled::new().map_err(|e| anyhow!("the plain host: {e:#}"))?;
                            compiled.get_or_init(|| made)
                        }
                    };
                    let made = PlainHost::new(compiled, dir, GUEST_DIR, allow_blocking);
                    host.insert(made.map_err(|e| anyhow!("the plain host: {e:#}"))?)
                }
            };
            host.acquire_and_release(&format!("{GUEST_DIR}/plain.lock")).map_err(|e| anyhow!("{e:#}"))
        }
    };
    let command_lock = format!("{GUEST_DIR}/command.lock");
    let mut subjects: Vec<Subject> = vec![
        ("floor", Box::new(|| syscall_floor(&floor))),
        (
            "native",
            Box::new(|| {
                let token = uuidlock::protocol::acquire(&native, &fast)?;
                Ok(uuidlock::protocol::release(&native, token.token.as_str())?)
            }),
        ),
        ("component", Box::new(|| Ok(locker.acquire(&component, &fast)?.release()?))),
        ("component, plain wasmtime", Box::new(plain(false))),
        ("plain wasmtime, allow_blocking", Box::new(plain(true))),
        // One renewal of a held lease-like lock (not an acquire+release).
        ("component renewal", Box::new(|| Ok(renewed.refresh()?))),
        (
            "command",
            Box::new(|| {
                let acquired =
                    runtime.run_command(&["acquire", &command_lock, "--verification-delay", "0"], &grants)?;
                ensure!(acquired.code == 0, "acquire: {}", acquired.stderr.trim());
                let released = runtime.run_command(&["release", &command_lock, acquired.stdout.trim()], &grants)?;
                ensure!(released.code == 0, "release: {}", released.stderr.trim());
                Ok(())
            }),
        ),
    ];
    debug_assert!(subjects.iter().map(|(name, _)| *name).eq(SUBJECTS));
    f(&mut subjects)
}

/// The least the protocol must do: exclusive create and write, read back,
/// read (the release's check), unlink.
fn syscall_floor(path: &str) -> Result<()> {
    OpenOptions::new().write(true).create_new(true).open(path)?.write_all(b"1\nfloor\n")?;
    let mut buf = Vec::with_capacity(64);
    for _ in 0..2 {
        buf.clear();
        fs::File::open(path)?.read_to_end(&mut buf)?;
    }
    fs::remove_file(path)?;
    Ok(())
}

/// The contention runs, by name: the component's, the ceiling, and the
/// anchors'.
fn contention_runs(config: &Config) -> Result<Vec<(String, contend::Config)>> {
    let base = contend::Config {
        processes: config.processes,
        iterations: config.acquisitions,
        hold: Duration::from_millis(1),
        ..contend::Config::default()
    };
    let mut runs = vec![
        (
            "ceiling: no lock, 1 process".to_owned(),
            contend::Config {
                processes: 1,
                iterations: config.processes * config.acquisitions,
                runner: vec![contend::Runner::None],
                ..base.clone()
            },
        ),
        ("component".to_owned(), base.clone()),
        ("component, no queue".to_owned(), contend::Config { no_queue: true, ..base.clone() }),
        ("component, no hold".to_owned(), contend::Config { hold: Duration::ZERO, ..base.clone() }),
        // Many waiters (64 by default): what waiting costs as their number grows.
        (
            format!("component, {} processes", config.processes * 8),
            contend::Config {
                processes: config.processes * 8,
                iterations: (config.acquisitions / 4).max(1),
                ..base.clone()
            },
        ),
    ];
    if config.anchors {
        let python = peers::venv()?;
        for anchor in peers::ANCHORS.iter().filter(|anchor| !anchor.slow) {
            let program = contend::Program { name: anchor.name.into(), argv: peers::worker_argv(&python, anchor) };
            runs.push((anchor.name.to_owned(), contend::Config { program: Some(program), ..base.clone() }));
        }
    }
    Ok(runs)
}

/// Runs `run` in `run_dir` (made for it, then removed).
fn contended(run_dir: &Path, name: String, run: &contend::Config) -> Result<Contention> {
    fs::create_dir_all(run_dir)?;
    let report = contend::run(&contend::Config { dir: vec![run_dir.to_path_buf()], ..run.clone() })
        .with_context(|| format!("contention: {name}"));
    let _ = fs::remove_dir_all(run_dir);
    let report = report?;
    Ok(Contention {
        name,
        processes: run.processes,
        hold: run.hold,
        per_second: report.per_second(),
        handoff_ratio: report.handoff_ratio(),
        cpu_per_acquisition: report.cpu_per_acquisition(),
        cores: report.cores(),
        whole_cores: report.whole_cores(),
        violations: report.violations(),
        waits: report.waits(),
    })
}

fn cold_starts(config: &Config, dir: &Path) -> Result<Vec<Latency>> {
    let runs = config.rounds.max(5);
    let lock = dir.join("cold.lock");
    let lock = lock.to_str().context("the directory is not UTF-8")?;
    let exe = std::env::current_exe()?;
    let mut native = Vec::new();
    for _ in 0..runs {
        stop_if_interrupted()?;
        let start = Instant::now();
        let output = Command::new(&exe).args(["acquire", lock, "--verification-delay", "0"]).output()?;
        native.push(start.elapsed());
        ensure!(output.status.success(), "native acquire: {}", String::from_utf8_lossy(&output.stderr).trim());
        uuidlock::protocol::release(lock, String::from_utf8_lossy(&output.stdout).trim())?;
    }
    native.sort();
    let mut results = vec![Latency { name: "native binary".into(), samples: native }];
    if let Some(wasmtime) = find_wasmtime() {
        let module = dir.join("uuidlock.wasm");
        fs::write(&module, engine::COMMAND_WASM)?;
        // wasmtime's own cache of compiled code is on by default; without it,
        // every run compiles the module, as a first run on a machine does.
        for (name, flags) in
            [("wasmtime run uuidlock.wasm", &[][..]), ("wasmtime run, no compile cache", &["-C", "cache=n"][..])]
        {
            let mut samples = Vec::new();
            for _ in 0..runs {
                stop_if_interrupted()?;
                let start = Instant::now();
                let output = Command::new(&wasmtime)
                    .arg("run")
                    .args(flags)
                    .arg("--dir")
                    .arg(format!("{}::/bench", dir.display()))
                    .arg(&module)
                    .args(["acquire", "/bench/cold.lock", "--verification-delay", "0"])
                    .output()?;
                samples.push(start.elapsed());
                if !output.status.success() {
                    bail!("{name}: {}", String::from_utf8_lossy(&output.stderr).trim());
                }
                uuidlock::protocol::release(lock, String::from_utf8_lossy(&output.stdout).trim())?;
            }
            samples.sort();
            results.push(Latency { name: name.into(), samples });
        }
        let _ = fs::remove_file(&module);
    }
    Ok(results)
}

/// `$WASMTIME`, or `wasmtime` on `PATH`.
fn find_wasmtime() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join("wasmtime")).find(|p| p.is_file())
}

/// The Python libraries, each timed by a script in its own interpreter.
fn anchors(config: &Config, dir: &Path) -> Result<Vec<Latency>> {
    let python = peers::venv()?;
    let count = (config.rounds * config.batch).min(1000);
    let mut results = Vec::new();
    for anchor in &peers::ANCHORS {
        let (name, make) = (anchor.name, anchor.make);
        let n = if anchor.slow { count.min(20) } else { count };
        let script = format!(
            "{make}\nimport sys, time\npath = sys.argv[1]\nfor _ in range({n}):\n    acquire, release = make(path)\n    t = time.perf_counter_ns()\n    acquire()\n    release()\n    print(time.perf_counter_ns() - t)\n"
        );
        let output = Command::new(&python).arg("-c").arg(&script).arg(dir.join("anchor.lock")).output()?;
        ensure!(output.status.success(), "{name}: {}", String::from_utf8_lossy(&output.stderr).trim());
        let mut samples: Vec<Duration> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.trim().parse().ok().map(Duration::from_nanos))
            .collect();
        samples.sort();
        results.push(Latency { name: name.into(), samples });
    }
    Ok(results)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

impl Results {
    /// A run's throughput over the ceiling's (one process, no lock), when
    /// both had the same critical section.
    fn ceiling_ratio(&self, run: &Contention) -> Option<f64> {
        let ceiling = self.contention.iter().find(|c| c.processes == 1)?;
        (ceiling.hold == run.hold).then(|| run.per_second / ceiling.per_second)
    }

    fn floor(&self) -> Duration {
        self.latencies.iter().find(|l| l.name == "floor").map(Latency::median).unwrap_or_default()
    }

    fn to_text(&self) -> String {
        let mut text = String::new();
        let floor = self.floor().as_secs_f64().max(1e-12);
        let _ = writeln!(text, "uuidlock bench in {}", self.dir.display());
        let _ = writeln!(text, "\nuncontended acquire+release       median µs      p99 µs   x floor");
        for l in &self.latencies {
            let ratio = l.median().as_secs_f64() / floor;
            let _ = writeln!(text, "  {:<30} {:>10} {:>11} {:>9.1}", l.name, us(l.median()), us(l.p99()), ratio);
        }
        let _ = writeln!(
            text,
            "\ncontention: {} processes x {} acquisitions, 1 ms critical section unless said",
            self.processes, self.acquisitions
        );
        let _ = writeln!(
            text,
            "  {:<30} {:>6} {:>10} {:>12} {:>8} {:>9} {:>9} {:>11} {:>11} {:>6} {:>9}",
            "",
            "acq/s",
            "x ceiling",
            "wait p50 ms",
            "p99 ms",
            "max ms",
            "hand-off",
            "violations",
            "cpu ms/acq",
            "cores",
            "all cores"
        );
        for c in &self.contention {
            let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
            let ratio = self.ceiling_ratio(c).map_or("-".into(), |ratio| format!("{ratio:.2}"));
            let _ = writeln!(
                text,
                "  {:<30} {:>6.0} {:>10} {:>12} {:>8} {:>9} {:>9.2} {:>11} {:>11} {:>6.2} {:>9}",
                c.name,
                c.per_second,
                ratio,
                ms(c.wait_p50()),
                ms(c.wait_p99()),
                ms(c.wait_max()),
                c.handoff_ratio,
                c.violations,
                ms(c.cpu_per_acquisition),
                c.cores,
                c.whole_cores.map_or("-".to_owned(), |cores| format!("{cores:.2}"))
            );
        }
        let _ = writeln!(text, "\ncold start to first lock held       median ms      p99 ms");
        for l in &self.cold_starts {
            let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
            let _ = writeln!(text, "  {:<30} {:>11} {:>11}", l.name, ms(l.median()), ms(l.p99()));
        }
        let _ = write!(text, "\n{}", calls::table(&self.calls));
        text
    }

    /// The contention runs' waits, one panel each (the ceiling never waits).
    fn draw(&self) -> Result<String> {
        let series: Vec<plot::Series> = self
            .contention
            .iter()
            .filter(|c| c.processes > 1)
            .map(|c| plot::Series { name: &c.name, waits: &c.waits })
            .collect();
        let title = format!(
            "uuidlock bench: wait before holding the lock ({} processes x {} acquisitions)",
            self.processes, self.acquisitions
        );
        plot::wait_histograms(&title, &series)
    }

    /// The results' figures, as `--json` prints them.
    pub fn summary(&self) -> Summary {
        let floor = self.floor().as_secs_f64().max(1e-12);
        let latency = |l: &Latency| LatencySummary {
            name: l.name.clone(),
            median_s: l.median().as_secs_f64(),
            p99_s: l.p99().as_secs_f64(),
            ratio_to_floor: l.median().as_secs_f64() / floor,
            samples: l.samples.len(),
        };
        let contention = |c: &Contention| ContentionSummary {
            name: c.name.clone(),
            processes: c.processes,
            hold_s: c.hold.as_secs_f64(),
            per_second: c.per_second,
            ceiling_ratio: self.ceiling_ratio(c),
            wait_p50_s: c.wait_p50().as_secs_f64(),
            wait_p99_s: c.wait_p99().as_secs_f64(),
            wait_max_s: c.wait_max().as_secs_f64(),
            handoff_ratio: c.handoff_ratio,
            violations: c.violations,
            cpu_per_acquisition_s: c.cpu_per_acquisition.as_secs_f64(),
            cores: c.cores,
            whole_cores: c.whole_cores,
        };
        Summary {
            processes: self.processes,
            acquisitions: self.acquisitions,
            uncontended: self.latencies.iter().map(latency).collect(),
            contention: self.contention.iter().map(contention).collect(),
            cold_start: self.cold_starts.iter().map(latency).collect(),
            calls: calls_summary(&self.calls),
        }
    }
}

/// What `uuidlock bench --json` prints: one object, durations in seconds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub processes: usize,
    pub acquisitions: usize,
    pub uncontended: Vec<LatencySummary>,
    pub contention: Vec<ContentionSummary>,
    pub cold_start: Vec<LatencySummary>,
    pub calls: Vec<CallsSummary>,
}

/// The WASI calls of one operation ([`calls::Row`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CallsSummary {
    pub operation: String,
    /// Calls that reach the share, in all and by import name.
    pub share: u32,
    pub share_by_kind: std::collections::BTreeMap<String, u32>,
    pub sleeps: u32,
    pub in_process: u32,
    /// Simulated time, the verification delay and waiting included.
    pub took_s: f64,
}

fn calls_summary(rows: &[calls::Row]) -> Vec<CallsSummary> {
    rows.iter()
        .map(|row| CallsSummary {
            operation: row.op.to_owned(),
            share: row.share_total(),
            share_by_kind: row.share.iter().map(|(call, n)| ((*call).to_owned(), *n)).collect(),
            sleeps: row.sleeps,
            in_process: row.in_process,
            took_s: row.took.as_secs_f64(),
        })
        .collect()
}

/// A latency subject: median and 99th percentile.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub name: String,
    pub median_s: f64,
    pub p99_s: f64,
    pub ratio_to_floor: f64,
    pub samples: usize,
}

/// A contention run's figures.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ContentionSummary {
    pub name: String,
    pub processes: usize,
    pub hold_s: f64,
    pub per_second: f64,
    /// Throughput over the ceiling's, when both had the same critical
    /// section; null otherwise.
    pub ceiling_ratio: Option<f64>,
    pub wait_p50_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    pub handoff_ratio: f64,
    pub violations: usize,
    /// The workers' CPU time (user + system) per acquisition, and over the
    /// run's time (cores kept busy).
    pub cpu_per_acquisition_s: f64,
    pub cores: f64,
    /// Cores the whole run kept busy (every process, start-up included).
    pub whole_cores: Option<f64>,
}
