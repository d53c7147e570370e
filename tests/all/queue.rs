//! The queue of waiters across processes: arrival order, a waiter killed in
//! line, and peers that ignore the queue.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{in_line, text, until_in_line, uuidlock, uuidlock_command, Sandbox};
use uuidlock_cli::contend::Summary;

/// `uuidlock acquire LOCK` waiting (or not) in the queue, its token on stdout.
fn waiter(lock: &Path, extra: &[&str]) -> Child {
    uuidlock_command()
        .args(["acquire", lock.to_str().unwrap(), "--verification-delay", "0", "--retry-interval", "0.005"])
        .args(["--timeout", "60"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning uuidlock acquire")
}

fn acquire_now(lock: &Path) -> String {
    let held = uuidlock(&["acquire", lock.to_str().unwrap(), "--verification-delay", "0", "--timeout", "0"]);
    assert_eq!(held.status.code(), Some(0), "{}", text(&held.stderr));
    text(&held.stdout).trim().to_owned()
}

fn release(lock: &Path, token: &str) {
    let released = uuidlock(&["release", lock.to_str().unwrap(), token]);
    assert_eq!(released.status.code(), Some(0), "{}", text(&released.stderr));
}

// Five waiters that line up one after another take the lock in that order,
// each as the one before releases it. Without the queue (--no-queue) they
// poll, and whoever polls first after a release wins.
#[test]
fn waiters_take_the_lock_in_arrival_order() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let holder = acquire_now(&lock);
    let mut waiters = Vec::new();
    for n in 1..=5 {
        waiters.push(waiter(&lock, &["--prefix", &format!("w{n}-")]));
        until_in_line(&lock, n);
    }
    release(&lock, &holder);
    let mut order = Vec::new();
    for _ in 0..5 {
        // Whoever holds the lock now has exited with its token.
        let start = Instant::now();
        let token = loop {
            let done = waiters.iter_mut().position(|w| w.try_wait().unwrap().is_some());
            if let Some(i) = done {
                let output = waiters.remove(i).wait_with_output().unwrap();
                assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
                break text(&output.stdout).trim().to_owned();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "nobody took the lock");
            std::thread::sleep(Duration::from_millis(2));
        };
        order.push(token.split('-').next().unwrap().to_owned());
        release(&lock, &token);
    }
    assert_eq!(order, ["w1", "w2", "w3", "w4", "w5"]);
    assert_eq!(in_line(&lock), 0, "an entry was left in the queue");
}

// A waiter SIGKILLed in line leaves its entry; the waiter behind it judges
// it dead (unchanged for two seconds) and takes the lock once it is free.
#[test]
fn a_waiter_killed_in_line_does_not_block_the_one_behind() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let holder = acquire_now(&lock);
    let mut killed = waiter(&lock, &[]);
    until_in_line(&lock, 1);
    let behind = waiter(&lock, &[]);
    until_in_line(&lock, 2);
    killed.kill().unwrap();
    killed.wait().unwrap();
    release(&lock, &holder);
    let output = behind.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    release(&lock, text(&output.stdout).trim());
    assert_eq!(in_line(&lock), 0, "the dead waiter's entry was left");
}

/// Runs `uuidlock contend --json ARGS`.
fn contend(args: &[&str]) -> (Option<i32>, Summary) {
    let output = uuidlock(&[&["contend", "--json"], args].concat());
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("contend --json printed {:?} ({e}): {}", text(&output.stdout), text(&output.stderr))
    });
    (output.status.code(), report)
}

// Queued uuidlock workers beside filelock.SoftFileLock, which knows no
// queue and polls the lock file: nobody overlaps, every hold finishes.
#[test]
fn queued_waiters_and_a_peer_that_ignores_the_queue_never_overlap() {
    let (code, report) =
        contend(&["--processes", "6", "--iterations", "10", "--runner", "component,command,soft-file-lock"]);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.acquisitions, report.overlaps, report.violations), (60, 0, 0), "{report:?}");
}

// Workers killed while they wait in line (and while they hold the lock):
// the live ones never overlap, and every hold finishes.
#[test]
fn waiters_killed_in_line_leave_no_overlap() {
    let args = ["--processes", "6", "--iterations", "15", "--hold-ms", "5", "--stale-after", "0.5", "--kill", "8"];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.kills, report.overlaps, report.violations), (8, 0, 0), "{report:?}");
}

// `--no-queue` is honoured: nothing lines up.
#[test]
fn no_queue_never_lines_up() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let holder = acquire_now(&lock);
    let output = Command::new(env!("CARGO_BIN_EXE_uuidlock"))
        .args(["acquire", lock.to_str().unwrap(), "--verification-delay", "0", "--timeout", "0.2", "--no-queue"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(!lock.with_extension("lock.queue").exists());
    release(&lock, &holder);
}
