//! One worker of a contention run (`uuidlock contend-worker`): it takes and
//! releases the lock through its runner, does the critical section's
//! read-modify-write, and prints one line per acquisition.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use uuidlock::stale;
use uuidlock_host::{Grant, Lease, LockError, Locker, Options, Runtime};

use super::report::EVICTED;
use super::{now_ns, Config, Runner, COUNTER_FILE, LOCK_FILE, WORKER_COMMAND, WORKER_TIMEOUT};
use crate::exit;

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
        // as the lock's own files are (uuidlock::stale), with a budget of
        // its own for each critical section.
        stale::begin();
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
