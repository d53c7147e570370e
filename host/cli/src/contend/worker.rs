//! One worker of a contention run (`uuidlock contend-worker`): it takes and
//! releases the lock through its runner, does the critical section (a
//! writer's or a slot holder's read-modify-write, a reader's two reads), and
//! prints one line per acquisition.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use uuidlock::stale;
use uuidlock_host::engine::bindings;
use uuidlock_host::{Grant, Lease, LockError, Locker, Mode, Options, Runtime};

use super::report::{CHANGED, EVICTED};
use super::{now_ns, slot_counter, Config, Runner, COUNTER_FILE, LOCK_FILE, WORKER_COMMAND, WORKER_TIMEOUT};
use crate::exit;
use crate::plain_host::{Compiled, PlainHost};

/// `uuidlock contend-worker ARGS`: one worker process. Prints `ready`, waits
/// for the start signal (a line on stdin), then one line per acquisition:
/// `[evicted ][changed ]ENTER_NS EXIT_NS WAIT_NS FENCE [SLOT]` (`changed`: a
/// reader saw the counter change while it held; `SLOT` a semaphore's).
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
    /// The component in a plain wasmtime-wasi host, which sees the run's
    /// directory as [`PLAIN_DIR`].
    Plain(RefCell<PlainHost>),
    None,
}

/// Where a plain host's guest sees the run's directory.
const PLAIN_DIR: &str = "/contend";

/// The lock's path in a plain host's guest.
fn plain_path(lock: &Path) -> Result<String> {
    let name = lock.file_name().and_then(|name| name.to_str()).context("the lock's name is not UTF-8")?;
    Ok(format!("{PLAIN_DIR}/{name}"))
}

/// A lock a worker holds.
enum Held {
    Token(String),
    Lease(Box<Lease>),
    Nothing,
}

/// An acquisition: what is held, its fence (0 without a lock), and a
/// semaphore holder's slot.
struct Took {
    held: Held,
    fence: u64,
    slot: Option<u32>,
}

