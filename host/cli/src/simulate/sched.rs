//! One simulated run: the clients, the scheduler that interleaves their
//! calls, and the workload each client runs.
//!
//! # Why a seed replays exactly
//!
//! - Every guest runs on one OS thread, in wasmtime's async mode: each
//!   WASI call that reaches the share (or sleeps) returns `Pending` until
//!   the scheduler grants it ([`turn`]), so exactly one client runs at a
//!   time, from one grant to its next call.
//! - The scheduler grants the pending call that arrives first in virtual
//!   time (its client's time plus a latency drawn from the seed, or a
//!   sleep's end), ties broken by a number drawn from the seed.
//! - Every random draw (latencies, faults, the workload, the guests'
//!   `random_get`, so their tokens) comes from streams split off the seed
//!   in a fixed order, and no state is hashed. Real time never enters.
//!
//! So a run is a function of its seed, its settings and the guest's bytes;
//! the replay command names all three.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasmtime::Result;
use wasmtime::{Engine, InstancePre, Store};

use super::check::{secs, Checker, Role, LOCK};
use super::profile::{Faults, Injected, Profile};
use super::rng::Rng;
use super::wasi::{Exit, Process, MOUNT};
use super::world::{errno, Errno, World};

/// The compiled guest, ready to instantiate in any run.
#[derive(Clone)]
pub struct Guest {
    pub engine: Engine,
    pub pre: InstancePre<Process>,
    /// A short hash of the guest's bytes: a seed replays only on the same.
    pub build: String,
    /// Environment every guest instance gets (a planted bug's name).
    pub env: Vec<String>,
}

/// What one run does.
#[derive(Clone, Debug)]
pub struct Settings {
    pub profile: Profile,
    pub faults: Faults,
    pub clients: usize,
    /// Simulated time the clients keep acquiring for.
    pub duration: Duration,
    pub verification_delay: Duration,
    pub retry_interval: Duration,
    pub timeout: Duration,
    /// None: locks without a lifetime.
    pub lifetime: Option<Duration>,
    /// Added to every share call (a slower network).
    pub extra_latency: Duration,
    /// The longest a holder holds.
    pub hold: Duration,
    /// Keep every event for the trace, not only the last ones.
    pub full_trace: bool,
    /// The share of holds that last two lifetimes.
    pub long_holds: f64,
    /// Wait in the queue (else poll: `acquire --no-queue`).
    pub queue: bool,
    /// The modes the clients acquire in.
    pub workload: Workload,
    /// A fixed sequence of steps for each client instead of the drawn
    /// workload: what the call table counts (`super::calls`).
    pub script: Option<Vec<Vec<Step>>>,
}

/// One step of a scripted client.
#[derive(Clone, Debug)]
pub enum Step {
    /// Runs the guest with these arguments (`{token}` stands for the token
    /// the client's last acquire printed), and counts its calls as `op`.
    Run { op: &'static str, args: Vec<String> },
    /// Sleeps this long.
    Sleep(Duration),
    /// Sleeps until this simulated time (at once if it is past).
    Until(Duration),
}

/// What one scripted command did: its calls, by import name.
#[derive(Clone, Debug)]
pub struct Counted {
    pub op: &'static str,
    pub code: i32,
    pub calls: BTreeMap<&'static str, u32>,
    /// Simulated time from its start to its end.
    pub took: Duration,
}

/// What the clients acquire: each acquisition's mode is drawn from the
/// client's workload stream (but for `Exclusive`, which draws nothing, so
/// that its runs are those of the simulator before shared modes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Every acquisition exclusive.
    Exclusive,
    /// A writer (exclusive) with this chance, else a reader (`--shared`).
    Rw { writers: f64 },
    /// A writer with this chance, else a semaphore's holder (`--slots n`).
    Slots { n: u32, writers: f64 },
    /// A writer with this chance, else a reader or a semaphore's holder,
    /// even odds.
    Mixed { n: u32, writers: f64 },
}

/// One acquire's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Exclusive,
    Shared,
    Slots(u32),
}

impl Workload {
    /// The semaphore's slots, if slot holders take part.
    pub fn slots(self) -> Option<u32> {
        match self {
            Workload::Slots { n, .. } | Workload::Mixed { n, .. } => Some(n),
            _ => None,
        }
    }

