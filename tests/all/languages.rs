//! One lock across languages: the native CLI (`uuidlock run`), the command
//! module under stock `wasmtime run`, the Python package
//! (`bindings/python`) and the Node package (`bindings/js`) take turns on
//! one lock and counter, as contending processes, on tmpfs and across the
//! two mounts of an sshfs share. Each worker speaks `turns` (one line per
//! turn: `ENTER_NS EXIT_NS FENCE`); the check is an exact counter, no
//! overlap, fences rising.
//!
//! The packages' own suites (pytest, `node --test`) run here too, so that
//! `cargo test --workspace` runs every test.
//!
//! Needs the wasmtime CLI, Python with venv (wasmtime-py and pytest from
//! PyPI) and Node with npm (jco from npm); SKIPPED loudly without them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::common::components::{repository, succeeded};
use crate::common::shares::{Share, ShareKind};
use crate::common::{or_skip, tempdir, text, turns, uuidlock, venv, wasmtime_cli};

/// Turns each worker takes.
const TURNS: usize = 10;

/// `uuidlock export`'s files (the command module and the component), made
/// once, in the target directory.
fn exported() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("exported");
        std::fs::create_dir_all(&dir).unwrap();
        let output = uuidlock(&["export", dir.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        dir
    })
}

/// The native binary, for scripts: its directory first on PATH.
fn path_with_uuidlock() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_uuidlock")).parent().unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// A worker: a program that takes `TURNS` turns on `shared.lock` and
/// `counter` in the directory it is given.
enum Worker<'a> {
    /// `uuidlock run LOCK -- sh -c ...`, once per turn.
    Cli,
    /// `wasmtime run uuidlock.wasm acquire ... --fence`, then release.
    CommandModule(&'a Path),
    /// The Python package: `with uuidlock.Lock(...)`, in this venv's
    /// interpreter.
    Python(&'a Path),
    /// The Node package, from this directory: `await acquire(...)`.
    Node(&'a Path),
}

impl Worker<'_> {
    fn spawn(&self, dir: &Path) -> Child {
        let mut command = Command::new("bash");
        command
            .env("PATH", path_with_uuidlock())
            .env("N", TURNS.to_string())
            .env("LOCK", dir.join("shared.lock"))
            .env("COUNTER", dir.join("counter"))
            .env("TURN_SH", TURN_SH);
        match self {
            Worker::Cli => command.args(["-c", CLI_WORKER]),
            Worker::CommandModule(wasmtime) => command
                .env("WASMTIME", wasmtime)
                .env("WASM", exported().join("uuidlock.wasm"))
                .env("GRANT", format!("{}::/d", dir.display()))
                .args(["-c", COMMAND_MODULE_WORKER]),
            Worker::Python(python) => command
                .arg("-c")
                .arg(format!(r#"exec "{}" -c "$PYTHON_WORKER" "$LOCK" "$COUNTER" "$N""#, python.display())),
            Worker::Node(package) => command
                .env("NODE_PACKAGE", package.join("src/index.js"))
                .args(["-c", r#"exec node --input-type=module -e "$NODE_WORKER" "$LOCK" "$COUNTER" "$N""#]),
        };
        command.env("PYTHON_WORKER", PYTHON_WORKER).env("NODE_WORKER", NODE_WORKER);
        command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

/// One turn in sh, holding the lock: the counter's read-modify-write and
/// the turn's line (`$FENCE` set by the worker). The counter is written
/// aside and renamed into place, as `contend` does, so that a client that
/// caches attributes (one sshfs mount does) never reads a short file.
const TURN_SH: &str = r#"enter=$(date +%s%N)
c=$(cat "$COUNTER" 2>/dev/null || echo 0)
echo $((c + 1)) > "$COUNTER.$$" && mv "$COUNTER.$$" "$COUNTER"
echo "$enter $(date +%s%N) $FENCE""#;

const CLI_WORKER: &str = r#"
set -e
for i in $(seq "$N"); do
    uuidlock run "$LOCK" --timeout 60 --verification-delay 0 --retry-interval 0.001 -- \
        sh -c 'FENCE=$UUIDLOCK_FENCE; eval "$TURN_SH"'
done
"#;

const COMMAND_MODULE_WORKER: &str = r#"
set -e
lock() { "$WASMTIME" run --dir "$GRANT" "$WASM" "$@"; }
for i in $(seq "$N"); do
    read -r token FENCE < <(lock acquire /d/shared.lock --timeout 60 --verification-delay 0 --retry-interval 0.001 --fence)
    [ -n "$token" ]
    eval "$TURN_SH"
    lock release /d/shared.lock "$token"
done
"#;

const PYTHON_WORKER: &str = r#"
import os, sys, time
import uuidlock

lock_path, counter, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(turns):
    with uuidlock.Lock(lock_path, timeout=60, verification_delay=0, retry_interval=0.001) as lock:
        enter = time.time_ns()
        try:
            with open(counter) as f:
                count = int(f.read())
        except FileNotFoundError:
            count = 0
        aside = f"{counter}.{os.getpid()}"
        with open(aside, "w") as f:
            f.write(f"{count + 1}\n")
        os.replace(aside, counter)
        print(enter, time.time_ns(), lock.fence, flush=True)
"#;

const NODE_WORKER: &str = r#"
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
const { acquire, shutdown } = await import(process.env.NODE_PACKAGE);
const [lock, counter, turns] = process.argv.slice(1);
// Wall-clock nanoseconds, to the microsecond (Date.now() has only ms).
const now = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
for (let i = 0; i < Number(turns); i++) {
  const guard = await acquire(lock, { timeout: 60, verificationDelay: 0, retryInterval: 0.001 });
  try {
    const enter = now();
    let count = 0;
    try { count = Number(readFileSync(counter, 'utf8')); } catch (e) { if (e.code !== 'ENOENT') throw e; }
    writeFileSync(`${counter}.${process.pid}`, `${count + 1}
`);
    renameSync(`${counter}.${process.pid}`, counter);
    console.log(`${enter} ${now()} ${guard.fence}`);
  } finally {
    await guard.release();
  }
}
await shutdown();
"#;

/// The Node package, installed in `bindings/js` by `npm install` as its
/// README says: its `prepare` transpiles the component this build
/// exported into `gen/` (both build outputs, ignored by git).
fn node_package() -> Result<PathBuf, String> {
    static PACKAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| {
            succeeded(Command::new("node").arg("--version")).map_err(|why| format!("no Node: {why}"))?;
            let package = repository().join("bindings/js");
            succeeded(
                Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(&package)
                    .env("UUIDLOCK_COMPONENT", exported().join("uuidlock.component.wasm")),
            )?;
            Ok(package)
        })
        .clone()
}

/// A venv with the Python package installed from `bindings/python`, as its
/// README says (`pip install ./bindings/python`), with pytest. The venv is
/// made once; the package is installed again from the source in every test
/// run, with the component this build exported, so that it is never stale.
fn python_package() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = venv("python-package", &["wasmtime==50.0.1", "pytest==8.3.4", "setuptools>=68", "wheel"])?;
            succeeded(
                Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                    .args(["--no-deps", "--force-reinstall", "--no-build-isolation"])
                    .arg(repository().join("bindings/python"))
                    .env("UUIDLOCK_COMPONENT", exported().join("uuidlock.component.wasm")),
            )?;
            Ok(python)
        })
        .clone()
}

/// Starts every worker at once, spread over `dirs` (one directory, or two
/// mounts of one share), and checks their turns.
fn contend(dirs: &[&Path], workers: &[Worker]) {
    let children: Vec<Child> =
        workers.iter().enumerate().map(|(i, worker)| worker.spawn(dirs[i % dirs.len()])).collect();
    turns::check(children, &dirs[0].join("counter"), TURNS);
}

#[test]
fn every_language_takes_turns_on_one_lock() {
    let test = "every_language_takes_turns_on_one_lock";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(python) = or_skip(test, python_package()) else { return };
    let Some(node) = or_skip(test, node_package()) else { return };
    let dir = tempdir();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Python(&python), Worker::Node(&node)];
    contend(&[dir.path()], &workers);
}

#[test]
fn every_language_takes_turns_across_two_sshfs_mounts() {
    let test = "every_language_takes_turns_across_two_sshfs_mounts";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(python) = or_skip(test, python_package()) else { return };
    let Some(node) = or_skip(test, node_package()) else { return };
    let Some(share) = or_skip(test, Share::start(ShareKind::Sshfs)) else { return };
    let [a, b] = share.mounts();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Python(&python), Worker::Node(&node)];
    contend(&[&a, &b], &workers);
}

/// The package's own pytest suite, against the installed package, with the
/// native CLI on PATH (its tests contend with it).
#[test]
fn the_python_package_passes_its_own_tests() {
    let test = "the_python_package_passes_its_own_tests";
    let Some(python) = or_skip(test, python_package()) else { return };
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .current_dir(repository().join("bindings/python"))
        .env("PATH", path_with_uuidlock())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "pytest failed:\n{stdout}\n{}", text(&output.stderr));
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.contains(" passed") && !summary.contains("failed"), "{stdout}");
}

