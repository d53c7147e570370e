//! Hard cases, through the native CLI and the guest command: a lock found
//! dead long after its holder died, another user's unreadable lock, a full
//! disk, and what killed processes leave behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{runtime, skip, text, uuidlock, uuidlock_command, Sandbox};
use uuidlock::cli::StatusJson;
use uuidlock_host::Grant;

fn guest(sandbox: &Sandbox, args: &[&str]) -> uuidlock_host::CommandOutput {
    let grants = [Grant::new(sandbox.locks(), "/locks")];
    runtime().run_command(args, &grants).unwrap()
}

fn status_json(path: &str) -> StatusJson {
    let output = uuidlock(&["status", path, "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
}

// A holder with a 0.5 s lifetime dies (its process exits without
// releasing). Once it has been silent for two lifetimes, `status` calls the
// lock stale, and a single try (`--timeout 0`) breaks it: the age is read
// off the filesystem's clock, not off the contender's watch, so arriving
// late costs nothing.
#[test]
fn a_lock_found_dead_late_is_taken_by_a_single_try() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("late.lock");
    let lock = lock.to_str().unwrap();
    let dead = uuidlock(&["acquire", lock, "--stale-after", "0.5", "--verification-delay", "0"]);
    assert_eq!(dead.status.code(), Some(0), "{}", text(&dead.stderr));
    assert!(matches!(status_json(lock), StatusJson::Held { stale: false, .. }));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(matches!(status_json(lock), StatusJson::Held { stale: true, .. }));
    let status = uuidlock(&["status", lock]);
    assert!(text(&status.stderr).contains("the next acquire breaks it"), "{}", text(&status.stderr));
    let taken = uuidlock(&["acquire", lock, "--timeout", "0"]);
    assert_eq!(taken.status.code(), Some(0), "{}", text(&taken.stderr));
    assert!(matches!(status_json(lock), StatusJson::Held { stale_after_s: None, .. }));

    // The same through the command module.
    let dead = guest(&sandbox, &["acquire", "/locks/late2.lock", "--stale-after", "0.5", "--verification-delay", "0"]);
    assert_eq!(dead.code, 0, "{}", dead.stderr);
    std::thread::sleep(Duration::from_millis(1500));
    let taken = guest(&sandbox, &["acquire", "/locks/late2.lock", "--timeout", "0"]);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
}

// Another user's lock file with mode 600 in a shared (1777) directory: the
// lock is held, so it is waited for until the timeout, reported as
// unreadable, and never deleted.
#[test]
fn another_users_unreadable_lock_is_waited_for() {
    const NOBODY: &str = "65534";
    let shared = crate::common::tempdir();
    let dir = shared.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let lock = dir.join("x.lock");
    std::fs::write(&lock, b"someone else's\n").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", env!("CARGO_BIN_EXE_uuidlock")])
            .args(args)
            .env("HOME", shared.path())
            .output()
    };
    let lock = lock.to_str().unwrap();
    match as_nobody(&["status", lock]) {
        Ok(output) if output.status.code() == Some(0) => {
            assert!(text(&output.stdout).contains("unreadable"), "{}", text(&output.stdout));
        }
        Ok(output) if text(&output.stderr).contains("setpriv") => {
            return skip("another_users_unreadable_lock_is_waited_for", &text(&output.stderr));
        }
        Ok(output) => panic!("status as another user: {:?} {}", output.status, text(&output.stderr)),
        Err(e) => return skip("another_users_unreadable_lock_is_waited_for", &format!("setpriv: {e}")),
    }
    let started = std::time::Instant::now();
    let waited = as_nobody(&["acquire", lock, "--timeout", "0.5", "--retry-interval", "0.05"]).unwrap();
    assert_eq!(waited.status.code(), Some(1), "{}", text(&waited.stderr));
    assert!(started.elapsed() >= Duration::from_millis(500), "gave up before the timeout");
    assert!(text(&waited.stderr).contains("unreadable"), "{}", text(&waited.stderr));
    let released = as_nobody(&["release", lock, "00000000-0000-4000-8000-000000000000"]).unwrap();
    assert_eq!(released.status.code(), Some(3), "{}", text(&released.stderr));
    assert_eq!(std::fs::read(lock).unwrap(), b"someone else's\n");
    // Beside the lock, only the queue the waiter lined up in: its ticket
    // counter, `served` (moved past the waiter, who left as the head), and
    // no entry.
    let mut leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    leftovers.sort();
    assert_eq!(leftovers, ["x.lock", "x.lock.queue"]);
    let mut queue: Vec<_> =
        std::fs::read_dir(dir.join("x.lock.queue")).unwrap().map(|e| e.unwrap().file_name()).collect();
    queue.sort();
    assert_eq!(queue, ["served", "tickets"], "the waiter left its entry");
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: usize) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k,mode=0755"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(format!("mount -t tmpfs (needs root): {}", text(&output.stderr).trim()));
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Fills the disk with one file, `fill`, until writing fails.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path("fill")).unwrap();
        while file.write_all(&[0; 4096]).is_ok() {}
        assert!(std::fs::write(self.path("probe"), b"x").is_err(), "the disk is not full");
        let _ = std::fs::remove_file(self.path("probe"));
    }

    fn free(&self) {
        std::fs::remove_file(self.path("fill")).unwrap();
    }

    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

