//! Network shares on loopback: an OpenSSH sftp directory through two sshfs
//! clients (one caching), a Samba share through two smbnetfs clients, and
//! the sftp directory through two `rclone mount`s, which must come out
//! unsafe. Each test starts its share and stops it ([`common::shares`]); on
//! a machine without FUSE it says SKIPPED.
//!
//! On each share `uuidlock doctor` judges the two mounts, and `contend`
//! spreads the component, the command module, filelock.SoftFileLock and
//! uuid-filelock over them, with the verification delay the doctor asked
//! for: no two holds may overlap, and every hold must finish.

mod common;

use std::path::Path;

use common::shares::{Share, ShareKind};
use common::{skip, text, tempdir, uuidlock, uuidlock_command};
use uuidlock_host::contend::Summary;
use uuidlock_host::doctor::{Report, VerdictKind};

/// Runs `uuidlock doctor --json ARGS`: the exit code and the report.
fn doctor(args: &[&str]) -> (Option<i32>, Report) {
    let output = uuidlock(&[&["doctor", "--json"], args].concat());
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("doctor --json printed {:?} ({e}); stderr: {}", text(&output.stdout), text(&output.stderr))
    });
    (output.status.code(), report)
}

/// Runs `uuidlock contend --json` over both mounts of `share`.
fn contend_across(share: &Share, args: &[&str]) -> (Option<i32>, Summary) {
    let [a, b] = share.mounts();
    let mut command = uuidlock_command();
    command.args(["contend", "--json", "--dir"]).arg(&a).arg("--dir").arg(&b).args(args);
    let output = command.output().expect("running uuidlock contend");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("contend --json printed {:?} ({e}); stderr: {}", text(&output.stdout), text(&output.stderr))
    });
    (output.status.code(), report)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Starts `kind`, or says SKIPPED (a failure under UUIDLOCK_REQUIRE_EXTERNAL=1).
