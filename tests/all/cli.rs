//! The native `uuidlock` binary: the command-line contract (output, messages,
//! exit codes) with the lock running in the component.

use crate::common::{or_skip, shares, skip, text, uuidlock, Sandbox};
use uuidlock::cli::StatusJson;
use uuidlock_cli::bench;

// Every command answers --help on stdout with exit 0.
#[test]
fn every_command_has_help() {
    for (args, expected) in [
        (&["--help"][..], "Exit codes"),
        (&["help"][..], "uuidlock contend"),
        (&["acquire", "--help"][..], "--verification-delay"),
        (&["release", "--help"][..], "TOKEN"),
        (&["status", "-h"][..], "exits 1 when it is free"),
        (&["refresh", "--help"][..], "lifetime"),
        (&["holds", "--help"][..], "held by TOKEN"),
        (&["contend", "--help"][..], "--processes"),
        (&["export", "--help"][..], "uuidlock.component.wasm"),
        (&["bench", "--help"][..], "--anchors"),
        (&["doctor", "--help"][..], "--max-lag"),
        (&["run", "--help"][..], "UUIDLOCK_FENCE"),
    ] {
        let output = uuidlock(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(text(&output.stdout).contains(expected), "{args:?}: {}", text(&output.stdout));
        assert!(output.stderr.is_empty(), "{args:?}");
    }
}

// --version names the version; both binaries share it.
#[test]
fn version_is_printed() {
    let output = uuidlock(&["--version"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout).trim(), format!("uuidlock {}", env!("CARGO_PKG_VERSION")));
}

// A mistyped flag or command is a one-line usage error with a suggestion and
// the help to read, and touches nothing.
#[test]
fn mistyped_flags_get_a_suggestion() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("x.lock");
    let lock = lock.to_str().unwrap();
    for (args, suggested, help) in [
        (&["acquire", lock, "--timout", "1"][..], "'--timeout'", "'uuidlock acquire --help'"),
        (&["contend", "--proceses", "2"][..], "'--processes'", "'uuidlock contend --help'"),
        (&["stauts", lock][..], "'status'", "'uuidlock --help'"),
    ] {
        let output = uuidlock(args);
        let stderr = text(&output.stderr);
        assert_eq!((output.status.code(), stderr.lines().count()), (Some(2), 1), "{args:?}: {stderr}");
        assert!(stderr.contains(suggested) && stderr.contains(help), "{args:?}: {stderr}");
    }
    assert!(!std::path::Path::new(lock).exists());
}

// Completions for the usual shells name every command, the native ones too.
#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = uuidlock(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {}", text(&output.stderr));
        let script = text(&output.stdout);
        for command in ["acquire", "release", "refresh", "holds", "status", "contend", "bench", "export"] {
            assert!(script.contains(command), "{shell} completions miss {command}");
        }
        assert!(script.contains("verification-delay"), "{shell} completions miss acquire's flags");
        assert!(!script.contains("contend-worker"), "{shell} completions show the hidden worker");
    }
    assert_eq!(uuidlock(&["completions", "tcsh"]).status.code(), Some(2));
}

// The bash completion script loads in bash and completes a command.
#[test]
fn bash_completion_script_completes_commands() {
    let script = text(&uuidlock(&["completions", "bash"]).stdout);
    let output = std::process::Command::new("bash")
        .args(["-c", &format!("{script}\nCOMP_WORDS=(uuidlock acq); COMP_CWORD=1; _uuidlock uuidlock acq uuidlock; echo \"${{COMPREPLY[@]}}\"")])
        .output()
        .expect("running bash");
    assert_eq!(text(&output.stdout).trim(), "acquire", "{}", text(&output.stderr));
}

