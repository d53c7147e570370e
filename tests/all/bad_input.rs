//! Bad input gets a clear error, never a trap, a panic or a lost lock: one
//! table of cases, each run through the WIT interface (via the host API),
//! the guest command (the command module) and the native CLI, with the
//! documented error variant and exit code.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{mkfifo, runtime, skip, text, uuidlock, Sandbox};
use uuidlock::cli::{self, LockCommand, PathToken};
use uuidlock_host::{Grant, LockError, Options};

/// Which error variant a case expects (its exit code follows from it).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    InvalidPath,
    InvalidOptions,
    InvalidToken,
    OutsideSandbox,
    Io,
    NotOwner,
    Timeout,
}

impl Expect {
    fn matches(self, error: &LockError) -> bool {
        matches!(
            (self, error),
            (Expect::InvalidPath, LockError::InvalidPath(_))
                | (Expect::InvalidOptions, LockError::InvalidOptions(_))
                | (Expect::InvalidToken, LockError::InvalidToken(_))
                | (Expect::OutsideSandbox, LockError::OutsideSandbox(_))
                | (Expect::Io, LockError::Io(_))
                | (Expect::NotOwner, LockError::NotOwner)
                | (Expect::Timeout, LockError::Timeout)
        )
    }

    /// The documented exit code of the variant.
    fn exit_code(self) -> i32 {
        let why = String::new;
        cli::exit_code(&match self {
            Expect::InvalidPath => LockError::InvalidPath(why()),
            Expect::InvalidOptions => LockError::InvalidOptions(why()),
            Expect::InvalidToken => LockError::InvalidToken(why()),
            Expect::OutsideSandbox => LockError::OutsideSandbox(why()),
            Expect::Io => LockError::Io(why()),
            Expect::NotOwner => LockError::NotOwner,
            Expect::Timeout => LockError::Timeout,
        })
    }
}

/// A command line with `{}` where the lock directory goes.
struct Case {
    args: &'static [&'static str],
    expect: Expect,
    /// The native CLI grants the lock's own directory, so sandbox escapes do
    /// not apply to it.
    native: bool,
}