fn start(test: &str, kind: ShareKind) -> Option<Share> {
    match Share::start(kind) {
        Ok(share) => Some(share),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

/// The doctor's verdict on the two mounts, then `runner`'s workers
/// contending across them at the delay the doctor asked for.
fn doctor_then_contend(share: &Share, runner: &str) -> Report {
    let [a, b] = share.mounts();
    let (code, report) = doctor(&[path(&a), path(&b), "--rounds", "10"]);
    assert_ne!(report.verdict.kind, VerdictKind::Unsafe, "{}: {report:#?}", share.name());
    assert_eq!(code, Some(0), "{}: {report:#?}", share.name());
    let across = report.across.as_ref().expect("DIR2 was given");
    assert_eq!((across.create_seen.unseen, across.data_seen.unseen), (0, 0), "{report:#?}");
    assert!(report.exclusive_create.works, "{report:#?}");
    // The doctor leaves nothing behind.
    assert_eq!(std::fs::read_dir(share.server_dir()).unwrap().count(), 0);

    // The doctor judges the share; a peer that writes without an exclusive
    // create (uuid-filelock) needs its own 0.1 s delay on any share.
    let share_delay = report.verdict.verification_delay_s.unwrap_or(0.0);
    let delay = if runner.contains("uuid-filelock") { share_delay.max(0.1) } else { share_delay }.to_string();
    let (code, summary) =
        contend_across(share, &["--processes", "4", "--iterations", "6", "--runner", runner, "--verification-delay", &delay]);
    assert_eq!(code, Some(0), "{}: {summary:?}", share.name());
    assert_eq!((summary.directories, summary.acquisitions, summary.overlaps), (2, 24, 0), "{summary:?}");
    report
}

// sshfs: exclusive create and hard links are the server's, so the share is
// safe at any delay and locks with a lifetime work; the component, the
// command module and uuid-filelock (at its 0.1 s delay) take turns across
// the two clients (one of them caching). Holders SIGKILLed across them are
// recovered from. (filelock.SoftFileLock cannot take part: sshfs answers
// its exclusive create of an existing file with EPERM, which it raises.)
#[test]
fn sshfs_is_safe_and_recovers_from_killed_holders() {
    let Some(share) = start("sshfs_is_safe_and_recovers_from_killed_holders", ShareKind::Sshfs) else { return };
    let report = doctor_then_contend(&share, "component,command,uuid-filelock");
    assert!(report.hard_links.works && report.lifetimes.works, "{report:#?}");
    assert_eq!(report.verdict.kind, VerdictKind::Safe, "{report:#?}");

    let args = ["--processes", "4", "--iterations", "10", "--hold-ms", "5", "--stale-after", "1", "--kill", "4"];
    let (code, summary) = contend_across(&share, &[&args[..], &["--runner", "mixed"]].concat());
    assert_eq!(code, Some(0), "{summary:?}");
    assert_eq!((summary.kills, summary.overlaps, summary.violations), (4, 0, 0), "{summary:?}");
}

// SMB through smbnetfs: no hard links, so no lifetimes, and an exclusive
// create that both clients can win; the doctor says which delay keeps the
// lock safe, and at that delay the component and the command module never
// overlap. (The Python peers cannot take part: uuid-filelock's release
// fails with EBUSY whenever another client is reading the lock file, and
// SoftFileLock has no read-back to survive a create both clients win; see
// the README's share table.)
#[test]
fn smb_is_safe_at_the_delay_the_doctor_asks_for() {
    let Some(share) = start("smb_is_safe_at_the_delay_the_doctor_asks_for", ShareKind::Smb) else { return };
    let report = doctor_then_contend(&share, "mixed");
    assert!(!report.hard_links.works && !report.lifetimes.works, "{report:#?}");
}

// rclone's VFS serves a directory listing from its cache: one mount does
// not see the other's new files, and its exclusive create is not
// exclusive. The doctor must say unsafe (exit 1), and why.
#[test]
fn a_caching_rclone_mount_is_unsafe() {
    let Some(share) = start("a_caching_rclone_mount_is_unsafe", ShareKind::Rclone) else { return };
    let [a, b] = share.mounts();
    let (code, report) = doctor(&[path(&a), path(&b), "--rounds", "5", "--max-lag", "2"]);
    assert_eq!(report.verdict.kind, VerdictKind::Unsafe, "{report:#?}");
    assert_eq!(code, Some(1), "{report:#?}");
    assert!(!report.verdict.reasons.is_empty());
}

// On tmpfs everything works: safe, lifetimes, no lag worth a delay.
#[test]
fn the_doctor_finds_tmpfs_safe() {
    let dir = tempdir();
    let output = uuidlock(&["doctor", path(dir.path())]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    assert!(shown.contains("verdict: safe"), "{shown}");
    assert!(shown.contains("lifetimes: yes"), "{shown}");
    let (_, report) = doctor(&[path(dir.path())]);
    assert!(report.hard_links.works && report.rename_over.works && report.delete_open.works, "{report:#?}");
    assert!(report.subsecond_dates, "{report:#?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe directory is removed");
}

// Bad input: one line naming the path and what to give instead, exit 2,
// and nothing written.
#[test]
fn the_doctor_refuses_a_missing_directory_and_the_same_one_twice() {
    let output = uuidlock(&["doctor", "/nonexistent/uuidlock"]);
    assert_eq!(output.status.code(), Some(2));
    let message = text(&output.stderr);
    assert!(message.contains("/nonexistent/uuidlock") && message.lines().count() == 1, "{message}");

    let dir = tempdir();
    let again = dir.path().join("again");
    std::os::unix::fs::symlink(dir.path(), &again).unwrap();
    let output = uuidlock(&["doctor", path(dir.path()), path(&again)]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("same directory"), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the symlink");

    let output = uuidlock(&["doctor", path(dir.path()), "--max-lag", "-1"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}
