//! An example plugin host: `plugin-host [--dir HOST::GUEST]...
//! [--ro-dir HOST::GUEST]... PLUGIN.wasm [ARGS]...` runs a plugin (a WASI
//! command component whose world includes `uuidlock:lock/plugin`) like
//! `wasmtime run`, and serves its import of
//! `uuidlock:lock/lock` itself: each plugin's locks are confined to the
//! directories it was granted, under the same names as its files, and
//! read only where its files are (`--ro-dir`): there it can see who holds
//! a lock, but take, release or break none.
//!
//! Exits with 0 when the plugin's `run` returns ok, 1 when it returns an
//! error, the plugin's own status when it exits, 2 on bad arguments, 4 when
//! the plugin cannot be loaded or traps.

use std::process::ExitCode;

use uuidlock_host::plugin::{self, PluginLock};
use uuidlock_host::{Grant, Runtime};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{bail, Result, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

const USAGE: &str = "usage: plugin-host [--dir HOST::GUEST]... [--ro-dir HOST::GUEST]... PLUGIN.wasm [ARGS]...";

/// A plugin's store: its WASI, its resources, and its lock.
struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    lock: PluginLock,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().take_while(|arg| arg.starts_with('-')).any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}\n\nRuns PLUGIN's wasi:cli/run with the lock served by this host.");
        return ExitCode::SUCCESS;
    }
    let (grants, plugin, plugin_args) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("plugin-host: {e:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&grants, plugin, plugin_args) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("plugin-host: {e:#}");
            ExitCode::from(4)
        }
    }
}

/// `--dir HOST::GUEST` and `--ro-dir HOST::GUEST` pairs, then the plugin
/// and its arguments.
fn parse(args: &[String]) -> Result<(Vec<Grant>, &str, &[String])> {
    let mut grants = Vec::new();
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        let read_only = match flag.as_str() {
            "--dir" => false,
            "--ro-dir" => true,
            _ => break,
        };
        let Some((host, guest)) = value.split_once("::") else {
            bail!("{flag} takes HOST::GUEST, not {value:?}");
        };
        grants.push(if read_only { Grant::read_only(host, guest) } else { Grant::new(host, guest) });
        rest = tail;
    }
    match rest {
        [plugin, plugin_args @ ..] if !plugin.starts_with('-') => Ok((grants, plugin, plugin_args)),
        _ => bail!("no plugin given"),
    }
}

/// Runs the plugin; its exit status: 0 when its `run` returned ok, 1 when
/// it returned an error, or the status it exited with.
fn run(grants: &[Grant], plugin: &str, args: &[String]) -> Result<i32> {
    // One runtime (engine and the uuidlock component, compiled once) serves
    // every plugin of the process.
    let runtime = Runtime::new()?;
    let mut linker = Linker::<PluginState>::new(runtime.engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    plugin::add_to_linker(&mut linker, |state| &mut state.lock)?;
    let component = Component::from_file(runtime.engine(), plugin).with_context(|| format!("loading {plugin}"))?;

    // The plugin's files and its locks see the same directories.
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().arg(plugin).args(args);
    for grant in grants {
        let perms = if grant.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        wasi.preopened_dir(&grant.host, &grant.guest, perms)
            .with_context(|| format!("granting {}", grant.host.display()))?;
    }
    let state =
        PluginState { wasi: wasi.build(), table: ResourceTable::new(), lock: PluginLock::new(&runtime, grants)? };
    let mut store = Store::new(runtime.engine(), state);
    let command =
        Command::instantiate(&mut store, &component, &linker).with_context(|| format!("instantiating {plugin}"))?;
    match command.wasi_cli_run().call_run(&mut store) {
        Ok(returned) => Ok(if returned.is_ok() { 0 } else { 1 }),
        // `std::process::exit` in the plugin: its status, as `wasmtime run` gives it.
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e).with_context(|| format!("{plugin} trapped")),
        },
    }
}
