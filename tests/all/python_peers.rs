//! The Python lock libraries people already point at the same files:
//! `filelock.SoftFileLock` and `uuid-filelock` must wait for a uuidlock
//! holder (and never evict it), and uuidlock must wait for theirs; against
//! uuidlock's readers they do what the docs say.
//! Installs them from PyPI into a venv on demand; SKIPPED loudly if it can't.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{skip, text, venv, Sandbox};
use uuidlock_host::{LockError, Marker, Mode, Options};

const PACKAGES: &[&str] = &["filelock==4.2.11", "uuid-filelock==1.4"];

fn python_or_skip(test: &str) -> Option<PathBuf> {
    match venv("python-peers", PACKAGES) {
        Ok(python) => Some(python),
        Err(why) => {
            skip(test, &format!("cannot install {PACKAGES:?} from PyPI: {why}"));
            None
        }
    }
}

/// Runs `script` with the lock path as argv[1]; returns its stdout.
fn python(python: &Path, script: &str, lock: &Path) -> String {
    let output = Command::new(python).arg("-c").arg(script).arg(lock).output().unwrap();
    assert!(output.status.success(), "python failed: {}", text(&output.stderr));
    text(&output.stdout)
}

// SoftFileLock evicts markers it cannot parse after about 2 s unchanged and
// markers of dead pids on its own host; it must do neither to ours. It tries
// for 3 s, past its 2 s threshold.
#[test]
fn softfilelock_waits_for_a_uuidlock_holder_and_leaves_it_alone() {
    let Some(py) = python_or_skip("softfilelock_waits_for_a_uuidlock_holder_and_leaves_it_alone") else { return };
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("shared.lock");
    // With a lifetime: the longer marker form must read as a holder too.
    let with_lifetime = Options { stale_after: Some(Duration::from_secs(60)), ..Options::default() };
    let guard = sandbox.locker().acquire(&lock, &with_lifetime).unwrap();
    let before = std::fs::read(&lock).unwrap();
    let said = python(
        &py,
        r#"
import sys, filelock
try:
    filelock.SoftFileLock(sys.argv[1], timeout=3).acquire()
    print("acquired")
except filelock.Timeout:
    print("timeout")
"#,
        &lock,
    );
    assert_eq!(said.trim(), "timeout");
    assert_eq!(std::fs::read(&lock).unwrap(), before, "SoftFileLock changed our marker");
    guard.release().unwrap();
}

// uuid-filelock compares the file with its own bare token and waits.
#[test]
fn uuid_filelock_waits_for_a_uuidlock_holder() {
    let Some(py) = python_or_skip("uuid_filelock_waits_for_a_uuidlock_holder") else { return };
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("shared.lock");
    let guard = sandbox.locker().acquire(&lock, &Options::default()).unwrap();
    let before = std::fs::read(&lock).unwrap();
    let said = python(
        &py,
        r#"
import sys, uuid_filelock
lock = uuid_filelock.UUIDFileLock(sys.argv[1], timeout_interval=0.5)
try:
    lock.acquire()
    print("acquired")
except uuid_filelock.LockTimeoutException:
    print("timeout")
"#,
        &lock,
    );
    assert_eq!(said.trim(), "timeout");
    assert_eq!(std::fs::read(&lock).unwrap(), before);
    guard.release().unwrap();
}

