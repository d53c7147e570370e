//! The components some tests build and run: wasm32-wasip2 crates of the
//! repository (the example plugin, the conformance suite), the Python
//! example plugin (componentize-py), each composed with `uuidlock compose`,
//! and the example plugin host. Each is built once per
//! test binary; a failure says why (the caller SKIPs loudly with it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::{text, uuidlock, venv};

/// The repository's root.
pub fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("host/cli is two levels down")
}

fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(repository()).env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("RUSTFLAGS");
    cargo
}

pub fn succeeded(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {}", text(&output.stderr).trim()))
    }
}

/// Builds the wasm32-wasip2 crate in `dir` (relative to the repository;
/// outside the workspace) and returns its binary `bin`, a component. The
/// crates share a target directory of their own.
pub fn wasip2(dir: &str, bin: &str) -> Result<PathBuf, String> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    static TARGET_ADDED: OnceLock<Result<(), String>> = OnceLock::new();
    TARGET_ADDED
        .get_or_init(|| {
            succeeded(Command::new("rustup").current_dir(repository()).args(["target", "add", "wasm32-wasip2"]))
        })
        .clone()?;
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples");
    succeeded(
        cargo()
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(repository().join(dir).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target),
    )?;
    Ok(target.join("wasm32-wasip2/release").join(format!("{bin}.wasm")))
}

/// `uuidlock compose PLUGIN -o NAME.composed.wasm` (in the target
/// directory); checks that compose printed OUT.
pub fn composed(plugin: &Path, name: &str) -> Result<PathBuf, String> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.composed.wasm"));
    let (plugin_arg, out_arg) = (plugin.to_str().expect("UTF-8 path"), out.to_str().expect("UTF-8 path"));
    let output = uuidlock(&["compose", plugin_arg, "-o", out_arg]);
    if !output.status.success() {
        return Err(format!("uuidlock compose {plugin_arg} failed: {}", text(&output.stderr)));
    }
    assert_eq!(text(&output.stdout).trim(), out_arg, "compose prints OUT");
    Ok(out)
}

/// The example Rust plugin (`examples/plugin-rust`).
pub fn counter_plugin() -> Result<PathBuf, String> {
    static PLUGIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PLUGIN.get_or_init(|| wasip2("examples/plugin-rust", "counter-plugin")).clone()
}

/// The example plugin, composed.
pub fn composed_counter_plugin() -> Result<PathBuf, String> {
    static COMPOSED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    COMPOSED.get_or_init(|| composed(&counter_plugin()?, "counter-plugin")).clone()
}

/// The example plugin in Python (`examples/plugin-python`), made a
/// component by componentize-py 0.25.1 from PyPI, as its docs say. The
/// source is copied aside first, so that no `__pycache__` lands in the
/// repository.
pub fn python_counter_plugin() -> Result<PathBuf, String> {
    static PLUGIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let python = venv("componentize-py", &["componentize-py==0.25.1"])?;
            let componentize = python.with_file_name("componentize-py");
            let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples/plugin-python");
            std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
            let example = repository().join("examples/plugin-python");
            std::fs::copy(example.join("app.py"), work.join("app.py")).map_err(|e| e.to_string())?;
            let out = work.join("counter-plugin.wasm");
            succeeded(
                Command::new(componentize)
                    .arg("-d")
                    .arg(repository().join("wit"))
                    .arg("-d")
                    .arg(example.join("wit"))
                    .args(["-w", "example:counter-plugin/counter-plugin", "--quiet", "componentize", "app", "-o"])
                    .arg(&out)
                    .current_dir(&work),
            )?;
            Ok(out)
        })
        .clone()
}

/// The Python example plugin, composed.
pub fn composed_python_counter_plugin() -> Result<PathBuf, String> {
    static COMPOSED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    COMPOSED.get_or_init(|| composed(&python_counter_plugin()?, "counter-plugin-py")).clone()
}

/// The example plugin host (`examples/plugin-host`), built as the workspace
/// member it is, its binary beside this package's.
///
/// Built with every target of the workspace, as `cargo test --workspace`
/// resolves features: built alone (`-p`), it would get wasmtime with fewer
/// features, so wasmtime and all that depends on it would be compiled again
/// (five minutes of a 2-core CI run). After `cargo test --workspace` only
/// the host's binary is left to build.
pub fn plugin_host() -> Result<PathBuf, String> {
    static HOST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        succeeded(cargo().args(["build", "--quiet", "--workspace", "--all-targets"]))?;
        let binary = Path::new(env!("CARGO_BIN_EXE_uuidlock")).with_file_name("plugin-host");
        binary.exists().then_some(binary.clone()).ok_or_else(|| format!("{} was not built", binary.display()))
    })
    .clone()
}

/// The guest command built with the `planted-bugs` feature (test only):
/// `UUIDLOCK_PLANT=NAME` in its environment turns on one protocol bug, so
/// that the simulator's tests can show each is caught.
pub fn planted_guest() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("planted");
            succeeded(
                cargo()
                    .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1", "--bin", "uuidlock"])
                    .args(["--features", "command,planted-bugs", "--package", "uuidlock", "--target-dir"])
                    .arg(&target),
            )?;
            Ok(target.join("wasm32-wasip1/release/uuidlock.wasm"))
        })
        .clone()
}
