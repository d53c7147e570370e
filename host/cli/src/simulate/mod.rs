//! `uuidlock simulate`: the shipped guest, K instances in one process,
//! against a simulated share and simulated time, interleaved by a seeded
//! scheduler; every run checked, every failure replayable from its seed.
//!
//! The guest reaches the world only through WASI, so the simulator stands
//! in for all of it: the command module (`uuidlock.wasm`, the very bytes
//! the host embeds) runs unchanged, each `acquire`, `refresh` and `release`
//! a fresh instance, as from a shell script; only the 23 preview 1
//! functions it imports are the simulator's.
//!
//! # Layout
//!
//! - [`profile`]: the shares (`local`, `sshfs`, `smb`, `nfs`, `rclone`,
//!   `gluster`) and the faults;
//! - `world`: the simulated share's namespace, caches and clocks;
//! - `wasi`: WASI preview 1 over the world, each call a scheduling point;
//! - `sched`: one run: the scheduler, the clients' workload, and why a seed
//!   replays exactly;
//! - `check`: the checker (exclusion, fences, nothing live deleted,
//!   liveness) and the named limitations;
//! - `rng`: the seeded randomness;
//! - `calls`: the WASI calls of each operation, counted on a scripted run
//!   (the call table of `uuidlock bench`).

pub mod calls;
mod check;
pub mod profile;
mod rng;
mod sched;
mod wasi;
mod world;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use wasmtime::error::Context;
use wasmtime::Result;
use wasmtime::{Config as EngineConfig, Engine, Linker, Module};

use crate::exit;
use crate::progress::progress_bar;
use profile::{Faults, Profile};
use sched::{Guest, Outcome, Settings, Workload};

/// How many failing seeds a report shows in full.
const SHOWN: usize = 3;
/// The most clients one run may have.
pub const MAX_CLIENTS: usize = 4096;
/// The largest guest module `--guest` reads.
const MAX_GUEST: u64 = 64 << 20;
/// The most seeds one command may run.
pub const MAX_SEEDS: u64 = 10_000_000;

#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Profiles:
  local    local POSIX filesystem: every step atomic
  sshfs    half the clients cache attributes and listings 10 s, and answer creates of a cached name
           from that cache; \"exists\" is EPERM; whole-second dates
  smb      smbnetfs: exclusive create not atomic across clients, no hard links (claims are
           directories), rename deletes its target first, deleting an open file is busy
  nfs      NFS-like: half the clients cache attributes and listings 3 s; 1% of replies lost
  rclone   a create stays invisible to the other clients for 2 s: unsafe, as the doctor says
  gluster  GlusterFS, default caches: names cached 1 s (ghosts, stale handles), dates by the writer's clock
  all      every profile in turn

Faults (--faults): none; default (every kind, at rates that keep the lease contract:
stalls and clock steps under a quarter of a lifetime); or a list NAME=VALUE,... optionally
after 'default,': stall=P stall-for=SECS kill=P errors=P eio=P estale=P enospc=P ebusy=P
eacces=P (P: per call, 0 to 0.5), clock-steps=N (per simulated second) step-by=SECS skew=SECS
full-disk=SECS (from then until the faults stop, a write that needs a new block fails).

