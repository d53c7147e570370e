//! The guest running in wasmtime, through the host API (the component) and
//! through the command module, with a temporary directory granted.

use std::fs;
use std::time::Duration;

use crate::common::{runtime, until_in_line, Sandbox};
use uuidlock_host::{Grant, Held, LockError, Locker, Marker, Options};

fn fast() -> Options {
    Options { verification_delay: Duration::ZERO, retry_interval: Duration::from_millis(1), ..Options::default() }
}

fn once() -> Options {
    Options { timeout: Some(Duration::ZERO), ..fast() }
}

// Acquire writes the documented marker, status reports its token, and
// release deletes the file.
#[test]
fn acquire_status_release_round_trip() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let path = sandbox.lock("job.lock");
    let guard = locker.acquire(&path, &Options { prefix: "job-".into(), ..fast() }).unwrap();
    let token = guard.token().clone();
    assert!(token.as_str().starts_with("job-"));
    assert_eq!(fs::read_to_string(&path).unwrap(), format!("1\nuuidlock/1?token={token}\n"));
    let status = locker.status(&path).unwrap().unwrap();
    assert_eq!(status.marker, Marker::Uuidlock(Held::new(token, None)));
    assert!(status.age < Duration::from_secs(60));
    guard.release().unwrap();
    assert!(!path.exists());
    assert_eq!(locker.status(&path).unwrap(), None);
}

// The guard releases the lock when dropped.
#[test]
fn dropping_the_guard_releases() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let path = sandbox.lock("job.lock");
    drop(locker.acquire(&path, &fast()).unwrap());
    assert!(!path.exists());
}

// A second acquire, from another instance, waits and times out.
#[test]
fn a_held_lock_is_not_acquired_twice() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let _held = sandbox.locker().acquire(&path, &fast()).unwrap();
    let other = sandbox.locker();
    assert_eq!(other.acquire(&path, &once()).err(), Some(LockError::Timeout));
    let patient = Options { timeout: Some(Duration::from_millis(30)), ..fast() };
    assert_eq!(other.acquire(&path, &patient).err(), Some(LockError::Timeout));
}

// Release with someone else's token deletes nothing; a second release of our
// own token reports not-owner.
#[test]
fn release_by_a_wrong_token_or_twice_deletes_nothing() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let path = sandbox.lock("job.lock");
    let token = locker.acquire(&path, &fast()).unwrap().into_token();
    let before = fs::read(&path).unwrap();
    let stranger = "00000000-0000-4000-8000-000000000000";
    assert_eq!(locker.release(&path, stranger), Err(LockError::NotOwner));
    assert_eq!(fs::read(&path).unwrap(), before);
    locker.release(&path, token.as_str()).unwrap();
    assert_eq!(locker.release(&path, token.as_str()), Err(LockError::NotOwner));
}

// Paths that lead out of the granted directory are refused with
// outside-sandbox (or invalid-path for a symlink at the lock path) and
// nothing outside is created, read or deleted.
#[test]
fn the_sandbox_refuses_paths_outside_the_granted_directory() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("escape")).unwrap();
    std::os::unix::fs::symlink(sandbox.outside().join("target.lock"), sandbox.lock("link.lock")).unwrap();
    fs::write(sandbox.outside().join("theirs.lock"), "keep me").unwrap();

    let escapes = [
        sandbox.locks().join("../outside/x.lock"),
        sandbox.outside().join("x.lock"),
        sandbox.lock("escape/x.lock"),
        sandbox.locks().join("../outside/theirs.lock"),
        "/etc/uuidlock-test.lock".into(),
    ];
    for path in &escapes {
        assert!(
            matches!(locker.acquire(path, &once()), Err(LockError::OutsideSandbox(_))),
            "acquire {}",
            path.display()
        );
        assert!(matches!(locker.status(path), Err(LockError::OutsideSandbox(_))), "status {}", path.display());
    }
    let theirs = sandbox.locks().join("../outside/theirs.lock");
    let token = "00000000-0000-4000-8000-000000000000";
    assert!(matches!(locker.release(&theirs, token), Err(LockError::OutsideSandbox(_))));

    let link = sandbox.lock("link.lock");
    assert!(matches!(locker.acquire(&link, &once()), Err(LockError::InvalidPath(_))));
    assert!(matches!(locker.status(&link), Err(LockError::InvalidPath(_))));

    assert_eq!(sandbox.outside_entries(), ["theirs.lock"]);
    assert_eq!(fs::read_to_string(sandbox.outside().join("theirs.lock")).unwrap(), "keep me");
}