    /// The chance that an acquisition is a writer's.
    pub fn writers(self) -> f64 {
        match self {
            Workload::Exclusive => 1.0,
            Workload::Rw { writers } | Workload::Slots { writers, .. } | Workload::Mixed { writers, .. } => writers,
        }
    }

    fn draw(self, rng: &mut Rng) -> Ask {
        match self {
            Workload::Exclusive => Ask::Exclusive,
            _ if rng.chance(self.writers()) => Ask::Exclusive,
            Workload::Rw { .. } => Ask::Shared,
            Workload::Slots { n, .. } => Ask::Slots(n),
            Workload::Mixed { n, .. } => {
                if rng.chance(0.5) {
                    Ask::Shared
                } else {
                    Ask::Slots(n)
                }
            }
        }
    }
}

/// How many trailing events a failing run's trace shows.
const TRACE_TAIL: usize = 60;

/// One line of the trace.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: u64,
    pub client: usize,
    pub text: String,
}

/// Everything the clients share: the world, the scheduler's state, the
/// checker. One thread, so the mutex is never contended.
pub struct Shared {
    pub world: World,
    pub check: Checker,
    pending: Vec<Option<(u64, u64)>>,
    granted: Option<usize>,
    sched_rng: Rng,
    fault_rng: Rng,
    faults: Faults,
    /// Faults stop here.
    quiet: u64,
    extra_latency: u64,
    pub calls: u64,
    /// What each scripted command did, in the order they ended.
    pub counted: Vec<Counted>,
    pub trace: std::collections::VecDeque<Event>,
    full_trace: bool,
}

impl Shared {
    /// Whether this call fails with one of `may_fail`, by the fault plan.
    pub fn inject(&mut self, client: usize, may_fail: &[Injected]) -> Option<Errno> {
        self.calls += 1;
        if self.world.now >= self.quiet {
            return None;
        }
        for &(error, rate) in &self.faults.errors {
            if may_fail.contains(&error) && self.fault_rng.chance(rate) {
                self.check.injected(client, self.world.now);
                return Some(match error {
                    Injected::Eio => errno::IO,
                    Injected::Estale => errno::STALE,
                    Injected::Enospc => errno::NOSPC,
                    Injected::Ebusy => errno::BUSY,
                    Injected::Eacces => errno::ACCES,
                });
            }
        }
        None
    }

    /// Whether the disk is full now (`full-disk`); a call it fails counts as
    /// an injected fault of `client`.
    pub fn disk_full(&mut self, client: usize) -> bool {
        let now = self.world.now;
        let full = self.faults.full_disk.is_some_and(|from| now >= from.as_nanos() as u64) && now < self.quiet;
        if full {
            self.check.injected(client, now);
        }
        full
    }

    /// Whether the reply to this call is lost after the server did it.
    pub fn lost_reply(&mut self) -> bool {
        let rate = self.world.profile.lost_replies;
        self.sched_rng.chance(rate)
    }

    pub fn record(&mut self, client: usize, call: &'static str, path: &str, code: Errno) {
        let path = path.strip_prefix(LOCK).map_or(path.to_owned(), |rest| format!("L{rest}"));
        self.note(client, format!("{call} {path} -> {}", errno::name(code)));
    }

    pub fn note(&mut self, client: usize, text: String) {
        self.trace.push_back(Event { at: self.world.now, client, text });
        if !self.full_trace && self.trace.len() > TRACE_TAIL {
            self.trace.pop_front();
        }
    }
}

/// Waits until the scheduler grants `client` its next step: a share call
/// (`sleep` None: after the share's latency, perhaps a stall) or the end
/// of a sleep.
pub fn turn(shared: &Arc<Mutex<Shared>>, client: usize, sleep: Option<u64>) -> Turn {
    Turn { shared: shared.clone(), client, sleep, registered: false }
}

