//! The hostile neighbour: what someone who can write a lock's directory
//! (a shared `/tmp`, a 1777 scratch directory, a group directory) can plant
//! there, and what uuidlock does about it. Each test names the finding of
//! the hostile-directory review it guards; each would fail on the code
//! before it (a call hanging past its timeout, a file outside touched, a
//! second user shut out).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{finishes_within, mkfifo, runtime, skip, text, uuidlock, uuidlock_command, Sandbox};
use uuidlock_host::{Grant, LockError, Options};

fn spawn(args: &[&str]) -> Child {
    uuidlock_command().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A lock held by someone else (a foreign marker, never broken).
fn held_by_another(lock: &Path) {
    std::fs::write(lock, b"held by another program\n").unwrap();
}

// Finding 1: a FIFO at any name uuidlock uses beside the lock made every
// caller hang in `open` for good, ignoring `--timeout`, SIGINT and SIGTERM.
// Through the component (the host API), the command module (`wasmtime
// run`) and the native CLI, every call now ends within its timeout.
#[test]
fn fifos_planted_beside_a_lock_never_hang_a_call() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let grants = [Grant::new(sandbox.locks(), "/locks")];
    let waited = Options {
        timeout: Some(Duration::from_millis(300)),
        retry_interval: Duration::from_millis(10),
        ..Options::default()
    };
    // The fencing counter: an I/O error at once, and the lock not left.
    let lock = sandbox.lock("fence.lock");
    mkfifo(&PathBuf::from(format!("{}.fence", lock.display())));
    let result = locker.acquire(&lock, &Options { timeout: Some(Duration::ZERO), ..waited.clone() });
    // (WASI has no FIFO file type: the guest calls it a special file.)
    assert!(matches!(&result, Err(LockError::Io(why)) if why.contains("FIFO")), "{:?}", result.map(|_| ()));
    assert!(!lock.exists(), "the lock was left behind");
    let output = runtime().run_command(&["acquire", "/locks/fence.lock", "--timeout", "0"], &grants).unwrap();
    assert_eq!(output.code, 4, "{}", output.stderr);
    let native =
        finishes_within(spawn(&["acquire", path_str(&lock), "--timeout", "0"]), Duration::from_secs(10), "acquire");
    assert_eq!(native.status.code(), Some(4), "{}", text(&native.stderr));
    assert!(text(&native.stderr).contains("FIFO"), "{}", text(&native.stderr));
    assert!(!lock.exists(), "the lock was left behind");

    // The queue, its ticket counter, `served` and future entries.
    for (n, planted) in ["", "/tickets", "/served", "/1", "/2", "/3"].iter().enumerate() {
        let lock = sandbox.lock(&format!("queue{n}.lock"));
        let queue = PathBuf::from(format!("{}.queue", lock.display()));
        if !planted.is_empty() {
            std::fs::create_dir(&queue).unwrap();
        }
        mkfifo(&PathBuf::from(format!("{}{planted}", queue.display())));
        held_by_another(&lock);
        let start = Instant::now();
        assert_eq!(locker.acquire(&lock, &waited).map(|_| ()), Err(LockError::Timeout), "queue{planted}");
        assert!(start.elapsed() < Duration::from_secs(5), "queue{planted}: {:?}", start.elapsed());
        let guest = format!("/locks/queue{n}.lock");
        let output = runtime()
            .run_command(&["acquire", &guest, "--timeout", "0.3", "--retry-interval", "0.01"], &grants)
            .unwrap();
        assert_eq!(output.code, 1, "queue{planted}: {}", output.stderr);
        let args = ["acquire", path_str(&lock), "--timeout", "0.3", "--retry-interval", "0.01"];
        let native = finishes_within(spawn(&args), Duration::from_secs(10), "a waiter");
        assert_eq!(native.status.code(), Some(1), "queue{planted}: {}", text(&native.stderr));
    }
}