// Each kind of bad input gets its documented error variant, never a trap.
#[test]
fn bad_input_gets_the_documented_error() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let path = sandbox.lock("job.lock");
    let invalid_path = |result: Result<_, LockError>| matches!(result, Err(LockError::InvalidPath(_)));
    assert!(invalid_path(locker.acquire("", &once()).map(|_| ())));
    assert!(invalid_path(locker.acquire(sandbox.locks(), &once()).map(|_| ())));
    assert!(invalid_path(locker.status(sandbox.locks()).map(|_| ())));
    assert!(matches!(locker.acquire(sandbox.lock("no/dir/x.lock"), &once()), Err(LockError::Io(_))));

    for options in [
        Options { prefix: "two words".into(), ..once() },
        Options { prefix: "new\nline".into(), ..once() },
        Options { prefix: "p".repeat(65), ..once() },
        Options { verification_delay: Duration::from_secs(3601), ..once() },
        Options { retry_interval: Duration::from_secs(u64::MAX / 2_000_000_000), ..once() },
    ] {
        assert!(matches!(locker.acquire(&path, &options), Err(LockError::InvalidOptions(_))), "{options:?}");
    }
    for token in ["", "garbage", "\0\0\0"] {
        assert!(matches!(locker.release(&path, token), Err(LockError::InvalidToken(_))), "{token:?}");
    }
    // The instance is still healthy after all of that.
    assert!(locker.acquire(&path, &fast()).is_ok());
}

// A garbage, empty or huge lock file is another program's: waited on, shown,
// never deleted (an empty one only by an acquire with a lifetime it outlived:
// point 12 of src/protocol.rs, tested there).
#[test]
fn foreign_lock_files_are_waited_on_and_kept() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    for (name, content) in [
        ("garbage.lock", b"not a uuidlock marker".to_vec()),
        ("empty.lock", Vec::new()),
        ("binary.lock", vec![0, 159, 146, 150, 255]),
        ("huge.lock", vec![b'z'; 4 << 20]),
    ] {
        let path = sandbox.lock(name);
        fs::write(&path, &content).unwrap();
        assert_eq!(locker.acquire(&path, &once()).err(), Some(LockError::Timeout), "{name}");
        assert!(matches!(locker.status(&path).map(|s| s.map(|s| s.marker)), Ok(Some(Marker::Foreign(_)))), "{name}");
        assert_eq!(locker.release(&path, "00000000-0000-4000-8000-000000000000"), Err(LockError::NotOwner));
        assert_eq!(fs::read(&path).unwrap(), content, "{name} was changed");
    }
}