pub struct Turn {
    shared: Arc<Mutex<Shared>>,
    client: usize,
    sleep: Option<u64>,
    registered: bool,
}

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        let client = self.client;
        let mut shared = self.shared.lock().expect("one thread");
        if !self.registered {
            let now = shared.world.now;
            let delay = match self.sleep {
                Some(nanos) => nanos,
                None => {
                    let (lo, hi) = shared.world.profile.latency;
                    let mut delay = shared.sched_rng.between(lo.as_nanos() as u64, hi.as_nanos() as u64);
                    delay += shared.extra_latency;
                    let stall_rate = shared.faults.stall;
                    if now < shared.quiet && shared.fault_rng.chance(stall_rate) {
                        let most = shared.faults.stall_for.as_nanos() as u64;
                        let stall = shared.fault_rng.between(most / 10, most);
                        shared.check.stalled(client, now, stall);
                        shared.note(client, format!("stalled for {} s", secs(stall)));
                        delay += stall;
                    }
                    delay
                }
            };
            let tiebreak = shared.sched_rng.next_u64();
            shared.pending[client] = Some((now.saturating_add(delay), tiebreak));
            drop(shared);
            self.registered = true;
            return Poll::Pending;
        }
        if shared.granted == Some(client) {
            shared.granted = None;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// What one simulated run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub limitations: Vec<(String, u32)>,
    pub acquisitions: usize,
    pub calls: u64,
    pub simulated: Duration,
    pub handoff_ratio: f64,
    pub longest_wait: Duration,
    pub longest_idle: Duration,
    pub bound: Duration,
    pub kills: u32,
    pub kills_before_writing: u32,
    pub stalls: u32,
    pub injected: u32,
    pub clock_steps: u32,
    pub failures: u32,
    pub renewals_failed: u32,
    /// Acquisitions by writers, readers and slot holders.
    pub by_role: [usize; 3],
    /// The longest a writer's acquire waited, and how many timed out.
    pub longest_writer_wait: Duration,
    pub writer_timeouts: u32,
    /// The most live holders at once.
    pub most_at_once: usize,
    /// The trace's last events (all of them with a full trace).
    pub trace: Vec<Event>,
    /// What the scripted commands did, if the clients ran a script.
    pub counted: Vec<Counted>,
}