/// Sends `signal` to `child`.
fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Waits until `lock`'s queue has an entry (the waiter is in line).
fn until_waiting(lock: &Path) {
    let start = Instant::now();
    while crate::common::in_line(lock) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the waiter never lined up");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// Finding 2: after Ctrl-C the host read every digit-named entry of the
// queue natively, following links, with no type check: a FIFO there, or
// the queue made a link to /proc/self/fd, kept the process for good. The
// undo now runs inside the guest with the same checks as every other read,
// and an interrupt ends the process within its grace in any case.
#[test]
fn an_interrupted_waiter_undoes_itself_inside_the_sandbox() {
    let sandbox = Sandbox::new();
    // A FIFO among the queue's entries.
    let lock = sandbox.lock("fifo.lock");
    held_by_another(&lock);
    let waiter = spawn(&["acquire", path_str(&lock), "--retry-interval", "0.01"]);
    until_waiting(&lock);
    mkfifo(&PathBuf::from(format!("{}.queue/0", lock.display())));
    signal(&waiter, libc::SIGINT);
    let output = finishes_within(waiter, Duration::from_secs(10), "an interrupted waiter");
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let queue: Vec<String> = std::fs::read_dir(format!("{}.queue", lock.display()))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(queue, ["0"], "the waiter's entry was left, or the FIFO removed");

    // The queue as a link to /proc/self/fd, read through a pipe.
    let lock = sandbox.lock("proc.lock");
    held_by_another(&lock);
    std::os::unix::fs::symlink("/proc/self/fd", format!("{}.queue", lock.display())).unwrap();
    let waiter = uuidlock_command()
        .args(["acquire", path_str(&lock), "--retry-interval", "0.01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(&waiter, libc::SIGINT);
    let output = finishes_within(waiter, Duration::from_secs(10), "an interrupted waiter");
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("nothing of it was left behind"), "{}", text(&output.stderr));
}

// Finding 3: `uuidlock doctor`, run by root on a directory others can
// write, followed a link that a neighbour swapped in for its probe
// directory, and truncated a file outside. The doctor now works through its
// probe directory's own descriptor: the swap redirects nothing.
#[test]
fn the_doctor_cannot_be_redirected_by_a_swapped_probe_directory() {
    let root = crate::common::tempdir();
    let (dir, mirror, evil, victim) =
        (root.path().join("shared"), root.path().join("mirror"), root.path().join("evil"), root.path().join("victim"));
    for made in [&dir, &mirror, &evil] {
        std::fs::create_dir(made).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&victim, b"root's own file").unwrap();
    // Every name the doctor writes, as a link to the victim.
    let names = ["excl", "link-source", "link-target", "rename-from", "rename-to", "open", "data"];
    let clocks = (0..5).map(|i| format!("clock-{i}"));
    let seen = (0..1000).map(|i| format!("seen-{i}"));
    for name in names.iter().map(|name| name.to_string()).chain(clocks).chain(seen) {
        std::os::unix::fs::symlink(&victim, evil.join(name)).unwrap();
    }
    // DIR2: the same directory through a bind mount, so that the doctor
    // runs long enough for the swap to land in the middle of it.
    let bound = Command::new("mount").arg("--bind").arg(&dir).arg(&mirror).output();
    if !bound.as_ref().is_ok_and(|output| output.status.success()) {
        let why = bound.map_or_else(|e| e.to_string(), |output| text(&output.stderr));
        return skip("the_doctor_cannot_be_redirected_by_a_swapped_probe_directory", &format!("mount --bind: {why}"));
    }
    let _unmount = Unmount(mirror.clone());
    let doctor = spawn(&["doctor", path_str(&dir), path_str(&mirror), "--rounds", "1000"]);
    // The neighbour: the moment the probe directory appears, rename it away
    // and put a link to their own directory in its place.
    let start = Instant::now();
    let swapped = loop {
        let probe = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|entry| entry.file_name().to_string_lossy().starts_with(".uuidlock-doctor-"));
        if let Some(probe) = probe {
            let away = dir.join("moved-away");
            if std::fs::rename(probe.path(), &away).is_ok() {
                std::os::unix::fs::symlink(&evil, probe.path()).unwrap();
                break true;
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
    };
    let output = finishes_within(doctor, Duration::from_secs(120), "the doctor");
    assert!(swapped, "the probe directory never appeared: {}", text(&output.stderr));
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's own file", "the doctor wrote through the link");
    assert!(matches!(output.status.code(), Some(0 | 1 | 4)), "{:?}: {}", output.status, text(&output.stderr));
}

/// Unmounts a bind mount on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Two users that are not root, for the tests that need several accounts:
/// `nobody` and the uid below it.
const USERS: [u32; 2] = [65534, 65533];

/// Runs the native binary as `uid`, with a cache directory of its own.
fn as_user(uid: u32, home: &Path, args: &[&str]) -> std::io::Result<Output> {
    let home = home.join(uid.to_string());
    let _ = std::fs::create_dir(&home);
    std::os::unix::fs::chown(&home, Some(uid), Some(uid))?;
    Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_uuidlock"))
        .args(args)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME")
        .output()
}

/// A 1777 directory (as `/tmp`) or a 0777 one, in a tree other users can
/// reach, and a place for their homes.
fn shared_dir(mode: u32) -> (tempfile::TempDir, PathBuf) {
    let root = crate::common::tempdir();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    (root, dir)
}

/// Whether this machine can run commands as other users; says SKIPPED if not.
fn other_users_available(test: &str, home: &Path) -> bool {
    match as_user(USERS[0], home, &["--version"]) {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            skip(test, &format!("setpriv: {}", text(&output.stderr).trim()));
            false
        }
        Err(e) => {
            skip(test, &format!("setpriv: {e}"));
            false
        }
    }
}

fn fence_of(output: &Output) -> u64 {
    let stdout = text(&output.stdout);
    stdout.split_whitespace().nth(1).and_then(|fence| fence.parse().ok()).unwrap_or_else(|| panic!("{stdout}"))
}

// Finding 4: in a directory every user can write (1777, as /tmp), the first
// user to take a lock made its fencing counter 0755, and every later user's
// acquire failed for good. Now the counter and the queue are as shared as
// the directory: a second user takes fences above the first's, and waits
// in line behind it.
#[test]
fn a_shared_directory_works_for_every_user_who_can_write_it() {
    let (root, dir) = shared_dir(0o1777);
    if !other_users_available("a_shared_directory_works_for_every_user_who_can_write_it", root.path()) {
        return;
    }
    let lock = dir.join("job.lock");
    let lock = path_str(&lock);
    let [first, second] = USERS;
    let mut fences = Vec::new();
    for uid in [first, second, first] {
        let output = as_user(uid, root.path(), &["acquire", lock, "--fence", "--verification-delay", "0"]).unwrap();
        assert_eq!(output.status.code(), Some(0), "uid {uid}: {}", text(&output.stderr));
        fences.push(fence_of(&output));
        let token = text(&output.stdout).split_whitespace().next().unwrap().to_owned();
        let released = as_user(uid, root.path(), &["release", lock, &token]).unwrap();
        assert_eq!(released.status.code(), Some(0), "uid {uid}: {}", text(&released.stderr));
    }
    assert!(fences.windows(2).all(|pair| pair[0] < pair[1]), "{fences:?}");
    // The second user waits in line behind the first's holder.
    let held = as_user(first, root.path(), &["acquire", lock, "--verification-delay", "0"]).unwrap();
    let token = text(&held.stdout).trim().to_owned();
    let waiter = {
        let (home, lock) = (root.path().to_owned(), lock.to_owned());
        std::thread::spawn(move || {
            as_user(second, &home, &["acquire", &lock, "--timeout", "20", "--retry-interval", "0.01"]).unwrap()
        })
    };
    until_waiting(Path::new(lock));
    let released = as_user(first, root.path(), &["release", lock, &token]).unwrap();
    assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));
    let waited = waiter.join().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
}

