//! One conformance suite in every host. The suite (`tests/conformance`) is
//! a plugin component that checks every function of
//! `uuidlock:lock/lock@0.3.0` through its import: every error case,
//! lifetimes, fences, the guard and its drop. Here it runs served by the
//! Rust host (`examples/plugin-host`, on `uuidlock_host::plugin`) and,
//! composed with `uuidlock compose`, under stock `wasmtime run`, under jco
//! on Node (`tests/conformance/hosts/run-suite.mjs`) and under wasmtime-py
//! (`run_suite.py`): one suite, four hosts, the same count of checks
//! passed in each.
//!
//! Needs the wasm32-wasip2 target, the wasmtime CLI, Node with npm (jco
//! 1.35 and preview2-shim 0.26.1 are installed from npm into the target
//! directory) and Python (wasmtime-py 50 from PyPI); SKIPPED loudly
//! without them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::components::{composed, plugin_host, repository, succeeded, wasip2};
use crate::common::{mkfifo, or_skip, tempdir, text, uuidlock, venv, wasmtime_cli};

/// The suite, built for wasm32-wasip2.
fn suite() -> Result<PathBuf, String> {
    static SUITE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SUITE.get_or_init(|| wasip2("tests/conformance", "conformance")).clone()
}

/// The suite joined with the lock.
fn composed_suite() -> Result<PathBuf, String> {
    static COMPOSED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    COMPOSED.get_or_init(|| composed(&suite()?, "conformance")).clone()
}

/// How many checks the suite has: every host must pass every one.
fn checks() -> usize {
    let source = std::fs::read_to_string(repository().join("tests/conformance/src/main.rs")).unwrap();
    source.matches("suite.check(").count()
}

/// A fresh fixture, as the suite's `FIXTURE` describes it: `work/` (to be
/// granted as /work) beside `outside/`.
fn fixture() -> tempfile::TempDir {
    let dir = tempdir();
    let (work, outside) = (dir.path().join("work"), dir.path().join("outside"));
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(work.join("dir.lock")).unwrap();
    std::os::unix::fs::symlink("target.lock", work.join("link.lock")).unwrap();
    mkfifo(&work.join("fifo.lock"));
    std::fs::write(work.join("file"), "a regular file\n").unwrap();
    std::fs::write(work.join("foreign.lock"), "held by a shell script\n").unwrap();
    std::os::unix::fs::symlink("../outside", work.join("escape")).unwrap();
    // A holder with a 0.5 s lifetime that died an hour ago.
    let stale = work.join("stale.lock");
    let taken = uuidlock(&["acquire", stale.to_str().unwrap(), "--stale-after", "0.5", "--verification-delay", "0"]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    backdate(&stale, 3600);
    dir
}

/// Sets `path`'s modification time `seconds` into the past.
fn backdate(path: &Path, seconds: i64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let then = libc::timeval { tv_sec: now - seconds, tv_usec: 0 };
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and two timevals.
    assert_eq!(unsafe { libc::utimes(name.as_ptr(), [then, then].as_ptr()) }, 0);
}

/// The suite passed every check in `host`, and left nothing of its own
/// beside the locks (staging files, heartbeats).
fn assert_conforms(host: &str, output: &Output, fixture: &Path) {
    let stdout = text(&output.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|line| line.starts_with("not ok")).collect();
    assert!(failed.is_empty(), "{host}: failed checks:\n{}\nstderr: {}", failed.join("\n"), text(&output.stderr));
    let summary = format!("{} passed, 0 failed", checks());
    assert_eq!(stdout.lines().last(), Some(summary.as_str()), "{host}: {stdout}\nstderr: {}", text(&output.stderr));
    assert!(output.status.success(), "{host} exited {:?}: {}", output.status, text(&output.stderr));
    let left: Vec<String> = std::fs::read_dir(fixture.join("work"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".new") || name.ends_with(".beat"))
        .collect();
    assert!(left.is_empty(), "{host} left {left:?}");
}

#[test]
fn the_suite_passes_in_the_rust_host() {
    let test = "the_suite_passes_in_the_rust_host";
    let Some(suite) = or_skip(test, suite()) else { return };
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let fixture = fixture();
    let grant = format!("{}::/work", fixture.path().join("work").display());
    let output = Command::new(host).args(["--dir", &grant]).arg(suite).arg("/work").output().unwrap();
    assert_conforms("the Rust host (plugin::add_to_linker)", &output, fixture.path());
}

#[test]
fn the_suite_passes_composed_under_stock_wasmtime() {
    let test = "the_suite_passes_composed_under_stock_wasmtime";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(composed) = or_skip(test, composed_suite()) else { return };
    let fixture = fixture();
    let grant = format!("{}::/work", fixture.path().join("work").display());
    let output = Command::new(wasmtime).args(["run", "--dir", &grant]).arg(composed).arg("/work").output().unwrap();
    assert_conforms("wasmtime run", &output, fixture.path());
}

/// jco and preview2-shim from npm, in a directory of their own under the
/// target directory, with the suite's Node driver beside them.
fn jco() -> Result<PathBuf, String> {
    static JCO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    JCO.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools/jco");
        let packages = r#"{"@bytecodealliance/jco": "1.35.0", "@bytecodealliance/preview2-shim": "0.26.1"}"#;
        let stamp = dir.join("installed-jco-1.35.0+preview2-shim-0.26.1");
        if !stamp.exists() {
            succeeded(Command::new("node").arg("--version")).map_err(|why| format!("no Node: {why}"))?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            // The shim's output is ES modules.
            let manifest = format!(r#"{{"private": true, "type": "module", "dependencies": {packages}}}"#);
            std::fs::write(dir.join("package.json"), manifest).map_err(|e| e.to_string())?;
            succeeded(
                Command::new("npm").args(["install", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir),
            )?;
            std::fs::write(&stamp, "").map_err(|e| e.to_string())?;
        }
        std::fs::copy(repository().join("tests/conformance/hosts/run-suite.mjs"), dir.join("run-suite.mjs"))
            .map_err(|e| e.to_string())?;
        Ok(dir)
    })
    .clone()
}

#[test]
fn the_suite_passes_composed_under_jco_on_node() {
    let test = "the_suite_passes_composed_under_jco_on_node";
    let Some(composed) = or_skip(test, composed_suite()) else { return };
    let Some(jco) = or_skip(test, jco()) else { return };
    let transpiled = tempdir();
    let transpile = succeeded(
        Command::new(jco.join("node_modules/.bin/jco"))
            .arg("transpile")
            .arg(&composed)
            .arg("-o")
            .arg(transpiled.path())
            .args(["--name", "conformance", "--instantiation", "sync", "--quiet"]),
    );
    let Some(()) = or_skip(test, transpile) else { return };
    let fixture = fixture();
    let output = Command::new("node")
        .arg(jco.join("run-suite.mjs"))
        .arg(transpiled.path())
        .arg(fixture.path().join("work"))
        .output()
        .unwrap();
    assert_conforms("jco", &output, fixture.path());
}

#[test]
fn the_suite_passes_composed_under_wasmtime_py() {
    let test = "the_suite_passes_composed_under_wasmtime_py";
    let Some(composed) = or_skip(test, composed_suite()) else { return };
    let Some(python) = or_skip(test, venv("wasmtime-py", &["wasmtime==50.0.1"])) else { return };
    let fixture = fixture();
    let output = Command::new(python)
        .arg(repository().join("tests/conformance/hosts/run_suite.py"))
        .arg(&composed)
        .arg(fixture.path().join("work"))
        .output()
        .unwrap();
    assert_conforms("wasmtime-py", &output, fixture.path());
}