type Actor = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one seed.
pub fn run(guest: &Guest, settings: &Settings, seed: u64) -> Result<Outcome> {
    let mut root = Rng::new(seed);
    let sched_rng = root.split();
    let mut fault_rng = root.split();
    let mut workload_rng = root.split();
    let guest_rng = root.split();

    let clients = settings.clients;
    let mut world = World::new(settings.profile.clone(), clients);
    world.lifetime = settings.lifetime.map(|lifetime| lifetime.as_nanos() as u64);
    let skew = settings.faults.skew.as_nanos() as i64;
    if skew > 0 {
        for offset in world.client_offset.iter_mut() {
            *offset = fault_rng.between(0, skew as u64) as i64 - skew / 2;
        }
    }
    let duration = settings.duration.as_nanos() as u64;
    let quiet = if settings.faults.any() { duration * 6 / 10 } else { 0 };
    let mut check = Checker::new(clients, settings.lifetime, settings.workload.slots());
    let lifetime = settings.lifetime.unwrap_or(Duration::ZERO);

    // Clock steps, planned up front: (when, whose clock, by how much).
    let mut steps: Vec<(u64, Option<usize>, i64)> = Vec::new();
    if settings.faults.clock_steps > 0.0 {
        let mean_gap = 1e9 / settings.faults.clock_steps;
        let mut at = 0u64;
        loop {
            at += (-(1.0 - fault_rng.unit()).ln() * mean_gap) as u64;
            if at >= quiet {
                break;
            }
            let whose = if fault_rng.chance(0.5) { None } else { Some(fault_rng.below(clients)) };
            let most = settings.faults.step_by.as_nanos() as i64;
            let by = fault_rng.between(0, 2 * most as u64) as i64 - most;
            steps.push((at, whose, by));
        }
    }
    steps.reverse();

    let shared = Arc::new(Mutex::new(Shared {
        world,
        check: Checker::new(0, None, None),
        pending: vec![None; clients],
        granted: None,
        sched_rng,
        fault_rng,
        faults: settings.faults.clone(),
        quiet,
        extra_latency: settings.extra_latency.as_nanos() as u64,
        calls: 0,
        counted: Vec::new(),
        trace: Default::default(),
        full_trace: settings.full_trace,
    }));
    check.settle = quiet + settings.faults.stall_for.as_nanos() as u64;
    let profile = &settings.profile;
    let caches = profile.attr_cache.max(profile.lookup_cache);
    let (base, per_kill) = super::check::bound(lifetime, settings.retry_interval, settings.verification_delay, caches);
    check.bound_base = base.as_nanos() as u64;
    check.bound_per_kill = per_kill.as_nanos() as u64;
    shared.lock().expect("one thread").check = check;

    let context = Arc::new(ActorContext { guest: guest.clone(), settings: settings.clone(), shared: shared.clone() });
    let mut streams: Vec<Rng> = (0..clients).map(|_| workload_rng.split()).collect();
    let mut guest_streams = guest_rng;
    let mut actors: Vec<Option<Actor>> = Vec::new();
    let mut generation = vec![0u32; clients];
    for (client, stream) in streams.iter_mut().enumerate() {
        let guest_stream = guest_streams.split();
        actors.push(Some(match settings.script.as_ref() {
            Some(script) => {
                let steps = script.get(client).cloned().unwrap_or_default();
                Box::pin(scripted(context.clone(), client, guest_stream, steps))
            }
            None => Box::pin(actor(context.clone(), client, stream.split(), guest_stream, 0)),
        }));
    }

    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    // Each actor runs to its first turn.
    for client in 0..clients {
        poll_actor(&mut actors, client, &mut cx, &shared)?;
    }
    // The run ends when every client is done, or at this hard stop (a
    // client still waiting then counts against liveness, not as an error).
    let hard_stop = duration + duration / 2 + 60_000_000_000;
    let mut end = 0;
    loop {
        let next = {
            let mut guard = shared.lock().expect("one thread");
            let next =
                guard.pending.iter().enumerate().filter_map(|(client, p)| p.map(|(at, tie)| (at, tie, client))).min();
            let Some((at, _, client)) = next else { break };
            if at > hard_stop {
                break;
            }
            while let Some(&(step_at, whose, by)) = steps.last() {
                if step_at > at {
                    break;
                }
                steps.pop();
                guard.world.now = guard.world.now.max(step_at);
                match whose {
                    None => guard.world.server_offset += by,
                    Some(c) => guard.world.client_offset[c] += by,
                }
                // A forward step of the server's clock, or of a clock that
                // dates files, is the kind that can make a lock look old.
                let dates = whose.is_none() != guard.world.profile.dates_from_client_clock;
                guard.check.stepped(step_at, if dates && by > 0 { by as u64 } else { 0 });
                let who = whose.map_or("server".to_owned(), |c| format!("c{c}'s"));
                guard.note(whose.unwrap_or(0), format!("{who} clock stepped by {} s", by as f64 / 1e9));
            }
            guard.world.now = guard.world.now.max(at);
            end = guard.world.now;
            guard.pending[client] = None;
            let kill = guard.world.now < guard.quiet && {
                let rate = guard.faults.kill;
                guard.fault_rng.chance(rate)
            };
            if kill {
                let now = guard.world.now;
                if guard.world.empty_file_made_by(LOCK, client) {
                    guard.check.killed_before_writing(now);
                    guard.note(client, "killed with the lock file created, not yet written".to_owned());
                }
                let claims = std::mem::take(&mut guard.world.claims[client]);
                guard.check.killed(client, now, claims);
                guard.note(client, "killed".to_owned());
            } else {
                guard.granted = Some(client);
            }
            (client, kill)
        };
        let (client, kill) = next;
        if kill {
            // Dropping the actor drops its instance; its files stay.
            actors[client] = None;
            generation[client] += 1;
            let restart = Box::pin(actor(
                context.clone(),
                client,
                streams[client].split(),
                guest_streams.split(),
                generation[client],
            ));
            actors[client] = Some(restart);
        }
        poll_actor(&mut actors, client, &mut cx, &shared)?;
        let mut guard = shared.lock().expect("one thread");
        let Shared { world, check, .. } = &mut *guard;
        check.removals(world);
    }
    // Whatever is still running is stopped here.
    drop(actors);
    let mut guard = shared.lock().expect("one thread");
    guard.check.finish(end);
    let check = &guard.check;
    let acquisitions = check.acquisitions.len();
    let handoffs = check.acquisitions.windows(2).filter(|pair| pair[0].client != pair[1].client).count();
    let mut by_role = [0; 3];
    for a in &check.acquisitions {
        by_role[a.role.index()] += 1;
    }
    let longest_writer_wait =
        check.acquisitions.iter().filter(|a| a.role == Role::Writer).map(|a| a.waited).max().unwrap_or(0);
    let outcome = Outcome {
        seed,
        violations: check.violations.iter().map(|f| format!("at {} s: {}", secs(f.at), f.what)).collect(),
        limitations: check.limitations.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        acquisitions,
        calls: guard.calls,
        simulated: Duration::from_nanos(end),
        handoff_ratio: handoffs as f64 / acquisitions.saturating_sub(1).max(1) as f64,
        longest_wait: Duration::from_nanos(check.acquisitions.iter().map(|a| a.waited).max().unwrap_or(0)),
        longest_idle: Duration::from_nanos(check.longest_idle),
        bound: Duration::from_nanos(check.bound()),
        kills: check.kills,
        kills_before_writing: check.kills_before_writing,
        stalls: check.stalls_total,
        injected: check.injected_total,
        clock_steps: check.clock_steps,
        failures: check.failures,
        renewals_failed: check.renewals_failed,
        by_role,
        longest_writer_wait: Duration::from_nanos(longest_writer_wait),
        writer_timeouts: check.timeouts[Role::Writer.index()],
        most_at_once: check.most_at_once,
        trace: guard.trace.iter().cloned().collect(),
        counted: std::mem::take(&mut guard.counted),
    };
    Ok(outcome)
}