// Finding 4, continued: a dead holder's lock in a sticky directory cannot
// be deleted by another user; the message says who must act. In a directory
// without the sticky bit it is broken as any other.
#[test]
fn another_users_dead_lock_is_broken_where_the_directory_allows() {
    for (mode, breakable) in [(0o1777, false), (0o777, true)] {
        let (root, dir) = shared_dir(mode);
        if !other_users_available("another_users_dead_lock_is_broken_where_the_directory_allows", root.path()) {
            return;
        }
        let lock = dir.join("job.lock");
        let lock = path_str(&lock);
        let [first, second] = USERS;
        let dead = as_user(first, root.path(), &["acquire", lock, "--stale-after", "0.5", "--verification-delay", "0"]);
        assert_eq!(dead.unwrap().status.code(), Some(0));
        std::thread::sleep(Duration::from_millis(1200));
        let taken = as_user(second, root.path(), &["acquire", lock, "--timeout", "0"]).unwrap();
        if breakable {
            assert_eq!(taken.status.code(), Some(0), "mode {mode:o}: {}", text(&taken.stderr));
        } else {
            assert_eq!(taken.status.code(), Some(4), "mode {mode:o}: {}", text(&taken.stderr));
            let message = text(&taken.stderr);
            assert!(message.contains("sticky") && message.contains("owner"), "{message}");
            assert_eq!(message.lines().count(), 1, "{message}");
        }
    }
}