Modes (--mode; each acquisition's drawn from the seed):
  exclusive  every acquire exclusive: writers only
  rw         readers (acquire --shared), and writers for --writers P of the acquisitions (0.25)
  slots      a semaphore's holders (acquire --slots N, N from --slots), writers for --writers P (0)
  mixed      readers and slot holders, even odds, and writers for --writers P (0.25)

Exit codes: 0 no violation, 1 violations found (each with the command that replays it),
2 usage error, 4 the guest cannot be loaded.")]
pub struct Config {
    /// Clients (processes on machines sharing the directory), 1 to 4096
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub clients: usize,
    /// How many seeds to run, one simulated run each
    #[arg(long, value_name = "N", default_value_t = 100, conflicts_with = "seed")]
    pub seeds: u64,
    /// The first seed of --seeds
    #[arg(long, value_name = "SEED", default_value_t = 1, conflicts_with = "seed")]
    pub first_seed: u64,
    /// Run this one seed (to replay it)
    #[arg(long)]
    pub seed: Option<u64>,
    /// The share to simulate (see below), or several, comma-separated
    #[arg(long, default_value = "local")]
    pub profile: String,
    /// What goes wrong (see below)
    #[arg(long, default_value = "default")]
    pub faults: String,
    /// Simulated seconds each run's clients keep taking the lock (faults stop after 60% of it)
    #[arg(long, value_name = "SECS", default_value = "20")]
    pub duration: f64,
    /// The verification delay [default: the one `uuidlock doctor` names for the profile]
    #[arg(long, value_name = "SECS")]
    pub verification_delay: Option<f64>,
    /// The retry interval
    #[arg(long, value_name = "SECS", default_value = "0.1")]
    pub retry_interval: f64,
    /// The locks' lifetime [default: the profile's; three ghosts on gluster]
    #[arg(long, value_name = "SECS")]
    pub stale_after: Option<f64>,
    /// The locks declare no lifetime, as `acquire` without `--stale-after`
    /// (the command line's default). Nobody breaks them, so the default
    /// faults leave out what would leave one for good (kills, injected
    /// errors) and the clock steps that only lifetimes read
    #[arg(long, conflicts_with = "stale_after")]
    pub no_lifetime: bool,
    /// The longest a holder holds (but see --long-holds)
    #[arg(long, value_name = "SECS", default_value = "0.1")]
    pub hold: f64,
    /// The share of holds that last two lifetimes, renewed every third of one
    #[arg(long, value_name = "P", default_value = "0.1")]
    pub long_holds: f64,
    /// Each acquire's timeout (a client that times out tries again)
    #[arg(long, value_name = "SECS", default_value = "30")]
    pub timeout: f64,
    /// Added to every call's latency (a slower network)
    #[arg(long, value_name = "SECS", default_value = "0")]
    pub latency: f64,
    /// The clients poll instead of waiting in the queue (acquire --no-queue):
    /// every waiter tries the lock, and breaks it, at once
    #[arg(long)]
    pub no_queue: bool,
    /// What the clients acquire: exclusive, rw, slots or mixed (see below)
    #[arg(long, default_value = "exclusive")]
    pub mode: String,
    /// With --mode rw, slots or mixed: the share of acquisitions that are
    /// exclusive (writers), 0 to 1 [default: 0.25; 0 with slots]
    #[arg(long, value_name = "P")]
    pub writers: Option<f64>,
    /// With --mode slots or mixed: the semaphore's slots, 1 to 1024 [default: 2]
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
    /// Print the whole trace of the run (with --seed)
    #[arg(long, requires = "seed")]
    pub trace: bool,
    /// Print one JSON object instead
    #[arg(long)]
    pub json: bool,
    /// Threads to run seeds on [default: one per core]
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The guest build a replayed seed was found with; refused if this
    /// binary's guest differs
    #[arg(long, value_name = "HASH")]
    pub build: Option<String>,
    /// Simulate another build of the guest command (a wasm32-wasip1 module)
    #[arg(long, value_name = "FILE")]
    pub guest: Option<PathBuf>,
    /// A planted bug for a --guest built with the planted-bugs feature (tests only)
    #[arg(long, hide = true, requires = "guest")]
    pub plant: Option<String>,
}

/// One profile's figures over all its seeds.
#[derive(Serialize, Debug)]
pub struct Summary {
    pub profile: String,
    pub clients: usize,
    pub seeds: u64,
    pub build: String,
    pub faults: String,
    /// exclusive, rw, slots or mixed.
    pub mode: String,
    /// The share of acquisitions asked for as a writer's.
    pub writers: f64,
    /// The semaphore's slots (slots, mixed).
    pub slots: Option<u32>,
    pub verification_delay_s: f64,
    pub stale_after_s: Option<f64>,
    pub violating_seeds: Vec<u64>,
    pub violations: Vec<Violation>,
    pub limitations: std::collections::BTreeMap<String, u64>,
    pub acquisitions: u64,
    pub per_simulated_second: f64,
    pub calls: u64,
    pub simulated_s: f64,
    pub elapsed_s: f64,
    pub handoff_ratio: f64,
    pub longest_wait_s: f64,
    pub longest_idle_s: f64,
    pub liveness_bound_s: f64,
    pub kills: u64,
    /// Kills between a create of the lock file and its write, each leaving
    /// an empty lock file (only where there are no hard links).
    pub kills_before_writing: u64,
    pub stalls: u64,
    pub injected_errors: u64,
    pub clock_steps: u64,
    pub failed_calls: u64,
    pub failed_renewals: u64,
    /// Acquisitions by writers (exclusive), readers (--shared) and slot
    /// holders (--slots N).
    pub writer_acquisitions: u64,
    pub reader_acquisitions: u64,
    pub slot_acquisitions: u64,
    /// The longest a writer's acquire waited (beside readers or slot
    /// holders: how long they starve it), and writers' acquires that
    /// timed out.
    pub longest_writer_wait_s: f64,
    pub writer_timeouts: u64,
    /// The most live holders at once, in any seed.
    pub most_holders_at_once: u64,
}

#[derive(Serialize, Debug)]
pub struct Violation {
    pub seed: u64,
    pub what: String,
    pub replay: String,
}

fn usage(message: &str) -> i32 {
    eprintln!("uuidlock simulate: {message}; see 'uuidlock simulate --help'");
    exit::USAGE
}

fn secs(value: f64, name: &str, most: f64) -> Result<Duration, String> {
    if !value.is_finite() || !(0.0..=most).contains(&value) {
        return Err(format!("{name} {value} must be from 0 to {most} seconds"));
    }
    Ok(Duration::from_secs_f64(value))
}

/// The settings of one profile's runs, from the command line.
fn settings(config: &Config, profile: Profile) -> Result<Settings, String> {
    let workload = workload(config)?;
    // Locks without a lifetime are run as on a share without lifetimes.
    let profile = if config.no_lifetime { Profile { lifetimes: false, ..profile } } else { profile };
    let faults = Faults::parse(&config.faults, &profile).map_err(|e| format!("--faults: {e}"))?;
    if faults.kill > 0.0 && config.no_lifetime {
        return Err("--faults kill with --no-lifetime: nobody breaks a lock without a lifetime, so a killed \
                    holder's lock stays for good; leave kill out (--faults default has none then)"
            .to_owned());
    }
    if faults.kill > 0.0 && !profile.lifetimes {
        return Err(format!(
            "--faults kill on {}: the share has no lifetimes, so a killed holder's lock stays for good",
            profile.name
        ));
    }
    if config.stale_after.is_some() && !profile.lifetimes {
        return Err(format!("--stale-after on {}: the share has no lifetimes", profile.name));
    }
    let lifetime = match config.stale_after {
        Some(s) => Some(secs(s, "--stale-after", 86_400.0)?),
        None if profile.lifetimes => Some(profile.lifetime),
        None => None,
    };
    let verification_delay = match config.verification_delay {
        Some(d) => secs(d, "--verification-delay", 3600.0)?,
        None => profile.verification_delay,
    };
    Ok(Settings {
        faults,
        clients: config.clients,
        duration: secs(config.duration, "--duration", 3600.0)?,
        verification_delay,
        retry_interval: secs(config.retry_interval, "--retry-interval", 3600.0)?,
        timeout: secs(config.timeout, "--timeout", 86_400.0)?,
        lifetime,
        extra_latency: secs(config.latency, "--latency", 60.0)?,
        hold: secs(config.hold, "--hold", 3600.0)?,
        full_trace: config.trace,
        long_holds: if (0.0..=1.0).contains(&config.long_holds) {
            config.long_holds
        } else {
            return Err(format!("--long-holds {} must be from 0 to 1", config.long_holds));
        },
        queue: !config.no_queue,
        workload,
        profile,
        script: None,
    })
}

/// The modes the clients acquire in, from --mode, --writers and --slots.
fn workload(config: &Config) -> Result<Workload, String> {
    let writers = |default: f64| match config.writers {
        Some(p) if !(0.0..=1.0).contains(&p) => Err(format!("--writers {p} must be from 0 to 1")),
        Some(p) => Ok(p),
        None => Ok(default),
    };
    let slots = || match config.slots {
        Some(n) if n == 0 || n > 1024 => Err(format!("--slots {n} must be from 1 to 1024")),
        Some(n) => Ok(n),
        None => Ok(2),
    };
    let workload = match config.mode.as_str() {
        "exclusive" => Workload::Exclusive,
        "rw" => Workload::Rw { writers: writers(0.25)? },
        "slots" => Workload::Slots { n: slots()?, writers: writers(0.0)? },
        "mixed" => Workload::Mixed { n: slots()?, writers: writers(0.25)? },
        other => return Err(format!("unknown mode {other:?}; known: exclusive, rw, slots, mixed")),
    };
    if config.writers.is_some() && workload == Workload::Exclusive {
        return Err("--writers applies to --mode rw, slots or mixed (with exclusive, every client writes)".into());
    }
    if config.slots.is_some() && workload.slots().is_none() {
        return Err(format!("--slots applies to --mode slots or mixed, not {}", config.mode));
    }
    Ok(workload)
}

pub fn main(config: Config) -> i32 {
    if config.clients == 0 || config.clients > MAX_CLIENTS {
        return usage(&format!("--clients {} must be from 1 to {MAX_CLIENTS}", config.clients));
    }
    if config.seed.is_none() && (config.seeds == 0 || config.seeds > MAX_SEEDS) {
        return usage(&format!("--seeds {} must be from 1 to {MAX_SEEDS}", config.seeds));
    }
    if config.duration <= 0.0 {
        return usage(&format!("--duration {} must be more than 0", config.duration));
    }
    let profiles: Vec<Profile> = if config.profile == "all" {
        Profile::ALL.to_vec()
    } else {
        let mut profiles = Vec::new();
        for name in config.profile.split(',') {
            match Profile::named(name.trim()) {
                Some(p) => profiles.push(p),
                None => return usage(&format!("unknown profile {name:?}; known: {}, all", Profile::names())),
            }
        }
        profiles
    };
    let mut all = Vec::new();
    for profile in &profiles {
        match settings(&config, profile.clone()) {
            Ok(s) => all.push(s),
            Err(message) => return usage(&message),
        }
    }
    let guest = match load_guest(config.guest.as_deref(), config.plant.as_deref()) {
        Ok(guest) => guest,
        Err(e) => {
            eprintln!("uuidlock simulate: cannot load the guest: {e:#}");
            return exit::IO;
        }
    };
    if let Some(build) = &config.build {
        if *build != guest.build {
            eprintln!(
                "uuidlock simulate: this seed was found with guest build {build}, and this binary's guest is {}: \
                 the replay would not be the same run; replay it with the uuidlock that found it",
                guest.build
            );
            return exit::USAGE;
        }
    }
    let seeds: Vec<u64> = match config.seed {
        Some(seed) => vec![seed],
        None => (config.first_seed..config.first_seed.saturating_add(config.seeds)).collect(),
    };
    let mut found = false;
    let mut summaries = Vec::new();
    for settings in &all {
        let started = Instant::now();
        let outcomes = match run_seeds(&guest, settings, &seeds, config.jobs) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                eprintln!("uuidlock simulate: {e:#}");
                return exit::IO;
            }
        };
        let summary = summarise(&config, settings, &guest, &outcomes, started.elapsed());
        found |= !summary.violating_seeds.is_empty();
        if !config.json {
            // A closed pipe (`| head`) is not an error worth a panic.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text(&summary, &outcomes, config.trace).as_bytes());
            let _ = stdout.flush();
        }
        summaries.push(summary);
    }
    if config.json {
        println!("{}", serde_json::json!({ "runs": summaries }));
    }
    if found {
        exit::FOUND
    } else {
        exit::OK
    }
}

