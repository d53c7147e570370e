//! Builds the guest (the repository's root package) for `wasm32-wasip1`, the
//! one place guests are built:
//!
//! - the command module `uuidlock.wasm` (what `wasmtime run` runs);
//! - the component `uuidlock.component.wasm`: the library with the
//!   `component` feature as a core module, wrapped with the preview1 reactor
//!   adapter by `wit-component`.
//!
//! Both land in `OUT_DIR`; their paths reach the crate as the
//! `UUIDLOCK_COMMAND_WASM` and `UUIDLOCK_COMPONENT_WASM` environment variables.
//! The guest builds in its own target directory inside `OUT_DIR`, so it never
//! contends with the outer build for a lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::ComponentEncoder;

const TARGET: &str = "wasm32-wasip1";
/// The workspace's profile for the guest's wasm files (see Cargo.toml).
const PROFILE: &str = "wasm";

fn main() -> Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?);
    let guest_root = manifest_dir.parent().context("host/ has no parent")?.to_path_buf();
    for input in ["src", "wit", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml"] {
        println!("cargo:rerun-if-changed={}", guest_root.join(input).display());
    }

    ensure_target_installed()?;

    let command = build_guest(
        &guest_root,
        &out_dir.join("guest-command"),
        &["build", "--bin", "uuidlock", "--features", "command"],
    )?;
    let command_out = out_dir.join("uuidlock.wasm");
    std::fs::copy(&command, &command_out).with_context(|| format!("copying {}", command.display()))?;

    let library = build_guest(
        &guest_root,
        &out_dir.join("guest-component"),
        // The protocol and the WIT export alone: the component has no command line.
        &["rustc", "--lib", "--crate-type", "cdylib", "--no-default-features", "--features", "component"],
    )?;
    let core = std::fs::read(&library).with_context(|| format!("reading {}", library.display()))?;
    let component = ComponentEncoder::default()
        .module(&core)
        .context("reading the guest core module")?
        .validate(true)
        .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .context("adding the preview1 reactor adapter")?
        .encode()
        .context("encoding the component")?;
    let component_out = out_dir.join("uuidlock.component.wasm");
    std::fs::write(&component_out, component).with_context(|| format!("writing {}", component_out.display()))?;

    println!("cargo:rustc-env=UUIDLOCK_COMMAND_WASM={}", command_out.display());
    println!("cargo:rustc-env=UUIDLOCK_COMPONENT_WASM={}", component_out.display());
    Ok(())
}

/// Runs `cargo <args> --profile wasm --target wasm32-wasip1` on the guest in
/// its own target directory and returns the path of `uuidlock.wasm` there.
fn build_guest(guest_root: &Path, target_dir: &Path, args: &[&str]) -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .args(["--profile", PROFILE, "--target", TARGET, "--package", "uuidlock", "--manifest-path"])
        .arg(guest_root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Flags meant for the host build would break the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .with_context(|| format!("running {cargo:?} to build the guest"))?;
    if !status.success() {
        bail!("building the guest for {TARGET} failed ({status}); the errors are above");
    }
    Ok(target_dir.join(TARGET).join(PROFILE).join("uuidlock.wasm"))
}

/// A fresh machine has the toolchain that `rust-toolchain.toml` names, but
/// rustup only adds that file's targets when it installs the toolchain; add
/// the wasm target here so that `cargo test` alone sets everything up.
fn ensure_target_installed() -> Result<()> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot =
        Command::new(&rustc).args(["--print", "sysroot"]).output().context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return Ok(());
    }
    println!("cargo:warning=installing the {TARGET} target with rustup (needed to build the guest)");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(toolchain);
    }
    let status =
        rustup.status().context("running rustup; install the target by hand: rustup target add wasm32-wasip1")?;
    if !status.success() {
        bail!("`rustup target add {TARGET}` failed; run it by hand and build again");
    }
    Ok(())
}