// Finding 5: junk put at a live holder's claim (its UUID is in the lock
// file) made `uuidlock run` report the lease lost and exit 75 although
// CMD ended well; and the lock was never broken once its holder died.
#[test]
fn junk_at_a_claim_neither_fails_a_run_nor_wedges_the_lock() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let run = spawn(&["run", path_str(&lock), "--stale-after", "1", "--verification-delay", "0", "--", "sleep", "2"]);
    let start = Instant::now();
    let token = loop {
        if let Ok(bytes) = std::fs::read(&lock) {
            let marker = text(&bytes);
            if let Some(token) = marker.split("token=").nth(1).and_then(|rest| rest.split('&').next()) {
                break token.trim().to_owned();
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "run never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    };
    let uuid = &token[token.len() - 36..];
    std::fs::write(format!("{}.{uuid}.claim", lock.display()), b"junk\n").unwrap();
    let output = finishes_within(run, Duration::from_secs(30), "run");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!lock.exists());
}

// Finding 6: every waiter that gave up left a ticket gap that each later
// waiter walked, one call a ticket: with a gap of a million, a waiter given
// 2 s was still walking after 8 s. The walk is bounded, and a head that
// leaves moves `served` up past itself.
#[test]
fn a_gap_in_the_tickets_costs_a_waiter_nothing() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    held_by_another(&lock);
    let queue = PathBuf::from(format!("{}.queue", lock.display()));
    std::fs::create_dir_all(queue.join("tickets")).unwrap();
    std::fs::write(queue.join("tickets").join("1000000"), b"").unwrap();
    std::fs::write(queue.join("served"), b"1").unwrap();
    let start = Instant::now();
    let args = ["acquire", path_str(&lock), "--timeout", "1", "--retry-interval", "0.01"];
    let output = finishes_within(spawn(&args), Duration::from_secs(10), "a waiter");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
    // Standbys that time out one after another leave no gap behind.
    for _ in 0..20 {
        let output = uuidlock(&["acquire", path_str(&lock), "--timeout", "0.05", "--retry-interval", "0.01"]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    }
    let served: u64 = text(&std::fs::read(queue.join("served")).unwrap()).trim().parse().unwrap();
    let tickets: u64 = std::fs::read_dir(queue.join("tickets"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .max()
        .unwrap();
    assert_eq!(served, tickets, "the last standby's ticket was not served past");
}

// Finding 7: queue files were read whole: a 1 GB entry ahead of a waiter,
// or a 1 GB `served`, cost a gigabyte and 15 s against a 4 s timeout.
#[test]
fn huge_queue_files_are_read_only_in_part() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    held_by_another(&lock);
    let queue = PathBuf::from(format!("{}.queue", lock.display()));
    std::fs::create_dir_all(queue.join("tickets")).unwrap();
    std::fs::write(queue.join("tickets").join("5"), b"").unwrap();
    for name in ["served", "5"] {
        let file = std::fs::File::create(queue.join(name)).unwrap();
        file.set_len(1 << 30).unwrap(); // sparse: a gigabyte to read, none on disk
    }
    let start = Instant::now();
    let args = ["acquire", path_str(&lock), "--timeout", "2", "--retry-interval", "0.01"];
    let output = finishes_within(spawn(&args), Duration::from_secs(20), "a waiter");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

/// Runs `cmd` (sh) as `uuidlock run`'s CMD, in a pseudo-terminal whose
/// foreground is `run` (as an interactive shell runs it), and types Ctrl-C
/// into it `after` CMD started.
fn ctrl_c_under_a_terminal(sandbox: &Sandbox, cmd: &str, after: Duration) -> Result<Output, String> {
    let lock = sandbox.lock("tty.lock");
    let line = format!(
        "exec {} run {} --verification-delay 0 -- sh -c '{cmd}'",
        env!("CARGO_BIN_EXE_uuidlock"),
        lock.display()
    );
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("script (util-linux): {e}"))?;
    // CMD runs once the lock is taken.
    let start = Instant::now();
    while !lock.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "run never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(after);
    use std::io::Write;
    script.stdin.as_mut().unwrap().write_all(b"\x03").map_err(|e| e.to_string())?;
    Ok(finishes_within(script, Duration::from_secs(30), "run under a terminal"))
}

// Finding 8: one Ctrl-C reached CMD twice, the terminal's SIGINT and the one
// `run` passed on, which cut short a CMD's own cleanup. `run` passes on
// only what a process sent it; the terminal's reaches CMD by itself.
#[test]
fn one_ctrl_c_reaches_cmd_once() {
    let sandbox = Sandbox::new();
    let count = sandbox.root.path().join("count");
    let cmd =
        format!(r#"n=0; trap "n=\$((n+1))" INT; sleep 3 & wait; sleep 0.5 & wait; echo $n > {}"#, count.display());
    match ctrl_c_under_a_terminal(&sandbox, &cmd, Duration::from_millis(300)) {
        Err(why) => return skip("one_ctrl_c_reaches_cmd_once", &why),
        Ok(output) => assert!(count.exists(), "CMD did not finish: {:?} {}", output.status, text(&output.stdout)),
    }
    assert_eq!(text(&std::fs::read(&count).unwrap()).trim(), "1", "CMD got SIGINT more than once");
}

/// Whether a process with `pid` still runs (and is not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// The pids CMD's shell wrote to `pids`.
fn pids_written(pids: &Path) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let written = std::fs::read_to_string(pids).unwrap_or_default();
        let pids: Vec<i32> = written.split_whitespace().filter_map(|pid| pid.parse().ok()).collect();
        if pids.len() == 2 {
            return pids;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "CMD never started its jobs");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// Finding 8: on SIGTERM, or when the lease is lost, only CMD's own pid was
// signalled: `sh -c 'sleep 30 & sleep 31'` left both sleeps running while a
// contender held the lock. Now every process CMD started is stopped.
#[test]
fn stopping_cmd_stops_every_process_it_started() {
    let sandbox = Sandbox::new();
    for how in ["sigterm", "lease lost"] {
        let lock = sandbox.lock(&format!("{}.lock", how.replace(' ', "-")));
        let pids = sandbox.root.path().join(format!("{}.pids", how.replace(' ', "-")));
        // The jobs' output goes nowhere, so that nothing waits for them to
        // close run's pipes; they would run five minutes on their own.
        let cmd = format!(
            "sleep 300 >/dev/null 2>&1 & echo $! >> {0}; sleep 301 >/dev/null 2>&1 & echo $! >> {0}; wait",
            pids.display()
        );
        let run = spawn(&[
            "run",
            path_str(&lock),
            "--stale-after",
            "1",
            "--verification-delay",
            "0",
            "--kill-after",
            "1",
            "--",
            "sh",
            "-c",
            &cmd,
        ]);
        let jobs = pids_written(&pids);
        match how {
            "sigterm" => signal(&run, libc::SIGTERM),
            // Someone deletes the lock: the next renewal finds it gone.
            _ => std::fs::remove_file(&lock).unwrap(),
        }
        let output = finishes_within(run, Duration::from_secs(20), how);
        let start = Instant::now();
        while jobs.iter().any(|&pid| alive(pid)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!jobs.iter().any(|&pid| alive(pid)), "{how}: CMD's jobs {jobs:?} still run: {}", text(&output.stderr));
        if how == "lease lost" {
            assert_eq!(output.status.code(), Some(75), "{}", text(&output.stderr));
        }
    }
}

// Finding 9: a planted counter name at the top made the next fence wrap to
// 0, and removing the counter while the lock was held restarted at 1.
#[test]
fn fences_never_fall_whatever_is_done_to_the_counter() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let acquire = || uuidlock(&["acquire", path_str(&lock), "--fence", "--verification-delay", "0"]);
    let first = acquire();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let token = text(&first.stdout).split_whitespace().next().unwrap().to_owned();
    // Removed while held: the next number is still larger.
    let counter = PathBuf::from(format!("{}.fence", lock.display()));
    std::fs::remove_dir_all(&counter).unwrap();
    assert_eq!(uuidlock(&["release", path_str(&lock), &token]).status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(20));
    let second = acquire();
    assert!(fence_of(&second) > fence_of(&first), "{} then {}", fence_of(&first), fence_of(&second));
    let token = text(&second.stdout).split_whitespace().next().unwrap().to_owned();
    assert_eq!(uuidlock(&["release", path_str(&lock), &token]).status.code(), Some(0));
    // At the top: refused, not wrapped, and no lock left.
    let current = std::fs::read_dir(&counter).unwrap().next().unwrap().unwrap().path();
    std::fs::rename(current, counter.join(u64::MAX.to_string())).unwrap();
    let refused = acquire();
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stdout));
    assert!(text(&refused.stderr).contains("2^53"), "{}", text(&refused.stderr));
    assert!(!lock.exists());
}