/// The WASI calls of each operation of the guest (`guest`, or the one this
/// binary embeds), counted on a scripted run ([`calls`]).
pub fn count_calls(guest: Option<&Path>) -> Result<Vec<calls::Row>> {
    let guest = load_guest(guest, None)?;
    let profile = Profile::named("local").expect("the local profile");
    let script = calls::script();
    let settings = Settings {
        faults: Faults::parse("none", &profile).map_err(wasmtime::Error::msg)?,
        clients: script.len(),
        duration: Duration::from_secs(20),
        verification_delay: Duration::from_millis(100),
        retry_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
        lifetime: None,
        extra_latency: Duration::ZERO,
        hold: Duration::ZERO,
        full_trace: false,
        long_holds: 0.0,
        queue: true,
        workload: Workload::Exclusive,
        profile,
        script: Some(script),
    };
    let outcome = sched::run(&guest, &settings, 1)?;
    calls::rows(&outcome.counted).map_err(wasmtime::Error::msg)
}

fn load_guest(guest: Option<&Path>, plant: Option<&str>) -> Result<Guest> {
    let bytes = match guest {
        Some(path) => {
            // Looked at first: a FIFO would block the read, a huge file fill memory.
            let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
            if !meta.is_file() || meta.len() > MAX_GUEST {
                wasmtime::bail!("{} is not a wasm module (not a regular file of at most 64 MiB)", path.display());
            }
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => uuidlock_host::engine::COMMAND_WASM.to_vec(),
    };
    // wasmtime 48 always supports async calls, which the scheduler needs.
    let engine = Engine::new(&EngineConfig::new())?;
    let module = Module::new(&engine, &bytes).context("compiling the guest")?;
    let mut linker = Linker::new(&engine);
    wasi::link(&mut linker)?;
    let pre = linker.instantiate_pre(&module).context("linking the guest with the simulated WASI")?;
    let env = plant.iter().map(|bug| format!("UUIDLOCK_PLANT={bug}")).collect();
    Ok(Guest { engine, pre, build: build_hash(&bytes), env })
}

/// FNV-1a over the guest's bytes, as 16 hex digits.
fn build_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Runs `seeds` on `jobs` threads; outcomes in seed order.
fn run_seeds(guest: &Guest, settings: &Settings, seeds: &[u64], jobs: Option<usize>) -> Result<Vec<Outcome>> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 64);
    let bar = progress_bar(seeds.len() as u64, &format!("seeds ({})", settings.profile.name));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome>>>> = Mutex::new((0..seeds.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(seeds.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= seeds.len() {
                    break;
                }
                let outcome = sched::run(guest, settings, seeds[i]);
                results.lock().expect("no panics while held")[i] = Some(outcome);
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    results.into_inner().expect("no panics while held").into_iter().map(|r| r.expect("every seed ran")).collect()
}

fn replay(config: &Config, settings: &Settings, guest: &Guest, seed: u64) -> String {
    let mut command = format!(
        "uuidlock simulate --profile {} --clients {} --duration {} --faults '{}' --retry-interval {} --hold {}",
        settings.profile.name, settings.clients, config.duration, config.faults, config.retry_interval, config.hold
    );
    if let Some(d) = config.verification_delay {
        command += &format!(" --verification-delay {d}");
    }
    if let Some(s) = config.stale_after {
        command += &format!(" --stale-after {s}");
    }
    if config.no_lifetime {
        command += " --no-lifetime";
    }
    if config.timeout != 30.0 {
        command += &format!(" --timeout {}", config.timeout);
    }
    if config.long_holds != 0.1 {
        command += &format!(" --long-holds {}", config.long_holds);
    }
    if config.no_queue {
        command += " --no-queue";
    }
    if settings.workload != Workload::Exclusive {
        command += &format!(" --mode {} --writers {}", config.mode, settings.workload.writers());
    }
    if let Some(n) = settings.workload.slots() {
        command += &format!(" --slots {n}");
    }
    if config.latency > 0.0 {
        command += &format!(" --latency {}", config.latency);
    }
    if let Some(path) = &config.guest {
        command += &format!(" --guest {}", path.display());
    }
    if let Some(bug) = &config.plant {
        command += &format!(" --plant {bug}");
    }
    command + &format!(" --seed {seed} --build {} --trace", guest.build)
}

fn summarise(config: &Config, settings: &Settings, guest: &Guest, outcomes: &[Outcome], elapsed: Duration) -> Summary {
    let acquisitions: u64 = outcomes.iter().map(|o| o.acquisitions as u64).sum();
    let simulated: f64 = outcomes.iter().map(|o| o.simulated.as_secs_f64()).sum();
    let mut limitations = std::collections::BTreeMap::new();
    for o in outcomes {
        for (what, n) in &o.limitations {
            *limitations.entry(what.clone()).or_insert(0u64) += u64::from(*n);
        }
    }
    let violating: Vec<&Outcome> = outcomes.iter().filter(|o| !o.violations.is_empty()).collect();
    // The seed that came closest to its liveness bound (each seed's bound
    // grows with the clients killed in it).
    let tightest = outcomes.iter().max_by(|a, b| {
        let ratio = |o: &Outcome| o.longest_idle.as_secs_f64() / o.bound.as_secs_f64().max(1e-9);
        ratio(a).total_cmp(&ratio(b))
    });
    let weighted_handoff: f64 = outcomes.iter().map(|o| o.handoff_ratio * o.acquisitions as f64).sum();
    Summary {
        profile: settings.profile.name.to_owned(),
        clients: settings.clients,
        seeds: outcomes.len() as u64,
        build: guest.build.clone(),
        faults: config.faults.clone(),
        mode: config.mode.clone(),
        writers: settings.workload.writers(),
        slots: settings.workload.slots(),
        verification_delay_s: settings.verification_delay.as_secs_f64(),
        stale_after_s: settings.lifetime.map(|l| l.as_secs_f64()),
        violating_seeds: violating.iter().map(|o| o.seed).collect(),
        violations: violating
            .iter()
            .flat_map(|o| {
                o.violations.iter().map(|what| Violation {
                    seed: o.seed,
                    what: what.clone(),
                    replay: replay(config, settings, guest, o.seed),
                })
            })
            .collect(),
        limitations,
        acquisitions,
        per_simulated_second: acquisitions as f64 / simulated.max(1e-9),
        calls: outcomes.iter().map(|o| o.calls).sum(),
        simulated_s: simulated,
        elapsed_s: elapsed.as_secs_f64(),
        handoff_ratio: weighted_handoff / (acquisitions.max(1) as f64),
        longest_wait_s: outcomes.iter().map(|o| o.longest_wait).max().unwrap_or_default().as_secs_f64(),
        longest_idle_s: tightest.map_or(0.0, |o| o.longest_idle.as_secs_f64()),
        liveness_bound_s: tightest.map_or(0.0, |o| o.bound.as_secs_f64()),
        kills: outcomes.iter().map(|o| u64::from(o.kills)).sum(),
        kills_before_writing: outcomes.iter().map(|o| u64::from(o.kills_before_writing)).sum(),
        stalls: outcomes.iter().map(|o| u64::from(o.stalls)).sum(),
        injected_errors: outcomes.iter().map(|o| u64::from(o.injected)).sum(),
        clock_steps: outcomes.iter().map(|o| u64::from(o.clock_steps)).sum(),
        failed_calls: outcomes.iter().map(|o| u64::from(o.failures)).sum(),
        failed_renewals: outcomes.iter().map(|o| u64::from(o.renewals_failed)).sum(),
        writer_acquisitions: outcomes.iter().map(|o| o.by_role[0] as u64).sum(),
        reader_acquisitions: outcomes.iter().map(|o| o.by_role[1] as u64).sum(),
        slot_acquisitions: outcomes.iter().map(|o| o.by_role[2] as u64).sum(),
        longest_writer_wait_s: outcomes.iter().map(|o| o.longest_writer_wait).max().unwrap_or_default().as_secs_f64(),
        writer_timeouts: outcomes.iter().map(|o| u64::from(o.writer_timeouts)).sum(),
        most_holders_at_once: outcomes.iter().map(|o| o.most_at_once as u64).max().unwrap_or(0),
    }
}

fn text(summary: &Summary, outcomes: &[Outcome], full_trace: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let lifetime = summary.stale_after_s.map_or("no lifetime".to_owned(), |l| format!("lifetime {l} s"));
    let mode = match summary.slots {
        _ if summary.mode == "exclusive" => String::new(),
        Some(n) => format!(", mode {} ({n} slots, writers {})", summary.mode, summary.writers),
        None => format!(", mode {} (writers {})", summary.mode, summary.writers),
    };
    let _ = writeln!(
        out,
        "uuidlock simulate: {}, {} clients, delay {} s, {lifetime}, faults: {}{mode}",
        summary.profile, summary.clients, summary.verification_delay_s, summary.faults
    );
    let first = outcomes.first().map_or(0, |o| o.seed);
    let last = outcomes.last().map_or(0, |o| o.seed);
    let _ = writeln!(out, "  seeds             {} ({first}..={last}), build {}", summary.seeds, summary.build);
    let _ = writeln!(
        out,
        "  acquisitions      {} ({:.1} per simulated second)",
        summary.acquisitions, summary.per_simulated_second
    );
    let _ = writeln!(
        out,
        "  simulated         {:.0} s in {:.1} s, {} WASI calls",
        summary.simulated_s, summary.elapsed_s, summary.calls
    );
    let _ = writeln!(
        out,
        "  faults            {} kills, {} stalls, {} errors injected, {} clock steps; {} calls failed ({} renewals)",
        summary.kills,
        summary.stalls,
        summary.injected_errors,
        summary.clock_steps,
        summary.failed_calls,
        summary.failed_renewals
    );
    if summary.kills_before_writing > 0 {
        let _ = writeln!(
            out,
            "                    {} of the kills between creating the lock file and writing it (an empty file left)",
            summary.kills_before_writing
        );
    }
    let _ =
        writeln!(out, "  hand-off ratio    {:.2}; longest wait {:.3} s", summary.handoff_ratio, summary.longest_wait_s);
    if summary.mode != "exclusive" {
        let _ = writeln!(
            out,
            "  modes             {} writers, {} readers, {} slot holders; at most {} holding at once",
            summary.writer_acquisitions,
            summary.reader_acquisitions,
            summary.slot_acquisitions,
            summary.most_holders_at_once
        );
        let _ = writeln!(
            out,
            "  writers           longest wait {:.3} s; {} acquires timed out",
            summary.longest_writer_wait_s, summary.writer_timeouts
        );
    }
    let _ = writeln!(
        out,
        "  liveness          after the faults, nobody held while someone waited for at most {:.3} s (that seed's bound {:.3} s)",
        summary.longest_idle_s, summary.liveness_bound_s
    );
    if !summary.limitations.is_empty() {
        for (what, n) in &summary.limitations {
            let _ = writeln!(out, "  limitation        {what}: {n}");
        }
    }
    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| !o.violations.is_empty()).collect();
    if bad.is_empty() {
        let _ = writeln!(out, "verdict: 0 violations in {} seeds", summary.seeds);
        if full_trace {
            for o in outcomes {
                write_trace(&mut out, o);
            }
        }
        return out;
    }
    let _ = writeln!(out, "verdict: violations in {} of {} seeds", bad.len(), summary.seeds);
    for o in bad.iter().take(SHOWN) {
        let _ = writeln!(out, "seed {}:", o.seed);
        for v in o.violations.iter().take(5) {
            let _ = writeln!(out, "  {v}");
        }
        if o.violations.len() > 5 {
            let _ = writeln!(out, "  ... and {} more", o.violations.len() - 5);
        }
        write_trace(&mut out, o);
        if let Some(v) = summary.violations.iter().find(|v| v.seed == o.seed) {
            let _ = writeln!(out, "  replay: {}", v.replay);
        }
    }
    if bad.len() > SHOWN {
        let _ = writeln!(out, "  ... and {} more seeds (--json lists them all)", bad.len() - SHOWN);
    }
    out
}

fn write_trace(out: &mut String, outcome: &Outcome) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "  trace (time s, client, call -> answer):");
    for e in &outcome.trace {
        let _ = writeln!(out, "    {:>12.6}  c{:<3} {}", e.at as f64 / 1e9, e.client, e.text);
    }
}
