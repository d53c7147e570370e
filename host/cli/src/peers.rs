//! The Python lock libraries uuidlock is compared with and must coexist
//! with: uuid-filelock (the protocol's origin), filelock's SoftFileLock and
//! flufl.lock. The bench times them ([`crate::bench`]); `contend` runs them
//! as workers beside uuidlock's on the same lock ([`crate::contend`]). They
//! come from a venv the first use makes, under the uuidlock cache directory.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// A Python lock library to compare with.
pub struct Anchor {
    pub name: &'static str,
    /// Python that defines `make(path)`, returning the lock's acquire and
    /// release functions. Waiters poll every millisecond where the library
    /// lets them choose (flufl.lock sleeps 0.01 to 2 s, its own choice), and
    /// give up after 60 s.
    pub make: &'static str,
    /// Takes 0.1 s per acquisition (uuid-filelock's default verification
    /// delay): measured 20 times uncontended, and not under contention,
    /// where it would take minutes.
    pub slow: bool,
}

pub const ANCHORS: [Anchor; 4] = [
    Anchor {
        name: "uuid-filelock (delay 0)",
        make: "import uuid_filelock
def make(path):
    lock = uuid_filelock.UUIDFileLock(path, verification_delay=0, retry_interval=0.001, timeout_interval=60)
    return lock.acquire, lock.release",
        slow: false,
    },
    Anchor {
        name: "uuid-filelock (delay 0.1 s)",
        make: "import uuid_filelock
def make(path):
    lock = uuid_filelock.UUIDFileLock(path, retry_interval=0.001, timeout_interval=60)
    return lock.acquire, lock.release",
        slow: true,
    },
    Anchor {
        name: "filelock.SoftFileLock",
        make: "import filelock
def make(path):
    lock = filelock.SoftFileLock(path, timeout=60, poll_interval=0.001)
    return lock.acquire, lock.release",
        slow: false,
    },
    Anchor {
        name: "flufl.lock",
        make: "import datetime, flufl.lock
def make(path):
    minute = datetime.timedelta(seconds=60)
    lock = flufl.lock.Lock(path, lifetime=minute, default_timeout=minute)
    return lock.lock, lock.unlock",
        slow: false,
    },
];

/// A contention worker in Python, after an anchor's `make`: the protocol of
/// `contend::worker_main` (`ready`, a line on stdin to start, one line per
/// section), with the same critical section.
const PYTHON_WORKER: &str = r#"import os, sys, time
lock_path, counter = sys.argv[1:3]
iterations, hold = int(sys.argv[3]), float(sys.argv[4])
aside = f"{counter}.{os.getpid()}"
print("ready", flush=True)
sys.stdin.readline()
for _ in range(iterations):
    acquire, release = make(lock_path)
    asked = time.monotonic_ns()
    acquire()
    wait = time.monotonic_ns() - asked
    enter = time.time_ns()
    with open(counter) as f:
        value = int(f.read())
    if hold > 0:
        time.sleep(hold)
    with open(aside, "w") as f:
        f.write(str(value + 1))
    os.replace(aside, counter)
    leave = time.time_ns()
    release()
    print(enter, leave, wait, flush=True)
"#;

/// A venv with the anchors, under the uuidlock cache directory.
pub fn venv() -> Result<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .context("no cache directory ($XDG_CACHE_HOME or $HOME)")?;
    let venv = cache.join("uuidlock").join("bench-anchors");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed");
    let packages = ["uuid-filelock==1.4", "filelock==4.2.11", "flufl.lock==10.0.0"];
    // Two runs making the venv at once (parallel tests, two benches) would
    // wipe each other's half-made venv; the kernel's lock on a local file in
    // the cache makes them take turns, and goes with a killed process.
    fs::create_dir_all(cache.join("uuidlock"))?;
    let guard = fs::File::create(cache.join("uuidlock").join("bench-anchors.making"))?;
    // SAFETY: flock on a descriptor that `guard` owns for this whole scope.
    ensure!(unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) } == 0, "cannot lock the venv's making");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(&packages.join("\n")) {
        let run = |command: &mut Command| -> Result<()> {
            let output = command.output().with_context(|| format!("running {command:?}"))?;
            ensure!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr).trim());
            Ok(())
        };
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(packages))?;
        fs::write(&stamp, packages.join("\n"))?;
    }
    Ok(python)
}

/// The anchor called `name`.
pub fn anchor(name: &str) -> Option<&'static Anchor> {
    ANCHORS.iter().find(|anchor| anchor.name == name)
}

/// The command line of a contention worker for `anchor`, run by `python`:
/// `contend` appends `LOCK COUNTER ITERATIONS HOLD_SECONDS`.
pub fn worker_argv(python: &Path, anchor: &Anchor) -> Vec<OsString> {
    vec![python.into(), "-c".into(), format!("{}\n{PYTHON_WORKER}", anchor.make).into()]
}