// Finding 10: messages that named the wrong thing.
#[test]
fn messages_name_what_is_wrong() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("file.lock");
    std::fs::write(format!("{}.fence", lock.display()), b"").unwrap();
    let output = uuidlock(&["acquire", path_str(&lock), "--timeout", "0", "--verification-delay", "0"]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("regular file, not a directory"), "{}", text(&output.stderr));
    let lock = sandbox.lock("link.lock");
    std::os::unix::fs::symlink(sandbox.outside(), format!("{}.fence", lock.display())).unwrap();
    let output = uuidlock(&["acquire", path_str(&lock), "--timeout", "0", "--verification-delay", "0"]);
    assert!(text(&output.stderr).contains("symbolic link"), "{}", text(&output.stderr));
    let output = uuidlock(&["run", path_str(&lock), "--conflict-exit-code", "300", "--", "true"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("see 'uuidlock run --help'"), "{}", text(&output.stderr));
    let output = uuidlock(&[]);
    assert_eq!(output.status.code(), Some(2));
    let message = text(&output.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!message.contains("uuidlock: uuidlock:") && message.contains("one of acquire, release"), "{message}");
}

// Finding 11: bad counts crashed or ran for ever; a full stdout panicked.
#[test]
fn bad_counts_and_a_full_stdout_are_errors_not_crashes() {
    for args in [
        &["contend", "--iterations", "99999999999"][..],
        &["contend", "--processes", "100000"],
        &["contend", "--processes", "1000", "--iterations", "100000"],
        &["contend", "--hold-ms", "1e9"],
        &["bench", "--rounds", "1000000000000"],
        &["bench", "--processes", "5000"],
    ] {
        let output = uuidlock(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        assert_eq!(text(&output.stderr).lines().count(), 1, "{args:?}: {}", text(&output.stderr));
    }
    let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
    let output = uuidlock_command().args(["completions", "bash"]).stdout(full).output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("No space left"), "{}", text(&output.stderr));
}