fn cases() -> Vec<Case> {
    let case = |args, expect| Case { args, expect, native: true };
    let guest_only = |args, expect| Case { args, expect, native: false };
    vec![
        case(&["acquire", "", "--timeout", "0"], Expect::InvalidPath),
        case(&["acquire", "{}", "--timeout", "0"], Expect::InvalidPath),
        case(&["status", "{}"], Expect::InvalidPath),
        case(&["acquire", "{}/link.lock", "--timeout", "0"], Expect::InvalidPath),
        case(&["release", "{}/link.lock", "00000000-0000-4000-8000-000000000000"], Expect::InvalidPath),
        case(&["acquire", "{}/no/such/x.lock", "--timeout", "0"], Expect::Io),
        guest_only(&["acquire", "{}/../outside/x.lock", "--timeout", "0"], Expect::OutsideSandbox),
        guest_only(&["status", "{}/../outside/x.lock"], Expect::OutsideSandbox),
        guest_only(&["acquire", "{}/escape/x.lock", "--timeout", "0"], Expect::OutsideSandbox),
        guest_only(&["acquire", "/elsewhere/x.lock", "--timeout", "0"], Expect::OutsideSandbox),
        case(&["acquire", "{}/x.lock", "--verification-delay", "3601"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--retry-interval", "1e9"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--stale-after", "0"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--stale-after", "86401"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--prefix", "two\nlines"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--prefix", "-looks-like-an-option"], Expect::InvalidOptions),
        case(
            &["acquire", "{}/x.lock", "--prefix", "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"],
            Expect::InvalidOptions,
        ),
        case(&["release", "{}/held.lock", ""], Expect::InvalidToken),
        case(&["release", "{}/held.lock", "garbage"], Expect::InvalidToken),
        case(&["release", "{}/held.lock", "7C9E6679-7425-40DE-944B-E07A4B7B7BD1"], Expect::InvalidToken),
        case(&["refresh", "{}/held.lock", "short"], Expect::InvalidToken),
        case(&["release", "{}/held.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["refresh", "{}/held.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["release", "{}/garbage.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["acquire", "{}/garbage.lock", "--timeout", "0"], Expect::Timeout),
        case(&["acquire", "{}/empty.lock", "--timeout", "0"], Expect::Timeout),
        case(&["acquire", "{}/huge.lock", "--timeout", "0"], Expect::Timeout),
        // Not regular files: refused at once, never opened (a FIFO would
        // block the open), never deleted; without a timeout too.
        case(&["acquire", "{}/fifo.lock", "--timeout", "0"], Expect::InvalidPath),
        case(&["acquire", "{}/fifo.lock"], Expect::InvalidPath),
        case(&["acquire", "{}/fifo.lock", "--stale-after", "1", "--timeout", "0"], Expect::InvalidPath),
        case(&["status", "{}/fifo.lock"], Expect::InvalidPath),
        case(&["release", "{}/fifo.lock", "00000000-0000-4000-8000-000000000000"], Expect::InvalidPath),
        case(&["refresh", "{}/fifo.lock", "00000000-0000-4000-8000-000000000000"], Expect::InvalidPath),
        case(&["holds", "{}/fifo.lock", "00000000-0000-4000-8000-000000000000"], Expect::InvalidPath),
        case(&["acquire", "{}/socket.lock", "--timeout", "0"], Expect::InvalidPath),
        case(&["status", "{}/socket.lock"], Expect::InvalidPath),
        case(&["release", "{}/socket.lock", "00000000-0000-4000-8000-000000000000"], Expect::InvalidPath),
        // Paths that cannot be lock files.
        case(&["acquire", "{}/held.lock/x.lock", "--timeout", "0"], Expect::InvalidPath),
        case(&["status", "{}/held.lock.fence"], Expect::InvalidPath),
        case(&["acquire", LONG_NAME, "--timeout", "0"], Expect::InvalidPath),
        case(&["status", LONG_NAME], Expect::InvalidPath),
        // A newline in a path is escaped: still one line of stderr.
        case(&["acquire", "{}/no\nsuch/x.lock", "--timeout", "0"], Expect::Io),
        case(&["release", "{}/held.lock", "two\nlines-00000000-0000-4000-8000-000000000000"], Expect::InvalidToken),
        guest_only(&["release", "/elsewhere/x.lock", "00000000-0000-4000-8000-000000000000"], Expect::OutsideSandbox),
        guest_only(
            &["refresh", "{}/../outside/x.lock", "00000000-0000-4000-8000-000000000000"],
            Expect::OutsideSandbox,
        ),
        guest_only(&["status", "{}/escape/x.lock"], Expect::OutsideSandbox),
        // Options out of range.
        case(&["acquire", "{}/x.lock", "--stale-after", "0.2"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--stale-after", "1", "--verification-delay", "0.6"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--prefix", "tab\there"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--prefix", "spa ce"], Expect::InvalidOptions),
        // '&' would make the holder's own marker read as foreign: a wedge.
        case(&["acquire", "{}/x.lock", "--prefix", "ci&job-"], Expect::InvalidOptions),
        case(&["release", "{}/held.lock", "spa ce-00000000-0000-4000-8000-000000000000"], Expect::InvalidToken),
        // Someone else's lock, or none: nothing is deleted.
        case(&["holds", "{}/held.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["release", "{}/empty.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["refresh", "{}/huge.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["holds", "{}/garbage.lock", "00000000-0000-4000-8000-000000000000"], Expect::NotOwner),
        case(&["acquire", "{}/empty.lock", "--stale-after", "1", "--timeout", "0"], Expect::Timeout),
        case(&["acquire", "{}/garbage.lock", "--stale-after", "1", "--timeout", "0"], Expect::Timeout),
        // Something planted where uuidlock keeps its fencing counter (the
        // hostile-directory review, findings 1 and 10): an I/O error naming
        // it, at once (a FIFO is never opened), and no lock left behind.
        case(&["acquire", "{}/fence-file.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/fence-fifo.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/fence-fifo.lock"], Expect::Io),
        case(&["acquire", "{}/fence-link.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/fence-top.lock", "--timeout", "0"], Expect::Io),
        // ... or in the queue: a waiter still times out on time.
        case(&["acquire", "{}/queued.lock", "--timeout", "0.3", "--retry-interval", "0.01"], Expect::Timeout),
        case(&["acquire", "{}/queue-fifo.lock", "--timeout", "0.3", "--retry-interval", "0.01"], Expect::Timeout),
        case(&["acquire", "{}/queue-link.lock", "--timeout", "0.3", "--retry-interval", "0.01"], Expect::Timeout),
        // Shared modes: a semaphore of no slots or too many; something
        // planted where the shared holders' entries go: an I/O error naming
        // it, at once (never opened, never followed), in every mode.
        case(&["acquire", "{}/x.lock", "--slots", "0"], Expect::InvalidOptions),
        case(&["acquire", "{}/x.lock", "--slots", "1025"], Expect::InvalidOptions),
        case(&["acquire", "{}/shared-fifo.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/shared-fifo.lock", "--shared"], Expect::Io),
        case(&["acquire", "{}/shared-link.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/shared-link.lock", "--slots", "2"], Expect::Io),
        case(&["acquire", "{}/entry-fifo.lock", "--timeout", "0"], Expect::Io),
        case(&["acquire", "{}/entry-fifo.lock", "--slots", "1"], Expect::Io),
    ]
}

/// A lock file name one byte too long for the names derived from it.
const LONG_NAME: &str = "{}/lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll\
lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll";

#[test]
fn the_battery_is_large() {
    assert!(cases().len() >= 40, "{} cases", cases().len());
}

/// Sets up the files the cases refer to; returns what must survive untouched.
fn prepare(sandbox: &Sandbox) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::os::unix::fs::symlink(sandbox.outside().join("t.lock"), sandbox.lock("link.lock")).unwrap();
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("escape")).unwrap();
    let once = Options { timeout: Some(Duration::ZERO), verification_delay: Duration::ZERO, ..Options::default() };
    let held = sandbox.locker().acquire(sandbox.lock("held.lock"), &once).unwrap();
    held.into_token();
    for (name, content) in
        [("garbage.lock", b"\x00\xffgarbage\n".to_vec()), ("empty.lock", vec![]), ("huge.lock", vec![b'h'; 2 << 20])]
    {
        std::fs::write(sandbox.lock(name), content).unwrap();
    }
    mkfifo(&sandbox.lock("fifo.lock"));
    drop(std::os::unix::net::UnixListener::bind(sandbox.lock("socket.lock")).unwrap());
    // Planted beside locks: at the fencing counter's name, in the queue.
    std::fs::write(sandbox.lock("fence-file.lock.fence"), b"").unwrap();
    mkfifo(&sandbox.lock("fence-fifo.lock.fence"));
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("fence-link.lock.fence")).unwrap();
    std::fs::create_dir(sandbox.lock("fence-top.lock.fence")).unwrap();
    std::fs::write(sandbox.lock("fence-top.lock.fence").join(u64::MAX.to_string()), b"").unwrap();
    let queued = sandbox.lock("queued.lock.queue");
    std::fs::create_dir(&queued).unwrap();
    for planted in ["tickets", "served", "1", "2", "3", "4"] {
        mkfifo(&queued.join(planted));
    }
    mkfifo(&sandbox.lock("queue-fifo.lock.queue"));
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("queue-link.lock.queue")).unwrap();
    mkfifo(&sandbox.lock("shared-fifo.lock.shared"));
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("shared-link.lock.shared")).unwrap();
    std::fs::create_dir(sandbox.lock("entry-fifo.lock.shared")).unwrap();
    mkfifo(&sandbox.lock("entry-fifo.lock.shared").join("0"));
    for name in ["queued.lock", "queue-fifo.lock", "queue-link.lock"] {
        std::fs::write(sandbox.lock(name), b"held by someone else\n").unwrap();
    }
    ["held.lock", "garbage.lock", "empty.lock", "huge.lock", "queued.lock"]
        .iter()
        .map(|name| (sandbox.lock(name), std::fs::read(sandbox.lock(name)).unwrap()))
        .collect()
}

fn assert_untouched(sandbox: &Sandbox, kept: &[(std::path::PathBuf, Vec<u8>)]) {
    for (path, bytes) in kept {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} changed", path.display());
    }
    use std::os::unix::fs::FileTypeExt;
    let file_type = |name| std::fs::symlink_metadata(sandbox.lock(name)).unwrap().file_type();
    assert!(file_type("fifo.lock").is_fifo() && file_type("socket.lock").is_socket());
    assert!(sandbox.outside_entries().is_empty(), "written outside: {:?}", sandbox.outside_entries());
}

fn fill(args: &[&str], dir: &str) -> Vec<String> {
    args.iter().map(|arg| arg.replace("{}", dir)).collect()
}

// Through the WIT interface: the parsed command, run on the host API, must
// fail with the expected variant.
#[test]
fn bad_input_through_the_wit_interface() {
    let sandbox = Sandbox::new();
    let kept = prepare(&sandbox);
    let locker = sandbox.locker();
    let dir = sandbox.locks().display().to_string();
    for case in cases() {
        let args = fill(&[&["uuidlock"], case.args].concat(), &dir);
        let parsed = cli::parse::<cli::GuestArgs>(&args, &mut Vec::new(), &mut Vec::new()).map(|parsed| parsed.command);
        let result = match parsed {
            Ok(LockCommand::Acquire { path, options, .. }) => {
                locker.acquire(path, &options.options()).map(|g| drop(g.into_token()))
            }
            Ok(LockCommand::Release(PathToken { path, token })) => locker.release(path, &token),
            Ok(LockCommand::Refresh(PathToken { path, token })) => locker.refresh(path, &token),
            Ok(LockCommand::Status { path, .. }) => locker.status(path).map(drop),
            Ok(LockCommand::Holds(PathToken { path, token })) => {
                locker.holds(path, &token).and_then(|held| if held { Ok(()) } else { Err(LockError::NotOwner) })
            }
            other => panic!("{args:?} parsed as {other:?}"),
        };
        let error = result.expect_err(&format!("{args:?} succeeded"));
        assert!(case.expect.matches(&error), "{args:?}: expected {:?}, got {error:?}", case.expect);
    }
    // NUL cannot be passed on a command line, but it can through WIT.
    let once = Options { timeout: Some(Duration::ZERO), ..Options::default() };
    assert!(matches!(locker.acquire(format!("{dir}/a\0b"), &once), Err(LockError::InvalidPath(_))));
    assert_untouched(&sandbox, &kept);
}

// Through the guest command (the command module, as `wasmtime run` runs it).
#[test]
fn bad_input_through_the_guest_command() {
    let sandbox = Sandbox::new();
    let kept = prepare(&sandbox);
    let grants = [Grant::new(sandbox.locks(), "/locks")];
    for case in cases() {
        let args = fill(case.args, "/locks");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = runtime().run_command(&args, &grants).unwrap();
        assert_eq!(output.code, case.expect.exit_code(), "{args:?}: {}", output.stderr);
        assert_eq!(output.stderr.lines().count(), 1, "{args:?}: {}", output.stderr);
    }
    assert_untouched(&sandbox, &kept);
}

// Through the native CLI.
#[test]
fn bad_input_through_the_native_cli() {
    let sandbox = Sandbox::new();
    let kept = prepare(&sandbox);
    let dir = sandbox.locks().display().to_string();
    for case in cases().into_iter().filter(|case| case.native) {
        let args = fill(case.args, &dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = uuidlock(&args);
        assert_eq!(output.status.code(), Some(case.expect.exit_code()), "{args:?}: {}", text(&output.stderr));
        assert_eq!(text(&output.stderr).lines().count(), 1, "{args:?}: {}", text(&output.stderr));
    }
    assert_untouched(&sandbox, &kept);
}

// A directory the OS will not let anyone write (immutable, even for root):
// an I/O error naming the path, through all three interfaces.
#[test]
fn a_read_only_directory_is_an_io_error() {
    let sandbox = Sandbox::new();
    let ro = sandbox.lock("ro");
    std::fs::create_dir(&ro).unwrap();
    let frozen = Command::new("chattr").arg("+i").arg(&ro).status().is_ok_and(|status| status.success());
    if !frozen {
        skip("a_read_only_directory_is_an_io_error", "chattr +i is not available here (needs root on ext4/xfs)");
        return;
    }
    let thaw = Thaw(&ro);
    let once = Options { timeout: Some(Duration::ZERO), ..Options::default() };
    let Err(LockError::Io(message)) = sandbox.locker().acquire(ro.join("x.lock"), &once) else { panic!() };
    assert!(message.contains("x.lock") && message.contains("not permitted"), "{message}");
    let grants = [Grant::new(sandbox.locks(), "/locks")];
    let output = runtime().run_command(&["acquire", "/locks/ro/x.lock", "--timeout", "0"], &grants).unwrap();
    assert_eq!(output.code, 4, "{}", output.stderr);
    let native = uuidlock(&["acquire", ro.join("x.lock").to_str().unwrap(), "--timeout", "0"]);
    assert_eq!(native.status.code(), Some(4), "{}", text(&native.stderr));
    drop(thaw);
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}

/// Makes the directory writable again, even if the test fails, so that the
/// temporary directory can be removed.
struct Thaw<'a>(&'a Path);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(self.0).status();
    }
}
