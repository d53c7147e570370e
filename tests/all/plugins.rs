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

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::common::components::{
    composed_counter_plugin, composed_python_counter_plugin, counter_plugin, plugin_host, python_counter_plugin, wasip2,
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

// A plugin granted a directory read-only can see the locks there but take,
// release or break none: the host grants its locks what it grants its
// files. (Before, the lock's instance was always granted read-write, and a
// plugin could create files there and delete another's lock by the token
// `status` showed it.)
#[test]
fn a_read_only_grant_lets_a_plugin_take_and_release_no_lock() {
    let test = "a_read_only_grant_lets_a_plugin_take_and_release_no_lock";
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let Some(plugin) = or_skip(test, counter_plugin()) else { return };
    let Some(release_by_token) = or_skip(test, wasip2("tests/conformance", "release-by-token")) else { return };
    let root = tempdir();
    let (ro, work) = (root.path().join("ro"), root.path().join("work"));
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&work).unwrap();
    let held = ro.join("held.lock");
    let taken = uuidlock(&["acquire", held.to_str().unwrap(), "--timeout", "0"]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    let token = text(&taken.stdout).trim().to_owned();
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = listing(&ro);
    let grants = [format!("{}::/ro", ro.display()), format!("{}::/work", work.display())];
    let run = |plugin: &Path, args: &[&str]| {
        Command::new(&host).args(["--ro-dir", &grants[0], "--dir", &grants[1]]).arg(plugin).args(args).output().unwrap()
    };

    let output = run(&plugin, &["/ro/x.lock", "/work/counter", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("/ro/x.lock"), "{}", text(&output.stderr));
    let output = run(&release_by_token, &["/ro/held.lock", &token]);
    assert_eq!(output.status.code(), Some(1), "released another's lock: {}", text(&output.stdout));
    assert_eq!(listing(&ro), before, "nothing was made or removed in the read-only grant");
    let holds = uuidlock(&["holds", held.to_str().unwrap(), &token]);
    assert_eq!(holds.status.code(), Some(0), "the holder lost its lock: {}", text(&holds.stderr));
}

// A plugin that exits while its guard holds a lock: the host passes its
// status on, and releases the lock as the plugin's store goes. (Before,
// the host called the exit a trap, and the lock was left for good.)
#[test]
fn a_plugin_that_exits_holding_a_guard_leaves_no_lock_in_the_host() {
    let test = "a_plugin_that_exits_holding_a_guard_leaves_no_lock_in_the_host";
    let Some(host) = or_skip(test, plugin_host()) else { return };
    let Some(exit_holding) = or_skip(test, wasip2("tests/conformance", "exit-holding")) else { return };
    let dir = tempdir();
    let grant = format!("{}::/work", dir.path().display());
    let output =
        Command::new(&host).args(["--dir", &grant]).arg(exit_holding).args(["/work/x.lock", "0"]).output().unwrap();
    // WASI 0.2 carries success or failure: `exit(0)` is success.
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("holding /work/x.lock"), "{}", text(&output.stdout));
    let status = uuidlock(&["status", dir.path().join("x.lock").to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(1), "the lock is still held: {}", text(&status.stdout));
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
        &["exports uuidlock:lock/", "instead of importing", "uuidlock:lock/plugin@0.3.0"],
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

    // A component that imports no lock at all.
    let lockless = component_of(
        "package example:other;
         interface files { read: func(path: string) -> string; }
         world plugin { import files; }",
    );
    refused(&write("lockless.wasm", &lockless), &["imports nothing of uuidlock:lock", "uuidlock:lock/plugin@0.3.0"]);

    // An interface of the package that uuidlock does not have.
    let unknown = component_of(
        "package uuidlock:lock@0.3.0;
         interface extra { poke: func(); }
         world plugin { import extra; }",
    );
    refused(&write("unknown.wasm", &unknown), &["imports uuidlock:lock/extra@0.3.0", "does not have"]);

    // A component that provides the lock instead of importing it.
    let provider = component_of(
        "package uuidlock:lock@0.3.0;
         interface lock { release: func(path: string, token: string) -> bool; }
         world plugin { export lock; }",
    );
    refused(&write("provider.wasm", &provider), &["exports uuidlock:lock/lock@0.3.0", "instead of importing"]);
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

    // Outputs that composing would destroy, or could not replace: refused
    // in one line before anything is written; the plugin, the FIFO and the
    // link are untouched.
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let link = dir.path().join("link.wasm");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let plugin_link = dir.path().join("plugin-link.wasm");
    std::os::unix::fs::symlink(&plugin, &plugin_link).unwrap();
    let refused = [
        (&plugin, dir.path(), "is a directory"),
        (&plugin, &plugin, "is the plugin itself"),
        (&plugin_link, &plugin, "is the plugin itself"),
        (&plugin, &fifo, "not a regular file"),
        (&plugin, &link, "is a symbolic link"),
    ];
    for (source, target, said) in refused {
        let output = uuidlock(&["compose", source.to_str().unwrap(), "-o", target.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "-o {}: {}", target.display(), text(&output.stderr));
        let stderr = text(&output.stderr);
        assert!(stderr.contains(said) && stderr.trim().lines().count() == 1, "{stderr}");
    }
    assert_eq!(std::fs::read(&plugin).unwrap(), partial);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
}