/// A neighbour in a loop, until dropped: each round runs `step`.
struct Neighbour {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Neighbour {
    fn start(mut step: impl FnMut() -> bool + Send + 'static) -> Neighbour {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut hits = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                hits += u64::from(step());
            }
            hits
        });
        Neighbour { stop, thread: Some(thread) }
    }

    /// Stops the neighbour; how many of its rounds did something.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

// The hostile-directory review, second round: the guest looks at a file's
// type, then opens it; a neighbour swapping a FIFO and a file at `served`
// in a loop caught the open on the FIFO within seconds, and a waiter given
// 2 s hung for good. This host opens without waiting on a FIFO.
#[test]
fn a_fifo_swapped_in_between_a_look_and_an_open_never_hangs() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    held_by_another(&lock);
    let queue = PathBuf::from(format!("{}.queue", lock.display()));
    std::fs::create_dir(&queue).unwrap();
    let (served, fifo, file) = (queue.join("served"), queue.join("fifo"), queue.join("file"));
    let swapper = Neighbour::start(move || {
        // Never empty at the name: a link made aside, renamed over it.
        let _ = std::fs::remove_file(&fifo);
        mkfifo(&fifo);
        let _ = std::fs::rename(&fifo, &served);
        let _ = std::fs::write(&file, b"0");
        std::fs::rename(&file, &served).is_ok()
    });
    // A waiter ahead, so that the one measured is not the head: it reads
    // `served` at every step.
    let head = spawn(&["acquire", path_str(&lock), "--timeout", "60", "--retry-interval", "0.005"]);
    until_waiting(&lock);
    for _ in 0..3 {
        let start = Instant::now();
        let args = ["acquire", path_str(&lock), "--timeout", "2", "--retry-interval", "0.005"];
        let output = finishes_within(spawn(&args), Duration::from_secs(20), "a waiter");
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
        assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
    }
    assert!(swapper.stop() > 0, "the neighbour never swapped");
    signal(&head, libc::SIGTERM);
    finishes_within(head, Duration::from_secs(10), "the head");
}

