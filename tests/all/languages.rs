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

use crate::common::shares::{Share, ShareKind};
use crate::common::{or_skip, tempdir, text, turns, uuidlock, wasmtime_cli};

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
        };
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
    let dir = tempdir();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Cli, Worker::CommandModule(&wasmtime)];
    contend(&[dir.path()], &workers);
}

#[test]
fn every_language_takes_turns_across_two_sshfs_mounts() {
    let test = "every_language_takes_turns_across_two_sshfs_mounts";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(share) = or_skip(test, Share::start(ShareKind::Sshfs)) else { return };
    let [a, b] = share.mounts();
    let workers = [Worker::Cli, Worker::CommandModule(&wasmtime), Worker::Cli, Worker::CommandModule(&wasmtime)];
    contend(&[&a, &b], &workers);
}
