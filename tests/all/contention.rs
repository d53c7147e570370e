//! Cross-process contention: several OS processes, each running the guest in
//! wasmtime, on one lock file. `uuidlock contend` does the work and the
//! checking; these tests hold it to its verdicts.

use crate::common::{text, uuidlock, Sandbox};
use uuidlock_cli::contend::Summary;

/// Runs `uuidlock contend --json ARGS`: the exit code and the report.
fn contend(args: &[&str]) -> (Option<i32>, Summary) {
    let mut all = vec!["contend", "--json"];
    all.extend_from_slice(args);
    let output = uuidlock(&all);
    assert!(output.status.code() != Some(4), "contend failed: {}", text(&output.stderr));
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("contend --json printed {:?}: {e}", text(&output.stdout)));
    (output.status.code(), report)
}

// Four processes through the component: every update kept, no overlap.
#[test]
fn processes_through_the_component_never_overlap() {
    let (code, report) = contend(&["--processes", "4", "--iterations", "40", "--hold-ms", "0.5"]);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.counter, 160);
    assert_eq!(report.overlaps, 0);
    assert_eq!(report.violations, 0);
    // The workers' CPU time, as the OS counts it.
    assert!(report.cpu_s > 0.0 && report.cpu_per_acquisition_s > 0.0 && report.cores > 0.0, "{report:?}");
    // The whole run's, start-up and the parent included: never less than
    // the workers' from their start signal on.
    let whole = report.whole_cpu_s.expect("Linux counts a run's CPU");
    assert!(whole >= report.cpu_s, "{report:?}");
    assert!(report.whole_cpu_per_acquisition_s.is_some_and(|each| each >= report.cpu_per_acquisition_s));
    assert!(report.whole_cores.is_some_and(|cores| cores > 0.0), "{report:?}");
}

// Command-module and component contenders exclude each other.
#[test]
fn mixed_command_and_component_contenders_never_overlap() {
    let (code, report) = contend(&["--processes", "4", "--iterations", "25", "--runner", "mixed"]);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.counter, 100);
    assert_eq!(report.violations, 0);
}

// The component in wasmtime-wasi as it comes (`--runner plain`,
// no uuidlock host: its sleeps, its blocking pool), and allowed to block,
// taking turns with the component in this project's host: they exclude
// each other, and fences rise.
#[test]
fn the_component_in_a_plain_wasmtime_host_excludes_too() {
    let runners = "plain,component,plain-blocking";
    let (code, report) = contend(&["--processes", "6", "--iterations", "10", "--runner", runners]);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.counter, 60);
    assert_eq!((report.violations, report.fence_inversions), (0, 0), "{report:?}");
}

// With a verification delay the protocol still excludes, and waits are counted.
#[test]
fn contention_with_a_verification_delay_never_overlaps() {
    let args = ["--processes", "3", "--iterations", "8", "--verification-delay", "0.005"];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.counter, 24);
}

// The control run takes no lock: the checker must see overlaps and lost
// updates and exit 1. Without this the tests above could pass vacuously.
#[test]
fn the_checker_catches_a_lock_that_does_not_exclude() {
    let (code, report) = contend(&["--processes", "4", "--iterations", "10", "--hold-ms", "3", "--runner", "none"]);
    assert_eq!(code, Some(1), "{report:?}");
    assert!(report.overlaps > 0, "{report:?}");
    assert!(report.counter < 40, "{report:?}");
}