// The whole life of a lock from a shell script's point of view.
#[test]
fn exit_codes_and_output_follow_the_contract() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let lock = lock.to_str().unwrap();

    let acquired = uuidlock(&["acquire", lock, "--verification-delay", "0", "--prefix", "sh-"]);
    assert_eq!(acquired.status.code(), Some(0), "{}", text(&acquired.stderr));
    let stdout = text(&acquired.stdout);
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(token.starts_with("sh-") && !token.contains('\n'));
    assert!(acquired.stderr.is_empty());

    let status = uuidlock(&["status", lock]);
    assert_eq!((status.status.code(), text(&status.stdout)), (Some(0), format!("{token}\n")));
    let described = text(&status.stderr);
    assert!(described.contains("prefix \"sh-\"") && described.contains("s ago"), "{described}");

    let busy = uuidlock(&["acquire", lock, "--timeout", "0"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(busy.stdout.is_empty());
    assert!(text(&busy.stderr).contains(lock) && text(&busy.stderr).contains(token));

    let wrong = uuidlock(&["release", lock, "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(wrong.status.code(), Some(3));
    assert!(std::path::Path::new(lock).exists());

    assert_eq!(uuidlock(&["release", lock, "not-a-token"]).status.code(), Some(2));
    assert_eq!(uuidlock(&["release", lock, token]).status.code(), Some(0));
    assert_eq!(uuidlock(&["release", lock, token]).status.code(), Some(3));
    let free = uuidlock(&["status", lock]);
    assert_eq!(free.status.code(), Some(1));
    assert!(text(&free.stderr).contains("is free"));
}

// Usage errors exit 2 with a one-line message that points at --help.
#[test]
fn usage_errors_exit_2_with_one_line() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("x.lock");
    let lock = lock.to_str().unwrap();
    for args in [
        &[][..],
        &["lock", lock][..],
        &["acquire"][..],
        &["acquire", lock, "--timeout", "-1"][..],
        &["acquire", lock, "--retry-interval", "inf"][..],
        &["acquire", lock, "--verification-delay", "NaN"][..],
        &["acquire", lock, "--verification-delay", "7200"][..],
        &["acquire", lock, "--prefix", "a b"][..],
        &["acquire", lock, "--wait", "1"][..],
        &["release", lock][..],
        &["acquire", ""][..],
        &["contend", "--processes", "0"][..],
        &["contend", "--verification-delay", "7200"][..],
        &["contend", "--kill", "3"][..],
        &["acquire", lock, "--stale-after", "0"][..],
        &["acquire", lock, "--stale-after", "100000"][..],
        &["refresh", lock, "bad-token"][..],
        &["holds", lock][..],
        &["acquire", lock, "--prefix", "--job"][..],
        &["status", "/"][..],
    ] {
        let output = uuidlock(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    assert!(!std::path::Path::new(lock).exists());
}

// A missing directory or a link out of the granted directory exits 4 (or 2
// for a symlink at the lock path itself) and touches nothing outside.
#[test]
fn paths_that_cannot_be_locked_are_refused() {
    let sandbox = Sandbox::new();
    std::os::unix::fs::symlink(sandbox.outside().join("t.lock"), sandbox.lock("link.lock")).unwrap();
    let missing = uuidlock(&["acquire", sandbox.lock("no/such/x.lock").to_str().unwrap(), "--timeout", "0"]);
    assert_eq!(missing.status.code(), Some(4));
    assert!(text(&missing.stderr).contains("create it first"), "{}", text(&missing.stderr));
    let link = uuidlock(&["acquire", sandbox.lock("link.lock").to_str().unwrap(), "--timeout", "0"]);
    assert_eq!(link.status.code(), Some(2), "{}", text(&link.stderr));
    assert!(text(&link.stderr).contains("symbolic link"));
    let dir = uuidlock(&["acquire", sandbox.locks().to_str().unwrap(), "--timeout", "0"]);
    assert_eq!(dir.status.code(), Some(2));
    assert!(sandbox.outside_entries().is_empty());
}

// export writes the two artifacts; the command module runs, the component loads.
#[test]
fn export_writes_the_command_module_and_the_component() {
    let sandbox = Sandbox::new();
    let output = uuidlock(&["export", sandbox.outside().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(sandbox.outside_entries(), ["uuidlock.component.wasm", "uuidlock.wasm"]);
    let component = std::fs::read(sandbox.outside().join("uuidlock.component.wasm")).unwrap();
    let module = std::fs::read(sandbox.outside().join("uuidlock.wasm")).unwrap();
    // The wasm magic, then version 1 for a core module and the component-model layer for a component.
    assert_eq!(&module[..8], b"\0asm\x01\0\0\0");
    assert_eq!(&component[..8], b"\0asm\x0d\0\x01\0");
    assert_eq!(uuidlock(&["export", "/nonexistent/dir"]).status.code(), Some(4));
}

// A lock with a lifetime: refresh keeps it, holds answers, status --json
// reports it, and a released lock can no longer be refreshed.
#[test]
fn refresh_holds_and_status_json_follow_the_contract() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let lock = lock.to_str().unwrap();
    let acquired =
        uuidlock(&["acquire", lock, "--verification-delay", "0", "--stale-after", "30", "--prefix", "ci-", "--fence"]);
    assert_eq!(acquired.status.code(), Some(0), "{}", text(&acquired.stderr));
    // --fence: `TOKEN FENCE` on one line; the first acquisition of a path
    // gets the filesystem's clock in microseconds, plus one.
    let line = text(&acquired.stdout);
    let (token, fence) = line.trim().split_once(' ').expect("TOKEN FENCE");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    let first: u64 = fence.parse().unwrap();
    assert!(first <= now && first > now - 60_000_000, "{first} is not the clock in microseconds ({now})");
    let token = token.to_owned();
    let stranger = "00000000-0000-4000-8000-000000000000";

    assert_eq!(uuidlock(&["refresh", lock, &token]).status.code(), Some(0));
    assert_eq!(uuidlock(&["holds", lock, &token]).status.code(), Some(0));
    assert_eq!(uuidlock(&["holds", lock, stranger]).status.code(), Some(3));
    assert_eq!(uuidlock(&["refresh", lock, stranger]).status.code(), Some(3));

    let status = uuidlock(&["status", lock, "--json"]);
    assert_eq!(status.status.code(), Some(0));
    let json: StatusJson = serde_json::from_slice(&status.stdout).expect("status --json is one JSON object");
    let StatusJson::Held { token: held, prefix, age_s, stale_after_s, renewed_s, fence, .. } = json else {
        panic!("{json:?}")
    };
    assert_eq!((held, prefix.as_str(), stale_after_s, fence), (token.clone(), "ci-", Some(30.0), Some(first)));
    assert!((0.0..30.0).contains(&age_s), "{age_s}");
    assert!(renewed_s.is_some_and(|ago| (0.0..30.0).contains(&ago)), "{renewed_s:?}");

    assert_eq!(uuidlock(&["release", lock, &token]).status.code(), Some(0));
    let refresh = uuidlock(&["refresh", lock, &token]);
    assert_eq!(refresh.status.code(), Some(3));
    assert!(text(&refresh.stderr).contains("broken as stale or released"));
    let free = uuidlock(&["status", lock, "--json"]);
    assert_eq!(free.status.code(), Some(1));
    assert_eq!(serde_json::from_slice::<StatusJson>(&free.stdout).unwrap(), StatusJson::Free);
}

// The bench in its smoke mode: every subject measured, no violation under
// contention. (Figures are printed, never asserted: machines are noisy.)
#[test]
fn bench_quick_measures_every_subject() {
    let sandbox = Sandbox::new();
    let plot = sandbox.root.path().join("waits.svg");
    let output = uuidlock(&[
        "bench",
        "--quick",
        "--json",
        "--dir",
        sandbox.locks().to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // A panel for each contention run that has waiters.
    let svg = std::fs::read_to_string(&plot).unwrap();
    // Text elements' contents, whatever the line breaks around them.
    let svg = svg.replace(">\n", ">").replace("\n</text>", "</text>");
    for name in ["component", "component, no queue", "component, no hold"] {
        assert!(svg.contains(&format!(">{name}</text>")), "{name} not drawn");
    }
    let results: bench::Summary = serde_json::from_slice(&output.stdout).expect("bench --json is one JSON object");
    let timed: Vec<&str> = results.uncontended.iter().chain(&results.cold_start).map(|l| l.name.as_str()).collect();
    for name in [
        "floor",
        "native",
        "component",
        "component, plain wasmtime",
        "plain wasmtime, allow_blocking",
        "command",
        "native binary",
    ] {
        assert!(timed.contains(&name), "{name} missing from {results:?}");
    }
    // The ceiling, and the component's four runs (the last with 8 times the
    // processes), each without a violation, and the CPU its workers used.
    assert_eq!(results.contention.len(), 5, "{results:?}");
    assert!(results.contention.iter().all(|run| run.violations == 0 && run.per_second > 0.0), "{results:?}");
    assert_eq!((results.contention[4].name.as_str(), results.contention[4].processes), ("component, 24 processes", 24));
    assert!(results.contention.iter().all(|run| run.cpu_per_acquisition_s > 0.0 && run.cores > 0.0), "{results:?}");
    assert!(results.contention.iter().all(|run| run.whole_cores.is_some_and(|cores| cores > 0.0)), "{results:?}");
    assert!(output.stderr.is_empty(), "progress printed to a pipe: {}", text(&output.stderr));
}

// The call table: every operation counted, the same on every run (the
// simulator is deterministic), and the hand-off's waiter did wait in line.
#[test]
fn bench_calls_counts_every_operation_the_same_each_time() {
    let output = uuidlock(&["bench", "--calls", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let rows: Vec<bench::CallsSummary> = serde_json::from_slice(&output.stdout).expect("one JSON array");
    let names: Vec<&str> = rows.iter().map(|row| row.operation.as_str()).collect();
    for name in ["acquire", "release", "refresh (renewal)", "acquire --shared", "acquire --slots 4"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for row in &rows {
        let by_kind: u32 = row.share_by_kind.values().sum();
        assert_eq!(by_kind, row.share, "{row:?}");
        assert!(row.share > 0 && row.in_process > 0, "{row:?}");
    }
    // Every acquire sleeps the verification delay; releases never sleep.
    assert!(rows.iter().filter(|row| row.operation.starts_with("acquire")).all(|row| row.sleeps >= 1), "{rows:?}");
    assert!(rows.iter().filter(|row| row.operation.starts_with("release")).all(|row| row.sleeps == 0), "{rows:?}");
    let waiter = rows.iter().find(|row| row.operation.starts_with("hand-off")).expect("the hand-off row");
    assert!(waiter.took_s > 0.3 && waiter.sleeps > 3, "the waiter did not wait in line: {waiter:?}");
    // The one behind it waited for both turns, and looked more than once.
    let behind = rows.iter().find(|row| row.operation.starts_with("second in line")).expect("the second in line");
    assert!(behind.took_s > waiter.took_s + 0.9 && behind.sleeps > waiter.sleeps, "{behind:?} after {waiter:?}");
    let again = uuidlock(&["bench", "--calls", "--json"]);
    assert_eq!(text(&again.stdout), text(&output.stdout), "the counts differ between two runs");
    // Counting another build needs a module; anything else is refused.
    let refused = uuidlock(&["bench", "--calls", "--guest", "/dev/null"]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("/dev/null is not a wasm module"), "{}", text(&refused.stderr));
}

// The host's syscalls per operation, counted by strace (installed here
// if missing): every subject counted, the floor's few file calls found as
// such, and the component making more than the floor.
#[test]
fn bench_syscalls_counts_what_the_host_does_per_operation() {
    let test = "bench_syscalls_counts_what_the_host_does_per_operation";
    if or_skip(test, shares::ensure_installed(&["strace"], &["strace"])).is_none() {
        return;
    }
    // A container may forbid tracing (ptrace) to root too.
    let traced = std::process::Command::new("strace").args(["-f", "-c", "-o", "/dev/null", "true"]).output();
    if !traced.as_ref().is_ok_and(|out| out.status.success()) {
        return skip(test, &format!("strace cannot trace here: {traced:?}"));
    }
    let sandbox = Sandbox::new();
    let output = uuidlock(&["bench", "--syscalls", "--json", "--dir", sandbox.locks().to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let rows: Vec<uuidlock_cli::syscalls::Row> = serde_json::from_slice(&output.stdout).expect("one JSON array");
    let names: Vec<&str> = rows.iter().map(|row| row.operation.as_str()).collect();
    let pairs = ["component", "component, plain wasmtime", "plain wasmtime, allow_blocking"];
    assert_eq!(names, ["floor", "native", pairs[0], pairs[1], pairs[2], "component renewal", "command"]);
    let row = |name: &str| rows.iter().find(|row| row.operation == name).unwrap();
    let calls = |name: &str, kind: &str| row(name).by_kind.get(kind).copied().unwrap_or(0.0);
    // The floor: one create, two reads back, one unlink, and little else
    // (16 in a release build; a debug build checks each descriptor before
    // it closes it, 19).
    let floor = row("floor");
    assert!((8.0..=25.0).contains(&floor.total), "{floor:?}");
    assert!((calls("floor", "unlink") - 1.0).abs() < 0.05, "{floor:?}");
    assert!((calls("floor", "openat") - 3.0).abs() < 0.05, "{floor:?}");
    for row in &rows {
        let by_kind: f64 = row.by_kind.values().sum();
        assert!((by_kind - row.total).abs() < 1e-9 && row.by_kind.values().all(|&n| n >= 0.05), "{row:?}");
    }
    // A pair removes the lock file and its claim's staging name at least;
    // a renewal removes nothing.
    for pair in pairs {
        assert!(row(pair).total > floor.total && calls(pair, "unlinkat") >= 1.0, "{rows:?}");
    }
    // wasmtime-wasi as it comes hands every file call to another thread
    // and waits for it; allowed to block, it makes them in line.
    assert!(calls(pairs[1], "futex") > 10.0 * (1.0 + calls(pairs[2], "futex")), "{rows:?}");
    assert!(calls("component renewal", "unlinkat") < 0.05, "{rows:?}");
    // Nothing of the bench's is left in the directory it was given.
    assert_eq!(std::fs::read_dir(sandbox.locks()).unwrap().count(), 0);
}

// With --anchors the Python libraries run too, their contention workers
// under the same checks as ours. The bench installs them itself.
#[test]
fn bench_quick_with_anchors_runs_the_python_libraries_under_the_same_checks() {
    let test = "bench_quick_with_anchors_runs_the_python_libraries_under_the_same_checks";
    let sandbox = Sandbox::new();
    let output = uuidlock(&["bench", "--quick", "--anchors", "--json", "--dir", sandbox.locks().to_str().unwrap()]);
    let stderr = text(&output.stderr);
    if output.status.code() == Some(4) && (stderr.contains("venv") || stderr.contains("pip")) {
        return skip(test, &format!("the bench could not install the Python libraries: {}", stderr.trim()));
    }
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let results: bench::Summary = serde_json::from_slice(&output.stdout).expect("bench --json is one JSON object");
    let row = |name: &str| {
        results.contention.iter().find(|run| run.name == name).unwrap_or_else(|| panic!("{name}: {results:?}"))
    };
    for name in ["uuid-filelock (delay 0)", "uuid-filelock (delay 0.1 s)", "filelock.SoftFileLock", "flufl.lock"] {
        assert!(results.uncontended.iter().any(|l| l.name == name && l.samples > 0), "{name} not timed");
    }
    // Correct locks, so their runs must check out; uuid-filelock's create is
    // not atomic, so it may let two in (that is what the checks are for).
    for name in ["filelock.SoftFileLock", "flufl.lock"] {
        assert_eq!(row(name).violations, 0, "{:?}", row(name));
    }
    // Every anchor ran its 3 processes (--quick) and measured a throughput.
    for name in ["uuid-filelock (delay 0)", "filelock.SoftFileLock", "flufl.lock"] {
        assert_eq!(row(name).processes, 3, "{:?}", row(name));
        assert!(row(name).per_second > 0.0, "{:?}", row(name));
    }
}

// Shared and N-slot locks on the command line: `--slots` prints the slot
// after the token (and after the fence), `status` lists every holder (and
// `--json` under "shared"), `run` passes the slot in, and `--shared` with
// `--slots` is one usage line.
#[test]
fn shared_and_slot_holders_on_the_command_line() {
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("runners.lock");
    let lock = lock.to_str().unwrap();
    let take = |extra: &[&str]| {
        let mut args = vec!["acquire", lock, "--verification-delay", "0", "--timeout", "0"];
        args.extend_from_slice(extra);
        uuidlock(&args)
    };
    let first = take(&["--slots", "2", "--fence"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let line = text(&first.stdout);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "TOKEN FENCE SLOT: {line:?}");
    assert_eq!(fields[2], "0");
    let second = take(&["--slots", "2"]);
    let line2 = text(&second.stdout);
    let (token2, slot2) = line2.trim().split_once(' ').expect("TOKEN SLOT");
    assert_eq!(slot2, "1");
    let full = take(&["--slots", "2"]);
    assert_eq!(full.status.code(), Some(1));
    assert!(text(&full.stderr).contains("held by 2 shared holders"), "{}", text(&full.stderr));

    let status = uuidlock(&["status", lock]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    assert_eq!(text(&status.stdout), format!("{}\n{token2}\n", fields[0]));
    assert!(text(&status.stderr).contains("(shared, slot 1) is held by"), "{}", text(&status.stderr));
    let json = uuidlock(&["status", lock, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["state"], "shared");
    assert_eq!(report["shared"][1]["slot"], 1);
    assert_eq!(report["shared"][1]["token"], token2);

    // `run` passes the slot in, and releases it afterwards.
    assert_eq!(uuidlock(&["release", lock, token2]).status.code(), Some(0));
    let run =
        uuidlock(&["run", lock, "--verification-delay", "0", "--slots", "2", "--", "sh", "-c", "echo $UUIDLOCK_SLOT"]);
    assert_eq!((run.status.code(), text(&run.stdout)), (Some(0), "1\n".to_owned()), "{}", text(&run.stderr));
    assert_eq!(uuidlock(&["release", lock, fields[0]]).status.code(), Some(0));
    let free = uuidlock(&["status", lock]);
    assert_eq!(free.status.code(), Some(1), "{}", text(&free.stderr));

    let both = uuidlock(&["acquire", lock, "--shared", "--slots", "2"]);
    assert_eq!(both.status.code(), Some(2));
    let said = text(&both.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("--shared") && said.contains("--slots"), "{said}");
}
