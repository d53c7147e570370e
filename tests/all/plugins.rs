//! Plugins that import the lock: the example plugins (Rust in
//! `examples/plugin-rust`, built for wasm32-wasip2; Python in
//! `examples/plugin-python`, built with componentize-py) composed with
//! `uuidlock compose` and run under stock `wasmtime run`, and served by a
//! host that provides the lock (`examples/plugin-host`, on
//! `uuidlock_host::plugin`); the grants that confine them; and what
//! `uuidlock compose` refuses.
//!
//! Needs the wasm32-wasip2 target (added with rustup on demand), the
//! wasmtime CLI (see `wasmtime_cli`) and, for the Python plugin,
//! componentize-py from PyPI; SKIPPED loudly without them.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::common::components::{
    composed_counter_plugin, composed_python_counter_plugin, counter_plugin, plugin_host, python_counter_plugin,
};
use crate::common::{mkfifo, or_skip, tempdir, text, turns, uuidlock, wasmtime_cli};

/// How a plugin process is started, with `dir` granted as `/work`.
enum Runner<'a> {
    /// `wasmtime run` of the composed plugin.
    Composed(&'a Path, &'a Path),
    /// The example host, serving the lock to the plain plugin.
    HostProvided(&'a Path, &'a Path),
}

impl Runner<'_> {
    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let grant = format!("{}::/work", dir.display());
        let mut command = match self {
            Runner::Composed(wasmtime, composed) => {
                let mut command = Command::new(wasmtime);
                command.args(["run", "--dir", &grant]).arg(composed);
                command
            }
            Runner::HostProvided(host, plugin) => {
                let mut command = Command::new(host);
                command.args(["--dir", &grant]).arg(plugin);
                command
            }
        };
        command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }
}

/// Runs the plugins at once against one lock and counter in `dir`, each
/// taking `turns` turns, and checks mutual exclusion (`turns::check`).
fn contend(dir: &Path, runners: &[Runner], turns: usize) {
    let turns_arg = turns.to_string();
    let children: Vec<Child> = runners
        .iter()
        .map(|runner| runner.command(dir, &["/work/shared.lock", "/work/counter", &turns_arg]).spawn().unwrap())
        .collect();
    turns::check(children, &dir.join("counter"), turns);
}

#[test]
fn a_composed_plugin_keeps_mutual_exclusion_under_stock_wasmtime() {
    let test = "a_composed_plugin_keeps_mutual_exclusion_under_stock_wasmtime";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(composed) = or_skip(test, composed_counter_plugin()) else { return };
    let dir = tempdir();
    let runner = || Runner::Composed(&wasmtime, &composed);
    contend(dir.path(), &[runner(), runner()], 40);
}

#[test]
fn plugins_served_by_the_host_and_composed_ones_exclude_each_other() {
    let test = "plugins_served_by_the_host_and_composed_ones_exclude_each_other";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(composed) = or_skip(test, composed_counter_plugin()) else { return };
    let Some(plugin) = or_skip(test, counter_plugin()) else { return };
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let dir = tempdir();
    let served = || Runner::HostProvided(&host, &plugin);
    contend(dir.path(), &[served(), served(), Runner::Composed(&wasmtime, &composed)], 30);
}

// The Python example plugin (componentize-py), composed and served by the
// host, takes turns with the Rust one on one lock and counter.
#[test]
fn python_and_rust_plugins_exclude_each_other_composed_and_served() {
    let test = "python_and_rust_plugins_exclude_each_other_composed_and_served";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(python_composed) = or_skip(test, composed_python_counter_plugin()) else { return };
    let Some(python_plugin) = or_skip(test, python_counter_plugin()) else { return };
    let Some(rust_composed) = or_skip(test, composed_counter_plugin()) else { return };
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let dir = tempdir();
    let runners = [
        Runner::Composed(&wasmtime, &python_composed),
        Runner::HostProvided(&host, &python_plugin),
        Runner::Composed(&wasmtime, &rust_composed),
    ];
    contend(dir.path(), &runners, 25);
}