// The same review: a neighbour who renames one of root's own directories
// over the staging directory of a new fencing counter, the instant it is
// made, got root's private directory made 0777, and the counter's first
// number from that directory's old date (the fence fell by 25 years).
// Only an empty directory of this user's is opened to others, and the
// first number is the date of the counter file uuidlock made itself.
#[test]
fn a_directory_swapped_in_for_a_staged_one_is_neither_opened_nor_believed() {
    let root = crate::common::tempdir();
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let secret = dir.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("key"), b"root's key").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(25 * 365 * 86_400);
    std::fs::File::open(&secret).unwrap().set_modified(old).unwrap();
    let lock = dir.join("job.lock");
    let (watched, counter) = (dir.clone(), PathBuf::from(format!("{}.fence", lock.display())));
    let mut at = secret.clone();
    // Told of every new name at once (inotify), as a determined neighbour is.
    let watch = Inotify::new(&watched);
    let neighbour = Neighbour::start(move || {
        for name in watch.created() {
            if name.starts_with("job.lock.") && name.ends_with(".new") {
                let staged = watched.join(&name);
                if staged.is_dir() && std::fs::rename(&at, &staged).is_ok() {
                    at = staged;
                    return true;
                }
            }
        }
        false
    });
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    for _ in 0..30 {
        let _ = std::fs::remove_dir_all(&counter);
        let output = uuidlock(&["acquire", path_str(&lock), "--fence", "--verification-delay", "0", "--timeout", "5"]);
        if output.status.code() == Some(0) {
            assert!(fence_of(&output) > now() - 60_000_000, "the fence fell to {}", fence_of(&output));
            let token = text(&output.stdout).split_whitespace().next().unwrap().to_owned();
            uuidlock(&["release", path_str(&lock), &token]);
        }
    }
    assert!(neighbour.stop() > 0, "the neighbour never swapped a directory in");
    // Wherever root's directory ended up, it is as private as it was.
    let find =
        |dir: &Path| -> Vec<PathBuf> { walk(dir).into_iter().filter(|path| path.join("key").exists()).collect() };
    for found in find(root.path()) {
        let mode = std::fs::metadata(&found).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} was opened to others", found.display());
    }
}