impl Taker {
    /// Takes the lock in `options.mode`; `turn` picks the slot a worker
    /// without a lock pretends to hold (in turn, so that the control run
    /// shows slots held twice).
    fn acquire(&self, lock: &Path, options: &Options, turn: u32) -> Result<Took> {
        match self {
            Taker::Component(locker) => {
                let acquired = locker.acquire(lock, options)?.into_acquired();
                Ok(Took { held: Held::Token(acquired.token.into_string()), fence: acquired.fence, slot: acquired.slot })
            }
            Taker::Lease(locker) => {
                let lease = locker.lease(lock, options)?;
                let (fence, slot) = (lease.fence(), lease.slot());
                Ok(Took { held: Held::Lease(Box::new(lease)), fence, slot })
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
                match options.mode {
                    Mode::Exclusive => {}
                    Mode::Shared => args.push("--shared".into()),
                    Mode::Slots(n) => args.extend(["--slots".into(), n.to_string()]),
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = runtime.run_command(&args, grants)?;
                ensure!(output.code == 0, "acquire exited {}: {}", output.code, output.stderr.trim());
                // `TOKEN FENCE`, and `SLOT` with --slots.
                let printed: Vec<&str> = output.stdout.split_whitespace().collect();
                let (token, fence, slot) = match printed[..] {
                    [token, fence] => (token, fence, None),
                    [token, fence, slot] => {
                        (token, fence, Some(slot.parse().context("acquire --slots printed a bad slot")?))
                    }
                    _ => bail!("acquire --fence printed {:?}", output.stdout.trim()),
                };
                let fence = fence.parse().context("acquire --fence printed a bad fence")?;
                Ok(Took { held: Held::Token(token.to_owned()), fence, slot })
            }
            Taker::Plain(host) => {
                let acquired = host.borrow_mut().acquire(&plain_path(lock)?, &options.into())?;
                let acquired = acquired.map_err(|e| anyhow!("acquire: {e:?}"))?;
                Ok(Took { held: Held::Token(acquired.token), fence: acquired.fence, slot: acquired.slot })
            }
            Taker::None => {
                let slot = match options.mode {
                    Mode::Slots(n) => Some(turn % n),
                    _ => None,
                };
                Ok(Took { held: Held::Nothing, fence: 0, slot })
            }
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
            (Taker::Plain(host), Held::Token(token)) => match host.borrow_mut().release(&plain_path(lock)?, token)? {
                Ok(()) => Ok(false),
                Err(bindings::Error::NotOwner) => Ok(true),
                Err(e) => bail!("release: {e:?}"),
            },
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
        Runner::Plain | Runner::PlainBlocking => {
            let allow_blocking = runner == Runner::PlainBlocking;
            let compiled = Compiled::new().map_err(|e| anyhow!("the plain host: {e:#}"))?;
            let host = PlainHost::new(&compiled, dir, PLAIN_DIR, allow_blocking)
                .map_err(|e| anyhow!("the plain host: {e:#}"))?;
            Taker::Plain(RefCell::new(host))
        }
        Runner::None => Taker::None,
        python => bail!("--runner {}: not a worker of this binary", python.name()),
    };
    let mode = config.mode_for(0);
    let options = Options { mode, ..config.lock_options() };
    let (lock, counter) = (dir.join(LOCK_FILE), dir.join(COUNTER_FILE));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    // The start signal; a closed stdin (the parent gone) starts nothing.
    if std::io::stdin().read_line(&mut String::new())? == 0 {
        bail!("the contend parent went away before the start");
    }
    // Where a worker without a lock starts taking slots in turn.
    let first_turn = std::process::id();
    for iteration in 0..config.iterations {
        let asked = Instant::now();
        let turn = first_turn.wrapping_add(iteration as u32);
        let Took { held, fence, slot } = taker.acquire(&lock, &options, turn)?;
        let wait = asked.elapsed();
        let enter_ns = now_ns();
        // On a share, through each worker's own client: a stale handle
        // (another client replaced the counter) is looked up again, as the
        // lock's own files are (uuidlock::stale), with a budget of its own
        // for each critical section.
        stale::begin();
        let changed = match (mode, slot) {
            (Mode::Shared, _) => {
                // A reader: the counter must not change while it holds.
                let before = read_counter(&counter)?;
                std::thread::sleep(config.hold);
                before != read_counter(&counter)?
            }
            (Mode::Slots(_), Some(slot)) => {
                increment(&dir.join(slot_counter(slot)), config.hold)?;
                false
            }
            (Mode::Slots(n), None) => bail!("a semaphore of {n} slots gave no slot"),
            (Mode::Exclusive, _) => {
                increment(&counter, config.hold)?;
                false
            }
        };
        let exit_ns = now_ns();
        let evicted = if taker.release(&lock, held)? { EVICTED } else { "" };
        let changed = if changed { CHANGED } else { "" };
        let slot = slot.map_or(String::new(), |slot| format!(" {slot}"));
        writeln!(out, "{evicted}{changed}{enter_ns} {exit_ns} {} {fence}{slot}", wait.as_nanos())?;
        out.flush()?;
    }
    Ok(())
}

fn read_counter(counter: &Path) -> Result<u64> {
    let read = stale::again(|| std::fs::read_to_string(counter))
        .with_context(|| format!("reading the counter {}", counter.display()))?;
    read.trim().parse().with_context(|| format!("parsing the counter {}", counter.display()))
}

/// The non-atomic read-modify-write that only mutual exclusion (of the
/// writers, or of one slot's holders) keeps whole, `hold` long.
fn increment(counter: &Path, hold: Duration) -> Result<()> {
    let value = read_counter(counter)?;
    std::thread::sleep(hold);
    // Replaced whole (written aside, renamed), so that without a lock the
    // run shows lost updates rather than a torn read.
    let aside = counter.with_extension(std::process::id().to_string());
    std::fs::write(&aside, (value + 1).to_string()).with_context(|| format!("writing {}", aside.display()))?;
    stale::again(|| std::fs::rename(&aside, counter))
        .with_context(|| format!("replacing the counter {}", counter.display()))?;
    Ok(())
}