// While a Python library holds the lock, uuidlock waits, reports a foreign
// holder, refuses to release it, and gets the lock once Python lets go.
#[test]
fn uuidlock_waits_for_python_holders() {
    let Some(py) = python_or_skip("uuidlock_waits_for_python_holders") else { return };
    for (library, take) in [
        ("SoftFileLock", "import filelock; lock = filelock.SoftFileLock(sys.argv[1]); lock.acquire()"),
        ("uuid-filelock", "import uuid_filelock; lock = uuid_filelock.UUIDFileLock(sys.argv[1]); lock.acquire()"),
    ] {
        let sandbox = Sandbox::new();
        let lock = sandbox.lock("shared.lock");
        // Hold until stdin closes.
        let script = format!("import sys\n{take}\nprint('held', flush=True)\nsys.stdin.read()\nlock.release()\n");
        let mut holder = Command::new(&py)
            .arg("-c")
            .arg(&script)
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held", "{library}");

        let locker = sandbox.locker();
        let once = Options { timeout: Some(Duration::ZERO), verification_delay: Duration::ZERO, ..Options::default() };
        assert_eq!(locker.acquire(&lock, &once).err(), Some(LockError::Timeout), "{library}");
        assert!(matches!(locker.status(&lock).map(|s| s.map(|s| s.marker)), Ok(Some(Marker::Foreign(_)))), "{library}");
        assert_eq!(locker.release(&lock, "00000000-0000-4000-8000-000000000000"), Err(LockError::NotOwner));
        assert!(lock.exists(), "{library}'s lock was deleted");

        holder.stdin.take().unwrap().write_all(b"").unwrap(); // closes stdin
        assert!(holder.wait().unwrap().success(), "{library}");
        let patient = Options { timeout: Some(Duration::from_secs(10)), ..once };
        assert!(locker.acquire(&lock, &patient).is_ok(), "{library}");
    }
}

// Against uuidlock's shared modes, the libraries that know only exclusive
// locks do what the docs say: while one holds the lock file, readers and a
// semaphore's holders wait, as writers do; but they take the lock file
// beside uuidlock readers already in, whom they know nothing of, and a
// uuidlock writer still never overlaps with them.
#[test]
fn exclusive_only_libraries_keep_readers_out_but_not_those_already_in() {
    let Some(py) = python_or_skip("exclusive_only_libraries_keep_readers_out_but_not_those_already_in") else {
        return;
    };
    let once = Options { timeout: Some(Duration::ZERO), verification_delay: Duration::ZERO, ..Options::default() };
    for (library, take) in [
        ("SoftFileLock", "import filelock; lock = filelock.SoftFileLock(sys.argv[1], timeout=0); lock.acquire()"),
        (
            "uuid-filelock",
            "import uuid_filelock; lock = uuid_filelock.UUIDFileLock(sys.argv[1], timeout_interval=0.5); lock.acquire()",
        ),
    ] {
        let sandbox = Sandbox::new();
        let lock = sandbox.lock("shared.lock");
        let locker = sandbox.locker();
        // A reader is in: the library takes the lock file anyway.
        let reader = locker.acquire(&lock, &Options { mode: Mode::Shared, ..once.clone() }).unwrap();
        let said = python(&py, &format!("import sys\n{take}\nprint('acquired')\nlock.release()\n"), &lock);
        assert_eq!(said.trim(), "acquired", "{library} beside a reader");
        assert!(locker.holds(&lock, reader.token().as_str()).unwrap(), "{library} removed the reader");
        reader.release().unwrap();

        // The library holds the lock file: every uuidlock mode waits.
        let script = format!("import sys\n{take}\nprint('held', flush=True)\nsys.stdin.read()\nlock.release()\n");
        let mut holder = Command::new(&py)
            .arg("-c")
            .arg(&script)
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held", "{library}");
        for mode in [Mode::Exclusive, Mode::Shared, Mode::Slots(3)] {
            let result = locker.acquire(&lock, &Options { mode, ..once.clone() }).map(|_| ());
            assert_eq!(result, Err(LockError::Timeout), "{library}, {mode:?}");
        }
        assert!(lock.exists(), "{library}'s lock was deleted");
        holder.stdin.take().unwrap().write_all(b"").unwrap();
        assert!(holder.wait().unwrap().success(), "{library}");
        let patient = Options { timeout: Some(Duration::from_secs(10)), mode: Mode::Shared, ..once.clone() };
        locker.acquire(&lock, &patient).unwrap().release().unwrap();
    }
}