// In a given directory, the run leaves the directory, draws the plot and
// logs every turn; piped, it prints no progress.
#[test]
fn contend_in_a_directory_draws_the_plot_and_is_quiet_when_piped() {
    let sandbox = Sandbox::new();
    let plot = sandbox.root.path().join("waits.svg");
    let log = sandbox.root.path().join("turns.csv");
    let output = uuidlock(&[
        "contend",
        "--processes",
        "2",
        "--iterations",
        "5",
        "--dir",
        sandbox.locks().to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("OK: mutual exclusion held"));
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    // The log: a header, then the 10 turns in the order of entry, each
    // after the one before left, with rising fences, 5 for each worker.
    let log = std::fs::read_to_string(&log).unwrap();
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("worker,entered_s,left_s,wait_s,gap_s,fence,slot,reader,evicted"));
    let turns: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert_eq!(turns.len(), 10, "{log}");
    let number = |field: &str| field.parse::<f64>().unwrap();
    let mut left_before = 0.0;
    for (i, turn) in turns.iter().enumerate() {
        let (entered, left) = (number(turn[1]), number(turn[2]));
        assert!(entered >= left_before && left >= entered && number(turn[3]) >= 0.0, "{log}");
        if i == 0 {
            assert_eq!((entered, turn[4]), (0.0, ""), "{log}");
        } else {
            assert!((number(turn[4]) - (entered - left_before)).abs() < 2e-6, "{log}");
            assert!(turn[5].parse::<u64>().unwrap() > turns[i - 1][5].parse::<u64>().unwrap(), "{log}");
        }
        assert_eq!(&turn[6..], ["", "false", "false"], "{log}");
        left_before = left;
    }
    for worker in ["0", "1"] {
        assert_eq!(turns.iter().filter(|turn| turn[0] == worker).count(), 5, "{log}");
    }
    assert_eq!(std::fs::read_to_string(sandbox.lock("counter")).unwrap(), "10");
    assert!(!sandbox.lock("contend.lock").exists());
}

// Workers spread over two paths of one directory (here a symlink; the share
// tests use two mounts), taking turns as the component, the command module,
// filelock.SoftFileLock and uuid-filelock: nobody overlaps anybody. uuid-
// filelock writes without an exclusive create, so uuidlock's workers use its
// verification delay (0.1 s), as the README says to beside it; at 0 it can
// overwrite a fresh marker, and the holder learns at release (an eviction).
#[test]
fn peers_spread_over_two_paths_to_one_directory_never_overlap() {
    let sandbox = Sandbox::new();
    let other = sandbox.root.path().join("also-locks");
    std::os::unix::fs::symlink(sandbox.locks(), &other).unwrap();
    let (a, b) = (sandbox.locks(), other);
    let dirs = ["--dir", a.to_str().unwrap(), "--dir", b.to_str().unwrap()];
    let args = ["--processes", "4", "--iterations", "8", "--runner", "peers", "--verification-delay", "0.1"];
    let (code, report) = contend(&[&dirs[..], &args[..]].concat());
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.directories, report.acquisitions, report.overlaps), (2, 32, 0), "{report:?}");
    assert_eq!(report.counter, 32, "{report:?}");
}