/// The ```` ```LANGUAGE ```` blocks of a markdown file.
fn code_blocks(markdown: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}");
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim() == fence {
            let block: Vec<&str> = lines.by_ref().take_while(|line| line.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// The pages whose examples run: the package's README and the book's page
/// on the packages.
const EXAMPLE_PAGES: [&str; 2] = ["README.md", "../../docs/src/languages.md"];

/// The Python examples of the package's README and of the book's page run
/// as they stand, each in a fresh process, with `/srv/locks` pointed at a
/// temporary directory.
#[test]
fn the_python_readme_examples_run() {
    let test = "the_python_readme_examples_run";
    let Some(python) = or_skip(test, python_package()) else { return };
    for page in EXAMPLE_PAGES {
        let markdown = std::fs::read_to_string(repository().join("bindings/python").join(page)).unwrap();
        let blocks = code_blocks(&markdown, "python");
        assert!(blocks.len() >= 2, "{page}: the examples were not found");
        for block in blocks {
            let dir = tempdir();
            let code = block.replace("/srv/locks", dir.path().to_str().unwrap());
            let output = Command::new(&python).arg("-c").arg(&code).current_dir(dir.path()).output().unwrap();
            assert!(output.status.success(), "{page}:\n{block}\nfailed: {}", text(&output.stderr));
        }
    }
}

/// The Node package's own `node --test` suite, over the package's own
/// filesystem calls and over preview2-shim's (`UUIDLOCK_WASI=shim`), with the
/// native CLI on PATH (its tests contend with it).
#[test]
fn the_node_package_passes_its_own_tests() {
    let test = "the_node_package_passes_its_own_tests";
    let Some(package) = or_skip(test, node_package()) else { return };
    for wasi in ["direct", "shim"] {
        let output = Command::new("npm")
            .args(["test", "--silent"])
            .current_dir(&package)
            .env("PATH", path_with_uuidlock())
            .env("UUIDLOCK_WASI", wasi)
            .output()
            .unwrap();
        let stdout = text(&output.stdout);
        // The failures first: a long report is cut in the middle by CI's log.
        assert!(
            output.status.success(),
            "npm test ({wasi}) failed:\n{}\n--- the whole report ---\n{stdout}\n{}",
            tap_failures(&stdout),
            text(&output.stderr)
        );
        assert!(stdout.lines().any(|line| line == "# fail 0"), "{wasi}: {stdout}");
        assert!(!stdout.lines().any(|line| line == "# pass 0"), "{wasi}: no test ran: {stdout}");
    }
}

/// The failed tests of a TAP report, each with its diagnostics (the
/// indented block after a `not ok` line, down to its `...`).
fn tap_failures(report: &str) -> String {
    let mut failures = Vec::new();
    let mut lines = report.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("not ok") {
            failures.push(line);
            failures.extend(lines.by_ref().take_while(|line| line.trim() != "..."));
        }
    }
    failures.join("\n")
}

/// The Node examples of the package's README and of the book's page run as
/// they stand (ES modules, importing `uuidlock` from inside the package),
/// each in a fresh process, with `/srv/locks` pointed at a temporary
/// directory.
#[test]
fn the_node_readme_examples_run() {
    let test = "the_node_readme_examples_run";
    let Some(package) = or_skip(test, node_package()) else { return };
    for page in EXAMPLE_PAGES {
        let markdown = std::fs::read_to_string(package.join(page)).unwrap();
        let blocks = code_blocks(&markdown, "js");
        assert!(blocks.len() >= 2, "{page}: the examples were not found");
        for block in blocks {
            let dir = tempdir();
            let code = block.replace("/srv/locks", dir.path().to_str().unwrap());
            let output =
                Command::new("node").args(["--input-type=module", "-e", &code]).current_dir(&package).output().unwrap();
            assert!(output.status.success(), "{page}:\n{block}\nfailed: {}", text(&output.stderr));
        }
    }
}