// The command module follows the command-line contract: output and exit codes.
#[test]
fn the_command_module_follows_the_cli_contract() {
    let sandbox = Sandbox::new();
    let grants = [Grant::new(sandbox.locks(), "/locks")];
    let run = |args: &[&str]| runtime().run_command(args, &grants).unwrap();

    let acquired = run(&["acquire", "/locks/job.lock", "--verification-delay", "0", "--prefix", "ci-"]);
    assert_eq!(acquired.code, 0, "{}", acquired.stderr);
    let token = acquired.stdout.trim_end_matches('\n');
    assert!(token.starts_with("ci-") && !token.contains('\n'), "{:?}", acquired.stdout);

    let status = run(&["status", "/locks/job.lock"]);
    assert_eq!((status.code, status.stdout.trim()), (0, token));

    let again = run(&["acquire", "/locks/job.lock", "--timeout", "0"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("/locks/job.lock") && again.stderr.contains(token), "{}", again.stderr);

    let wrong = run(&["release", "/locks/job.lock", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(wrong.code, 3);
    assert!(wrong.stderr.contains("nothing was deleted"), "{}", wrong.stderr);

    assert_eq!(run(&["release", "/locks/job.lock", token]).code, 0);
    assert_eq!(run(&["status", "/locks/job.lock"]).code, 1);
    assert_eq!(run(&["acquire", "/locks/x.lock", "--timeout", "NaN"]).code, 2);
    assert_eq!(run(&["acquire", "/locks/../x.lock", "--timeout", "0"]).code, 4);
    assert_eq!(run(&["acquire", "/elsewhere/x.lock", "--timeout", "0"]).code, 4);
    let help = run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes"));
}

// A lock taken through the component is seen and released by the command
// module: both speak the same format.
#[test]
fn component_and_command_module_share_locks() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let token = sandbox.locker().acquire(&path, &fast()).unwrap().into_token();
    let guest_path = path.to_str().unwrap();
    let grants = [Grant::new(sandbox.locks(), sandbox.locks().to_str().unwrap())];
    let status = runtime().run_command(&["status", guest_path], &grants).unwrap();
    assert_eq!(status.stdout.trim(), token.as_str());
    assert_eq!(runtime().run_command(&["release", guest_path, token.as_str()], &grants).unwrap().code, 0);
    assert!(!path.exists());
}

// A locker granted several directories locks in each.
#[test]
fn a_locker_can_be_granted_several_directories() {
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let locker = Locker::new(runtime(), &[a.locks(), b.locks()]).unwrap();
    let _one = locker.acquire(a.lock("x.lock"), &fast()).unwrap();
    let _two = locker.acquire(b.lock("x.lock"), &fast()).unwrap();
    assert!(a.lock("x.lock").exists() && b.lock("x.lock").exists());
}

// While one thread of a locker waits (no timeout) for a lock another party
// holds, the same locker's guard on another lock can still be released.
#[test]
fn a_waiting_acquire_does_not_block_the_lockers_other_calls() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let (mine, theirs) = (sandbox.lock("mine.lock"), sandbox.lock("theirs.lock"));
    let guard = locker.acquire(&mine, &fast()).unwrap();
    let other_party = sandbox.locker().acquire(&theirs, &fast()).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = {
        let (locker, theirs) = (locker.clone(), theirs.clone());
        std::thread::spawn(move || {
            let result = locker.acquire(&theirs, &fast()).map(|guard| guard.into_token());
            let _ = done.send(());
            result
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let (tx, released) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(guard.release()));
    released.recv_timeout(Duration::from_secs(30)).expect("the release waited for the waiter: a deadlock").unwrap();
    assert!(!mine.exists());
    other_party.release().unwrap();
    finished.recv_timeout(Duration::from_secs(30)).expect("the waiter never got the lock");
    assert!(waiter.join().unwrap().is_ok());
}

// A second acquire of a lock this locker still holds fails at once instead
// of waiting for itself; once released (or lost), it can be taken again.
#[test]
fn a_locker_does_not_wait_for_itself() {
    let sandbox = Sandbox::new();
    let locker = sandbox.locker();
    let path = sandbox.lock("job.lock");
    let guard = locker.acquire(&path, &fast()).unwrap();
    let clone = locker.clone();
    assert!(matches!(clone.acquire(&path, &Options::default()), Err(LockError::AlreadyHeld(_))));
    // Another locker is another party: it waits, and here times out.
    assert_eq!(sandbox.locker().acquire(&path, &once()).err(), Some(LockError::Timeout));
    guard.release().unwrap();
    let again = locker.acquire(&path, &fast()).unwrap();
    // Lost behind its back (deleted by hand): no longer "already held".
    std::fs::remove_file(&path).unwrap();
    assert!(locker.acquire(&path, &fast()).is_ok());
    drop(again);
}

// Through the component: a lifetime lock is renewed by its guard, reported
// with its lifetime, last renewal and fence, and broken once its holder
// stops; the contender's fence is larger.
#[test]
fn lifetimes_refresh_and_breaking_through_the_component() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let lifetime = Duration::from_millis(600);
    let holder = sandbox.locker();
    let guard = holder.acquire(&path, &Options { stale_after: Some(lifetime), ..fast() }).unwrap();
    guard.refresh().unwrap();
    let status = holder.status(&path).unwrap().unwrap();
    let Marker::Uuidlock(held) = status.marker else { panic!() };
    assert_eq!((held.stale_after, status.fence), (Some(lifetime), Some(guard.fence())));
    assert!(status.renewed.is_some_and(|ago| ago < Duration::from_secs(10)), "{:?}", status.renewed);
    assert!(holder.holds(&path, guard.token().as_str()).unwrap());
    let first_fence = guard.fence();

    // The holder stops refreshing; a contender breaks the lock.
    let token = guard.into_token();
    let contender = sandbox.locker();
    let next = contender.acquire(&path, &Options { timeout: Some(Duration::from_secs(10)), ..fast() }).unwrap();
    assert_eq!(holder.refresh(&path, token.as_str()), Err(LockError::NotOwner));
    assert_eq!(holder.release(&path, token.as_str()), Err(LockError::NotOwner));
    assert!(contender.holds(&path, next.token().as_str()).unwrap());
    assert!(next.fence() > first_fence, "{} after {first_fence}", next.fence());
}

// Through the component, as a plugin host embeds it: B and C wait in line
// behind A. B, having waited, releases and asks again at once; it queues
// behind C instead of taking the lock back, so C is next.
#[test]
fn a_releaser_that_waited_lets_the_next_waiter_in_first() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let waiting =
        Options { retry_interval: Duration::from_millis(2), timeout: Some(Duration::from_secs(30)), ..fast() };
    let a = sandbox.locker().acquire(&path, &fast()).unwrap();
    let (order, taken) = std::sync::mpsc::channel();
    let b = {
        let (locker, path, options, order) = (sandbox.locker(), path.clone(), waiting.clone(), order.clone());
        std::thread::spawn(move || {
            let guard = locker.acquire(&path, &options).unwrap();
            order.send("b").unwrap();
            guard.release().unwrap();
            let again = locker.acquire(&path, &options).unwrap();
            order.send("b again").unwrap();
            again.release().unwrap();
        })
    };
    until_in_line(&path, 1);
    let c = {
        let (locker, path, options) = (sandbox.locker(), path.clone(), waiting.clone());
        std::thread::spawn(move || {
            let guard = locker.acquire(&path, &options).unwrap();
            order.send("c").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            guard.release().unwrap();
        })
    };
    until_in_line(&path, 2);
    a.release().unwrap();
    b.join().unwrap();
    c.join().unwrap();
    assert_eq!(taken.iter().collect::<Vec<_>>(), ["b", "c", "b again"]);
}