// Two directories that are not one share are refused before any worker
// starts; so is --kill with Python workers, whose killed locks nobody breaks.
#[test]
fn contend_refuses_directories_that_are_not_one_share_and_kills_of_python_peers() {
    let (one, two) = (Sandbox::new(), Sandbox::new());
    let output = uuidlock(&["contend", "--dir", one.locks().to_str().unwrap(), "--dir", two.locks().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("must be mounts of one share"), "{}", text(&output.stderr));
    assert!(!one.lock("contend.lock").exists());
    let output = uuidlock(&["contend", "--runner", "peers", "--stale-after", "1", "--kill", "2"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("--kill is for uuidlock's runners"), "{}", text(&output.stderr));
}

// A directory that is not there is an error naming it.
#[test]
fn contend_refuses_a_missing_directory() {
    let output = uuidlock(&["contend", "--dir", "/nonexistent/uuidlock"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(text(&output.stderr).contains("/nonexistent/uuidlock"));
}

// Holders SIGKILLed at random points of the protocol (while staging, while
// holding, while releasing) leave locks that are broken once stale; the live
// holders never overlap and no update is lost. The lifetime (0.5 s) keeps a
// loaded machine's stalls well inside it, as the lease contract asks. The
// 5 ms hold keeps the run going for all 8 kills (at most 50 ms apart): on
// tmpfs, 1 ms sections once let the work finish after 5.
#[test]
fn killed_holders_are_recovered_from_without_overlap() {
    let args = ["--processes", "4", "--iterations", "25", "--hold-ms", "5", "--stale-after", "0.5", "--kill", "8"];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.kills, 8);
    assert_eq!(report.overlaps, 0);
    assert_eq!(report.violations, 0);
    assert_eq!(report.acquisitions, 100);
}

// The same through a mix of command-module and component workers.
#[test]
fn killed_command_and_component_holders_are_recovered_from() {
    let args = ["--processes", "4", "--iterations", "15", "--stale-after", "0.5", "--kill", "5", "--runner", "mixed"];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.violations, 0);
}

// Without the queue every waiter polls, as in uuidlock 0.1: exclusion holds.
#[test]
fn polling_without_the_queue_keeps_mutual_exclusion() {
    let (code, report) = contend(&["--processes", "4", "--iterations", "25", "--no-queue"]);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!(report.violations, 0);
    assert_eq!(report.counter, 100);
}

// Holders that keep the lock three lifetimes without renewing are evicted:
// contenders break their locks, and each learns it at release. contend
// reports the evictions (and the overlaps they cause) and exits 1. With
// self-renewing leases the same run has no eviction and no violation, and
// fences rise in critical-section order in both.
#[test]
fn evictions_are_reported_and_renewing_leases_prevent_them() {
    let base = ["--processes", "2", "--iterations", "2", "--hold-ms", "1200", "--stale-after", "0.5"];
    let (code, report) = contend(&base);
    assert_eq!(code, Some(1), "{report:?}");
    assert!(report.evictions > 0, "{report:?}");
    assert!(!report.renew);
    let (code, report) = contend(&[&base[..], &["--renew"]].concat());
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.evictions, report.violations, report.fence_inversions), (0, 0, 0), "{report:?}");
    assert!(report.renew);
}

// Fences rise in critical-section order through every runner.
#[test]
fn fences_rise_in_critical_section_order() {
    for runner in ["component", "mixed"] {
        let (code, report) = contend(&["--processes", "3", "--iterations", "10", "--runner", runner]);
        assert_eq!(code, Some(0), "{report:?}");
        assert_eq!(report.fence_inversions, 0, "{runner}: {report:?}");
    }
}

// Readers and writers (`--readers`), on tmpfs, with holders SIGKILLed at
// random points as above: no writer ever held beside anyone, no reader saw
// the counter change, every writer's acquisition came through (readers did
// not starve them), and readers did hold together (more than one at once:
// the shared mode is not exclusive in disguise). The waits are timings,
// reported and not asserted. The 10 ms hold gives readers time to meet.
#[test]
fn readers_and_writers_with_kills_never_overlap_and_readers_share() {
    let sandbox = Sandbox::new();
    let plot = sandbox.root.path().join("waits.svg");
    let args = [
        "--processes",
        "6",
        "--readers",
        "4",
        "--iterations",
        "20",
        "--hold-ms",
        "10",
        "--stale-after",
        "0.5",
        "--kill",
        "6",
        "--plot",
        plot.to_str().unwrap(),
    ];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.mode.as_str(), report.readers, report.kills), ("shared", 4, 6), "{report:?}");
    assert_eq!(
        (report.overlaps, report.reads_changed, report.violations, report.evictions),
        (0, 0, 0, 0),
        "{report:?}"
    );
    assert_eq!((report.reader_acquisitions, report.writer_acquisitions), (80, 40), "{report:?}");
    assert!(report.max_concurrent_readers > 1, "readers never held together: {report:?}");
    assert_eq!(report.max_concurrent, report.max_concurrent_readers, "{report:?}");
    assert!(report.counter >= 40 && report.counter <= 46, "{report:?}");
    eprintln!(
        "writers waited p50 {:.1} ms, at most {:.1} ms; readers held {} at once",
        report.writer_wait_p50_s * 1e3,
        report.writer_wait_max_s * 1e3,
        report.max_concurrent_readers
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("4 readers") && svg.contains("2 writers"), "the plot has a panel per role");
}