/// Every directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut at = 0;
    while at < found.len() {
        if let Ok(entries) = std::fs::read_dir(&found[at]) {
            found.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())),
            );
        }
        at += 1;
    }
    found
}

// The same review: junk that another user puts at a live holder's claim in
// a sticky directory can never be removed by the holder; `run` reported
// the lease lost and exited 75 although CMD held the lock throughout. Now
// CMD's status, and a warning that the lock could not be released.
#[test]
fn a_claim_another_user_plants_in_a_sticky_directory_costs_run_nothing() {
    let (root, dir) = shared_dir(0o1777);
    if !other_users_available("a_claim_another_user_plants_in_a_sticky_directory_costs_run_nothing", root.path()) {
        return;
    }
    let lock = dir.join("job.lock");
    let [holder, neighbour] = USERS;
    let run = {
        let (home, lock) = (root.path().to_owned(), path_str(&lock).to_owned());
        std::thread::spawn(move || {
            as_user(
                holder,
                &home,
                &["run", &lock, "--stale-after", "2", "--verification-delay", "0", "--", "sleep", "2"],
            )
            .unwrap()
        })
    };
    let start = Instant::now();
    let uuid = loop {
        let marker = std::fs::read(&lock).map(|bytes| text(&bytes)).unwrap_or_default();
        if let Some(token) = marker.split("token=").nth(1).and_then(|rest| rest.split('&').next()) {
            break token.trim()[token.trim().len() - 36..].to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "run never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    };
    let claim = format!("{}.{uuid}.claim", lock.display());
    let planted = Command::new("setpriv")
        .args(["--reuid", &neighbour.to_string(), "--regid", &neighbour.to_string(), "--clear-groups"])
        .args(["sh", "-c", &format!("echo junk > {claim}")])
        .status()
        .unwrap();
    assert!(planted.success());
    let output = run.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("could not be released"), "{}", text(&output.stderr));
}

/// Names created in a directory, as inotify reports them.
struct Inotify {
    fd: i32,
}

impl Inotify {
    fn new(dir: &Path) -> Inotify {
        // SAFETY: plain calls with a valid NUL-terminated path.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE) } >= 0, "inotify_add_watch");
        Inotify { fd }
    }

    /// The names created since the last call (none if none).
    fn created(&self) -> Vec<String> {
        let mut buffer = [0u8; 4096];
        // SAFETY: reading into a buffer of its stated length.
        let read = unsafe { libc::read(self.fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        let mut names = Vec::new();
        let mut at = 0;
        while read > 0 && at + 16 <= read as usize {
            let len = u32::from_ne_bytes(buffer[at + 12..at + 16].try_into().unwrap()) as usize;
            let name = &buffer[at + 16..at + 16 + len];
            names.push(String::from_utf8_lossy(name).trim_end_matches('\0').to_owned());
            at += 16 + len;
        }
        names
    }
}