fn poll_actor(
    actors: &mut [Option<Actor>],
    client: usize,
    cx: &mut Context<'_>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<()> {
    let Some(actor) = actors[client].as_mut() else { return Ok(()) };
    match actor.as_mut().poll(cx) {
        Poll::Ready(()) => actors[client] = None,
        Poll::Pending => {
            if shared.lock().expect("one thread").pending[client].is_none() {
                wasmtime::bail!("client {client} is blocked without a turn: a simulator bug");
            }
        }
    }
    Ok(())
}

struct ActorContext {
    guest: Guest,
    settings: Settings,
    shared: Arc<Mutex<Shared>>,
}

/// What one command of the guest answered.
struct Answer {
    code: i32,
    stdout: String,
    stderr: String,
    calls: BTreeMap<&'static str, u32>,
}

const TRAPPED: i32 = -1;

async fn command(cx: &ActorContext, client: usize, rng: &mut Rng, args: Vec<String>) -> Answer {
    let process = Process::new(cx.shared.clone(), client, args, cx.guest.env.clone(), rng.split());
    let mut store = Store::new(&cx.guest.engine, process);
    let result = async {
        let instance = cx.guest.pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call_async(&mut store, ()).await
    }
    .await;
    let code = match result {
        Ok(()) => 0,
        Err(error) => match error.downcast_ref::<Exit>() {
            Some(Exit(code)) => *code,
            None => {
                let text = format!("{error:#}");
                store.data_mut().stderr = text.into_bytes();
                TRAPPED
            }
        },
    };
    // The call is over: whatever claims it took, it no longer acts on.
    cx.shared.lock().expect("one thread").world.claims[client].clear();
    let process = store.data_mut();
    Answer {
        code,
        stdout: String::from_utf8_lossy(&process.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&process.stderr).trim().to_owned(),
        calls: std::mem::take(&mut process.counts),
    }
}

/// A scripted client: runs its steps in order, recording what each command
/// did. No checker sees it: a script is for counting, not for finding bugs.
async fn scripted(cx: Arc<ActorContext>, client: usize, mut guest_rng: Rng, steps: Vec<Step>) {
    let mut token = String::new();
    for step in steps {
        match step {
            Step::Sleep(pause) => sleep(&cx, client, pause.as_nanos() as u64).await,
            Step::Until(at) => {
                let left = (at.as_nanos() as u64).saturating_sub(now(&cx));
                sleep(&cx, client, left).await;
            }
            Step::Run { op, args } => {
                let args: Vec<String> = args.iter().map(|arg| arg.replace("{token}", &token)).collect();
                let acquires = args.get(1).is_some_and(|command| command == "acquire");
                let began = now(&cx);
                let answer = command(&cx, client, &mut guest_rng, args).await;
                if acquires {
                    token = answer.stdout.split_whitespace().next().unwrap_or_default().to_owned();
                }
                let mut shared = cx.shared.lock().expect("one thread");
                let took = Duration::from_nanos(shared.world.now - began);
                shared.counted.push(Counted { op, code: answer.code, calls: answer.calls, took });
            }
        }
    }
}