// A semaphore of 3 slots (`--slots 3`) held by 5 processes of both runners,
// with kills: never more than 3 holders, never two in one slot, every
// slot's counter whole; and the 3 slots were all held at once.
#[test]
fn a_semaphore_with_kills_admits_at_most_n_in_distinct_slots() {
    let args = [
        "--processes",
        "5",
        "--slots",
        "3",
        "--iterations",
        "20",
        "--hold-ms",
        "10",
        "--stale-after",
        "0.5",
        "--kill",
        "5",
        "--runner",
        "mixed",
    ];
    let (code, report) = contend(&args);
    assert_eq!(code, Some(0), "{report:?}");
    assert_eq!((report.mode.as_str(), report.slots, report.kills), ("slots", Some(3), 5), "{report:?}");
    assert_eq!((report.overlaps, report.slot_collisions, report.bad_slots, report.violations), (0, 0, 0, 0));
    assert_eq!(report.max_concurrent, 3, "{report:?}");
    assert_eq!(report.slot_acquisitions.iter().sum::<usize>(), 100, "{report:?}");
    assert_eq!(report.slot_counters.len(), 3, "{report:?}");
    for (held, counted) in report.slot_acquisitions.iter().zip(&report.slot_counters) {
        assert!(*counted >= *held as u64 && *counted <= *held as u64 + 5, "{report:?}");
    }
}

// The shared modes through the command module and self-renewing leases:
// readers beside writers, and a semaphore of 2.
#[test]
fn readers_and_slots_through_the_command_module_and_leases() {
    let base = ["--processes", "4", "--iterations", "8", "--hold-ms", "3"];
    for extra in [&["--runner", "command", "--readers", "2"][..], &["--renew", "--stale-after", "1", "--slots", "2"]] {
        let (code, report) = contend(&[&base[..], extra].concat());
        assert_eq!(code, Some(0), "{extra:?}: {report:?}");
        assert_eq!((report.acquisitions, report.violations, report.fence_inversions), (32, 0, 0), "{report:?}");
        assert!(report.max_concurrent <= 2, "{extra:?}: {report:?}");
    }
}

// The control runs of the shared modes take no lock: readers beside writers,
// and more holders than slots, two in one slot, must all be caught.
#[test]
fn the_checker_catches_readers_beside_writers_and_an_overfull_semaphore() {
    let base = ["--processes", "6", "--iterations", "10", "--hold-ms", "3", "--runner", "none"];
    let (code, report) = contend(&[&base[..], &["--readers", "4"]].concat());
    assert_eq!(code, Some(1), "{report:?}");
    assert!(report.overlaps > 0 && report.reads_changed > 0 && report.counter < 20, "{report:?}");
    let (code, report) = contend(&[&base[..], &["--slots", "3"]].concat());
    assert_eq!(code, Some(1), "{report:?}");
    assert!(report.overlaps > 0 && report.slot_collisions > 0 && report.max_concurrent > 3, "{report:?}");
}

// Bad modes are refused with one line and exit 2, before any worker starts.
#[test]
fn contend_refuses_bad_modes() {
    for (args, said) in [
        (&["--slots", "0"][..], "from 1 to 1024"),
        (&["--slots", "1025"], "from 1 to 1024"),
        (&["--readers", "1", "--slots", "2"], "cannot be used with"),
        (&["--processes", "2", "--readers", "3"], "--readers 3 is more than --processes 2"),
        (&["--readers", "1", "--runner", "peers"], "Python's locks know only exclusive holders"),
        (&["--slots", "2", "--runner", "soft-file-lock"], "Python's locks know only exclusive holders"),
    ] {
        let output = uuidlock(&[&["contend"][..], args].concat());
        let stderr = text(&output.stderr);
        assert_eq!((output.status.code(), stderr.lines().count()), (Some(2), 1), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