// A plugin names a lock outside its grants, through `..` or by a path its
// sandbox does not have: refused as outside-sandbox, served or composed,
// and nothing is made there.
#[test]
fn a_plugin_can_lock_nothing_outside_its_grants() {
    let test = "a_plugin_can_lock_nothing_outside_its_grants";
    let Some(wasmtime) = or_skip(test, wasmtime_cli()) else { return };
    let Some(composed) = or_skip(test, composed_counter_plugin()) else { return };
    let Some(plugin) = or_skip(test, counter_plugin()) else { return };
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let root = tempdir();
    let (granted, outside) = (root.path().join("granted"), root.path().join("outside"));
    std::fs::create_dir(&granted).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let host_path = outside.join("x.lock");
    for runner in [Runner::HostProvided(&host, &plugin), Runner::Composed(&wasmtime, &composed)] {
        for lock in ["/work/../outside/x.lock", host_path.to_str().unwrap()] {
            let output: Output = runner.command(&granted, &[lock, "/work/counter", "1"]).output().unwrap();
            assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
            let stderr = text(&output.stderr);
            assert!(stderr.contains(lock) && stderr.contains("granted to this sandbox"), "{stderr}");
        }
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing outside the grant was touched");
    assert_eq!(std::fs::read_dir(&granted).unwrap().count(), 0, "nor inside it");
}

/// A component made from `wit` (its world `plugin`), with a core module that
/// does nothing: what a plugin built against that WIT looks like to compose.
fn component_of(wit: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("plugin.wit", wit).unwrap();
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    let abi = wit_parser::ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync);
    let mut module = wit_component::dummy_module(&resolve, world, abi);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

/// `uuidlock compose PLUGIN -o OUT`, with OUT in `dir`: exit code, stderr.
fn compose(plugin: &Path, dir: &Path) -> (Option<i32>, String) {
    let out = dir.join("out.wasm");
    let output = uuidlock(&["compose", plugin.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    if !output.status.success() {
        assert!(!out.exists(), "a failed compose writes nothing");
    }
    (output.status.code(), text(&output.stderr))
}

#[test]
fn compose_refuses_what_it_cannot_join_in_one_line() {
    let dir = tempdir();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let refused = |plugin: &Path, said: &[&str]| {
        let (code, stderr) = compose(plugin, dir.path());
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(plugin.to_str().unwrap()), "names the plugin: {stderr}");
        for words in said {
            assert!(stderr.contains(words), "{words:?} in {stderr}");
        }
    };

    refused(&dir.path().join("missing.wasm"), &["cannot read the plugin"]);
    refused(&write("script.wasm", b"#!/bin/sh\necho hi\n"), &["not wasm"]);
    refused(&write("core.wasm", b"\0asm\x01\0\0\0"), &["core wasm module", "wasm32-wasip2"]);
    let fifo = dir.path().join("fifo.wasm");
    mkfifo(&fifo);
    refused(&fifo, &["not a regular file"]);
    refused(dir.path(), &["not a regular file"]);
    refused(
        &write("uuidlock.component.wasm", uuidlock_host::engine::COMPONENT_WASM),
        &["imports nothing of uuidlock:lock", "uuidlock:lock/plugin@0.3.0"],
    );

    // Built against 0.2.0 (its interface as it was, in short).
    let old = component_of(
        "package uuidlock:lock@0.2.0;
         interface lock {
             variant error { timeout, not-owner }
             release: func(path: string, token: string) -> result<_, error>;
         }
         world plugin { import lock; }",
    );
    refused(&write("old.wasm", &old), &["imports uuidlock:lock/lock@0.2.0", "offers uuidlock:lock/lock@0.3.0"]);

    // 0.3.0 by name, not by type: a hand-edited WIT.
    let edited = component_of(
        "package uuidlock:lock@0.3.0;
         interface lock { release: func(path: u32) -> bool; }
         world plugin { import lock; }",
    );
    refused(&write("edited.wasm", &edited), &["imports uuidlock:lock/lock@0.3.0", "not as this uuidlock defines it"]);
}

#[test]
fn compose_takes_a_plugin_of_the_documented_world_and_writes_it_whole() {
    let dir = tempdir();
    // A plugin that imports only part of the interface composes too.
    let partial = component_of(
        "package uuidlock:lock@0.3.0;
         interface types { variant error { timeout, not-owner, already-held(string), invalid-path(string),
                           invalid-options(string), invalid-token(string), outside-sandbox(string), io(string) } }
         interface lock {
             use types.{error};
             release: func(path: string, token: string) -> result<_, error>;
         }
         world plugin { import lock; }",
    );
    let plugin = dir.path().join("partial.wasm");
    std::fs::write(&plugin, &partial).unwrap();
    let out = dir.path().join("composed.wasm");
    std::fs::write(&out, b"an older build").unwrap();
    let output = uuidlock(&["compose", plugin.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let composed = std::fs::read(&out).unwrap();
    let mut graph = wac_graph::CompositionGraph::new();
    let package = wac_graph::types::Package::from_bytes("composed", None, composed, graph.types_mut()).unwrap();
    let imports: Vec<&String> = graph.types()[package.ty()].imports.keys().collect();
    assert!(imports.iter().all(|name| name.starts_with("wasi:")), "only WASI is left to import: {imports:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary file is left: {leftovers:?}");

    // An output that cannot be written: the plugin is untouched.
    let output = uuidlock(&["compose", plugin.to_str().unwrap(), "-o", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("is a directory"));
    assert_eq!(std::fs::read(&plugin).unwrap(), partial);
}