async fn sleep(cx: &ActorContext, client: usize, nanos: u64) {
    turn(&cx.shared, client, Some(nanos)).await;
}

fn now(cx: &ActorContext) -> u64 {
    cx.shared.lock().expect("one thread").world.now
}

fn seconds(d: Duration) -> String {
    format!("{}", d.as_secs_f64())
}

/// One client's workload: acquire, hold (renewing every third of the
/// lifetime), release, think; until the run's duration is over. A killed
/// client comes back as a new process after a pause (`generation` > 0).
async fn actor(cx: Arc<ActorContext>, client: usize, mut rng: Rng, mut guest_rng: Rng, generation: u32) {
    let settings = &cx.settings;
    let lock = format!("{MOUNT}/{LOCK}");
    let start = if generation == 0 { rng.between(0, 20_000_000) } else { rng.between(200_000_000, 800_000_000) };
    sleep(&cx, client, start).await;
    let mut acquire = vec![
        "uuidlock".to_owned(),
        "acquire".to_owned(),
        lock.clone(),
        "--fence".to_owned(),
        "--prefix".to_owned(),
        format!("c{client}-"),
        "--verification-delay".to_owned(),
        seconds(settings.verification_delay),
        "--retry-interval".to_owned(),
        seconds(settings.retry_interval),
        "--timeout".to_owned(),
        seconds(settings.timeout),
    ];
    if let Some(lifetime) = settings.lifetime {
        acquire.extend(["--stale-after".to_owned(), seconds(lifetime)]);
    }
    if !settings.queue {
        acquire.push("--no-queue".to_owned());
    }
    if !settings.faults.skew.is_zero() {
        acquire.extend(["--max-clock-skew".to_owned(), seconds(settings.faults.skew)]);
    }
    let duration = settings.duration.as_nanos() as u64;
    while now(&cx) < duration {
        let ask = settings.workload.draw(&mut rng);
        let mut args = acquire.clone();
        let role = match ask {
            Ask::Exclusive => Role::Writer,
            Ask::Shared => {
                args.push("--shared".to_owned());
                Role::Reader
            }
            Ask::Slots(n) => {
                args.extend(["--slots".to_owned(), n.to_string()]);
                Role::Slot(0)
            }
        };
        let began = now(&cx);
        {
            let mut shared = cx.shared.lock().expect("one thread");
            let Shared { world, check, .. } = &mut *shared;
            check.begin_acquire(client, role, world);
            if ask != Ask::Exclusive {
                shared.note(
                    client,
                    format!("acquire as {}", if ask == Ask::Shared { "a reader" } else { "a slot holder" }),
                );
            }
        }
        let answer = command(&cx, client, &mut guest_rng, args).await;
        let token = {
            let mut shared = cx.shared.lock().expect("one thread");
            let Shared { world, check, .. } = &mut *shared;
            check.removals(world);
            let parsed = answer.stdout.split_whitespace().collect::<Vec<_>>();
            // `TOKEN FENCE`, and the slot after them for a slot holder.
            let held = match (ask, parsed.as_slice()) {
                (Ask::Exclusive | Ask::Shared, [token, fence]) => {
                    fence.parse::<u64>().ok().map(|fence| (*token, fence, role))
                }
                (Ask::Slots(_), [token, fence, slot]) => {
                    fence.parse::<u64>().ok().zip(slot.parse::<u32>().ok()).map(|(f, s)| (*token, f, Role::Slot(s)))
                }
                _ => None,
            };
            match (answer.code, held) {
                (0, Some((token, fence, role))) => {
                    check.acquired(client, token, fence, role, world);
                    match role {
                        Role::Slot(slot) => shared.note(client, format!("acquired slot {slot}, fence {fence}")),
                        Role::Reader => shared.note(client, format!("acquired shared, fence {fence}")),
                        Role::Writer => shared.note(client, format!("acquired, fence {fence}")),
                    }
                    Some(token.to_string())
                }
                (TRAPPED, _) => {
                    let now = world.now;
                    check.gave_up(client, now);
                    check.trapped(client, now, answer.stderr.clone());
                    None
                }
                (0, None) => {
                    let now = world.now;
                    check.gave_up(client, now);
                    check.misspoke(client, now, format!("acquire printed {:?}", answer.stdout));
                    None
                }
                (code, _) => {
                    let now = world.now;
                    check.gave_up(client, now);
                    if code == 1 {
                        check.timed_out(client);
                    } else {
                        check.failed(client, began, format!("acquire exited {code}: {}", answer.stderr), world);
                    }
                    shared.note(client, format!("acquire exited {code}: {}", answer.stderr));
                    None
                }
            }
        };
        if let Some(token) = token {
            hold(&cx, client, &mut rng, &mut guest_rng, &lock, &token).await;
        }
        let think = rng.between(0, 50_000_000);
        sleep(&cx, client, think).await;
    }
}