// On a full disk: acquiring fails at once with a message that names the
// condition (not a WASI error number) and leaves nothing; a lock without a
// lifetime is still released; a lock with a lifetime cannot be released
// (its claim needs a block), stays intact, and recovers by itself once
// space returns: its holder's release, or a contender after the lifetime.
#[test]
fn a_full_disk_does_not_wedge_a_lock() {
    let disk = match SmallDisk::mount(256) {
        Ok(disk) => disk,
        Err(why) => return skip("a_full_disk_does_not_wedge_a_lock", &why),
    };
    let path = |name: &str| disk.path(name).to_str().unwrap().to_owned();
    let take = |name: &str, extra: &[&str]| {
        let output = uuidlock(&[&["acquire", &path(name), "--verification-delay", "0"][..], extra].concat());
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_owned()
    };
    let plain = take("plain.lock", &[]);
    let leased = take("leased.lock", &["--stale-after", "1"]);
    let leased_again = take("leased2.lock", &["--stale-after", "1"]);
    disk.fill();
    let before = disk.entries();

    let refused = uuidlock(&["acquire", &path("new.lock"), "--timeout", "0"]);
    let message = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{message}");
    assert!(message.contains("no space left on device") && !message.contains("os error"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    let grants = [Grant::new(disk.dir.path().to_owned(), "/disk")];
    let in_guest = runtime().run_command(&["acquire", "/disk/new.lock", "--timeout", "0"], &grants).unwrap();
    assert_eq!(in_guest.code, 4, "{}", in_guest.stderr);
    assert!(
        in_guest.stderr.contains("no space left on device") && !in_guest.stderr.contains("os error"),
        "{}",
        in_guest.stderr
    );
    assert_eq!(disk.entries(), before, "a failed acquire left something");

    let stuck = uuidlock(&["release", &path("leased.lock"), &leased]);
    assert_eq!(stuck.status.code(), Some(4), "{}", text(&stuck.stderr));
    assert!(text(&stuck.stderr).contains("no space left on device"), "{}", text(&stuck.stderr));
    assert_eq!(uuidlock(&["holds", &path("leased.lock"), &leased]).status.code(), Some(0), "the lock was lost");
    assert_eq!(disk.entries(), before, "a failed release left something");
    let released = uuidlock(&["release", &path("plain.lock"), &plain]);
    assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));

    disk.free();
    let released = uuidlock(&["release", &path("leased.lock"), &leased]);
    assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));
    // The other holder never comes back: its lock is broken after its lifetime.
    let _ = leased_again;
    let taken = uuidlock(&["acquire", &path("leased2.lock"), "--timeout", "5", "--retry-interval", "0.05"]);
    assert_eq!(taken.status.code(), Some(0), "{}", text(&taken.stderr));
}

