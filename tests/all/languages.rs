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
        };
        command.env("PYTHON_WORKER", PYTHON_WORKER);
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
    let dir = tempdir();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Python(&python), Worker::Python(&python)];
    contend(&[dir.path()], &workers);
}

#[test]
fn every_language_takes_turns_across_two_sshfs_mounts() {
    let test = "every_language_takes_turns_across_two_sshfs_mounts";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(python) = or_skip(test, python_package()) else { return };
    let Some(share) = or_skip(test, Share::start(ShareKind::Sshfs)) else { return };
    let [a, b] = share.mounts();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Python(&python), Worker::Python(&python)];
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