/// Holds the lock for a while, renewing it, then releases it.
async fn hold(cx: &ActorContext, client: usize, rng: &mut Rng, guest_rng: &mut Rng, lock: &str, token: &str) {
    let settings = &cx.settings;
    let hold_max = settings.hold.as_nanos() as u64;
    // Some holds are long: past the lifetime, renewed on the way.
    let length = if rng.chance(settings.long_holds) {
        settings.lifetime.map_or(hold_max, |l| 2 * l.as_nanos() as u64)
    } else {
        rng.between(0, hold_max)
    };
    let until = now(cx) + length;
    let path_token = |command: &str| vec!["uuidlock".to_owned(), command.to_owned(), lock.to_owned(), token.to_owned()];
    loop {
        let left = until.saturating_sub(now(cx));
        if left == 0 {
            break;
        }
        let Some(lifetime) = settings.lifetime else {
            sleep(cx, client, left).await;
            break;
        };
        sleep(cx, client, left.min(lifetime.as_nanos() as u64 / 3)).await;
        if now(cx) >= until {
            break;
        }
        let began = now(cx);
        let answer = command(cx, client, guest_rng, path_token("refresh")).await;
        let mut shared = cx.shared.lock().expect("one thread");
        let Shared { world, check, .. } = &mut *shared;
        check.removals(world);
        match answer.code {
            0 => {}
            3 => {
                check.told_lost(client, "refresh", began, world);
                check.stops_holding(client);
                shared.note(client, "refresh: lost the lock".to_owned());
                return;
            }
            TRAPPED => check.trapped(client, world.now, answer.stderr),
            code => {
                check.renewals_failed += 1;
                check.failed(client, began, format!("refresh exited {code}: {}", answer.stderr), world)
            }
        }
    }
    let mut began = {
        let mut shared = cx.shared.lock().expect("one thread");
        let now = shared.world.now;
        shared.check.stops_holding(client);
        now
    };
    // A lock without a lifetime is never broken, so a caller whose release
    // failed releases it again, as the error says; with a lifetime the
    // lock is broken once silent, and the client moves on.
    let tries = if settings.lifetime.is_none() { RELEASE_TRIES } else { 1 };
    for left in (0..tries).rev() {
        let answer = command(cx, client, guest_rng, path_token("release")).await;
        let again = {
            let mut shared = cx.shared.lock().expect("one thread");
            let Shared { world, check, .. } = &mut *shared;
            check.removals(world);
            let now = world.now;
            let again = left > 0 && !matches!(answer.code, 0 | 3 | TRAPPED);
            if !again {
                check.released(now);
            }
            match answer.code {
                0 => shared.note(client, "released".to_owned()),
                3 => {
                    check.told_lost(client, "release", began, world);
                    shared.note(client, "release: not the owner any more".to_owned());
                }
                TRAPPED => check.trapped(client, now, answer.stderr),
                code => {
                    check.failed(client, began, format!("release exited {code}: {}", answer.stderr), world);
                    if again {
                        shared.note(client, format!("release exited {code}; releasing again"));
                    }
                }
            }
            again
        };
        if !again {
            return;
        }
        sleep(cx, client, RELEASE_AGAIN_AFTER).await;
        // Each try is judged by the faults injected since it began.
        began = now(cx);
    }
}

/// How many tries a client makes in all to release a lock without a
/// lifetime whose release fails, and how long it waits in between
/// (simulated ns).
const RELEASE_TRIES: usize = 3;
const RELEASE_AGAIN_AFTER: u64 = 100_000_000;