/// The files uuidlock derives from a lock's name (staging files, heartbeats,
/// claims) in `dir`.
fn derived_files(dir: &Path, lock_name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.strip_prefix(lock_name)
                .is_some_and(|rest| [".new", ".beat", ".claim"].iter().any(|s| rest.ends_with(s)))
        })
        .collect()
}

// A kill-heavy run leaves staging files, heartbeats and claims of killed
// processes. Later holders reclaim them: what remains after a few more
// acquisitions is bounded by a small constant, whatever the kills left.
#[test]
fn leftovers_of_killed_processes_are_reclaimed() {
    let sandbox = Sandbox::new();
    let dir = sandbox.locks();
    let args = ["--processes", "4", "--iterations", "30", "--stale-after", "0.5", "--kill", "20", "--json"];
    let output = uuidlock_command().arg("contend").args(args).arg("--dir").arg(&dir).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lock_name = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .find(|name| name.ends_with(".fence"))
        .map(|fence| fence.trim_end_matches(".fence").to_owned())
        .expect("contend made a fencing counter");
    // What many more killed processes would have left: staging files,
    // heartbeats and claims of instances long gone.
    for _ in 0..50 {
        let uuid = uuidlock_host::Token::generate("").unwrap();
        for kind in ["new", "beat", "claim"] {
            std::fs::write(dir.join(format!("{lock_name}.{}.{kind}", uuid.uuid())), b"1\n").unwrap();
        }
    }
    let after_kills = derived_files(&dir, &lock_name);
    assert!(after_kills.len() >= 150);
    // Staging files are reclaimed once old enough to be a dead process's.
    std::thread::sleep(Duration::from_secs(6));
    let lock = dir.join(&lock_name);
    let lock = lock.to_str().unwrap();
    for _ in 0..16 {
        let token = uuidlock(&["acquire", lock, "--verification-delay", "0", "--timeout", "10"]);
        assert_eq!(token.status.code(), Some(0), "{}", text(&token.stderr));
        let released = uuidlock(&["release", lock, text(&token.stdout).trim()]);
        assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));
    }
    let remaining = derived_files(&dir, &lock_name);
    assert!(remaining.len() <= 2, "{} left after the kills; still there: {remaining:?}", after_kills.len());
}

// A lock file that cannot be deleted for the moment (EBUSY: SMB says so
// while another client has the file open; here, a file mounted over the
// lock file): release retries for a bounded time, then fails with exit 4,
// says the file is still there, and reports nothing released. Once the file
// can be deleted, release works.
#[test]
fn a_busy_lock_file_is_never_reported_released() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("busy.lock");
    let lock = lock.to_str().unwrap();
    let taken = uuidlock(&["acquire", lock, "--verification-delay", "0"]);
    let token = text(&taken.stdout).trim().to_owned();
    let copy = sandbox.outside().join("same-marker");
    std::fs::copy(lock, &copy).unwrap();
    let mounted = Command::new("mount").arg("--bind").arg(&copy).arg(lock).output();
    match mounted {
        Ok(output) if output.status.success() => {}
        Ok(output) => return skip("a_busy_lock_file_is_never_reported_released", &text(&output.stderr)),
        Err(e) => return skip("a_busy_lock_file_is_never_reported_released", &format!("mount: {e}")),
    }
    let busy = uuidlock(&["release", lock, &token]);
    let _ = Command::new("umount").arg(lock).status();
    assert_eq!(busy.status.code(), Some(4), "{}", text(&busy.stderr));
    assert!(text(&busy.stderr).contains("resource busy") && text(&busy.stderr).contains("still there"));
    assert_eq!(uuidlock(&["holds", lock, &token]).status.code(), Some(0), "reported busy, but the lock is gone");
    let released = uuidlock(&["release", lock, &token]);
    assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));
    std::fs::remove_file(copy).unwrap();
}
