//! The parent of a contention run: it checks the directories, spawns the
//! workers, starts them together, kills and replaces them (`--kill`), and
//! collects their lines into a [`Report`].

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use uuidlock::stale;
use uuidlock_host::Runtime;

use super::report::{parse_section, Checks, Whole};
use super::{now_ns, slot_counter, Config, Program, Report, COUNTER_FILE, LOCK_FILE, WORKER_COMMAND};
use crate::peers;
use crate::progress::progress_bar;

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
    let holders = dirs[0].join(uuidlock::shared::dir(LOCK_FILE));
    ensure!(
        !has_entries(&holders),
        "{} holds shared holders from an earlier run; remove it or choose another --dir",
        holders.display()
    );
    std::fs::write(dirs[0].join(COUNTER_FILE), "0").context("writing the counter file")?;
    for slot in 0..config.slots.unwrap_or(0) {
        std::fs::write(dirs[0].join(slot_counter(slot)), "0").context("writing a slot's counter file")?;
    }
    one_share(dirs)?;
    contend_in(config, dirs)
}

/// Whether the holders' directory `holders` (`<LOCK>.shared`) has an entry
/// (a file named by a number); the directory itself and the spans in it
/// stay after every run (`uuidlock::shared`, "Cleaning up").
fn has_entries(holders: &Path) -> bool {
    std::fs::read_dir(holders).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
        })
    })
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
    // The whole run's CPU, start-up included: this process's and every
    // worker's, once all are reaped (every thread, compiling included).
    let whole_from = (crate::cpu::this_process_and_children(), Instant::now());
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
                sections.push(parse_section(slot, config.is_reader(slot), &line)?);
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
    // Every worker has been waited for (Done), the killed ones too.
    let whole = match (whole_from.0, crate::cpu::this_process_and_children()) {
        (Some(from), Some(to)) => Some(Whole { cpu: to.saturating_sub(from), elapsed: whole_from.1.elapsed() }),
        _ => None,
    };
    progress.finish_and_clear();
    ensure!(sections.len() == total, "workers reported {} of {total} acquisitions", sections.len());

    let read_counter = |name: &str| -> Result<u64> {
        let counter_file = dirs[0].join(name);
        stale::begin();
        stale::again(|| std::fs::read_to_string(&counter_file))
            .with_context(|| format!("reading the counter {}", counter_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parsing the counter {}", counter_file.display()))
    };
    let slot_counters =
        (0..config.slots.unwrap_or(0)).map(|slot| read_counter(&slot_counter(slot))).collect::<Result<Vec<_>>>()?;
    let counter = match config.slots {
        Some(_) => slot_counters.iter().sum(),
        None => read_counter(COUNTER_FILE)?,
    };
    sections.sort_by_key(|s| s.enter_ns);
    let checks = Checks::judge(&sections, config.slots);
    Ok(Report {
        config: config.clone(),
        dirs: dirs.to_vec(),
        elapsed,
        sections,
        counter,
        slot_counters,
        checks,
        kills,
        cpu,
        whole,
    })
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
    // The worker's mode: it is worker 0 of its own run (Config::mode_for).
    if let Some(slots) = config.slots {
        args.extend(["--slots".into(), slots.to_string()]);
    } else if config.is_reader(worker) {
        args.extend(["--processes".into(), "1".into(), "--readers".into(), "1".into()]);
    }
    args
}
