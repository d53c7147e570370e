//! `uuidlock compose PLUGIN -o OUT`: joins a plugin component that imports
//! the lock (`uuidlock:lock/lock`, the `plugin` world of `wit/`) with the
//! uuidlock component this binary embeds, into one component that imports
//! what the plugin imports but the lock: for a WASI plugin, only WASI. Run
//! it with stock `wasmtime run --dir`, jco or wasmtime-py; the lock is
//! confined to the directories the host preopens for the plugin, because the
//! two share one WASI.
//!
//! Built on `wac-graph`, the library behind `wac plug`: the same join as
//! `wac plug PLUGIN --plug uuidlock.component.wasm -o OUT`, with the checks
//! a plugin author needs said in one line each: not a component, no lock
//! imported, another version of the interface, a lock interface that is not
//! this one.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use uuidlock_host::engine::COMPONENT_WASM;
use wac_graph::types::{are_semver_compatible, Package, SubtypeChecker};
use wac_graph::{CompositionGraph, EncodeOptions};

use crate::exit;

/// The interfaces of the lock's package, as a plugin imports them.
const PACKAGE: &str = "uuidlock:lock";

/// The largest plugin read: a Python plugin (componentize-py) is some tens
/// of MiB.
const MAX_PLUGIN_BYTES: u64 = 1 << 30;

#[derive(Args, Debug)]
pub struct Config {
    /// The plugin component: it imports uuidlock:lock/lock@0.3.0
    pub plugin: PathBuf,

    /// Where to write the composed component (replaced if it exists)
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// Why a plugin could not be composed.
#[derive(Debug)]
pub enum ComposeError {
    /// Not a component (a core module, or not wasm at all).
    NotComponent(String),
    /// The plugin imports nothing of the lock's package.
    NoLock,
    /// The plugin exports an interface of the lock's package: it provides
    /// a lock instead of importing one.
    ExportsLock(String),
    /// The plugin imports an interface of the lock's package that no
    /// version of uuidlock's component exports.
    Unknown { import: String, offered: Vec<String> },
    /// The plugin imports another version of the lock: `found`, beside the
    /// one this uuidlock offers.
    Version { found: String, offered: String },
    /// The plugin's import has the lock's name and version but not its
    /// type (built against a changed WIT).
    Mismatch { import: String, why: String },
    /// wac-graph could not join or encode them.
    Graph(String),
}

impl ComposeError {
    /// The one-line message, for the plugin at `plugin`.
    pub fn message(&self, plugin: &Path) -> String {
        let plugin = plugin.display();
        match self {
            ComposeError::NotComponent(why) => format!(
                "{plugin} is not a component ({why}); build the plugin as a component \
                 (`cargo build --target wasm32-wasip2`, componentize-py, jco componentize)"
            ),
            ComposeError::NoLock => format!(
                "{plugin} imports nothing of {PACKAGE}; a plugin imports {PACKAGE}/lock@{} \
                 (include the world {PACKAGE}/plugin@{} in the plugin's world)",
                offered_version(),
                offered_version()
            ),
            ComposeError::ExportsLock(export) => format!(
                "{plugin} exports {export}: it provides a lock instead of importing one; compose a plugin \
                 whose world includes {PACKAGE}/plugin@{}",
                offered_version()
            ),
            ComposeError::Unknown { import, offered } => format!(
                "{plugin} imports {import}, which uuidlock {} does not have (it offers {}); rebuild the \
                 plugin against the wit/ of uuidlock {}",
                offered_version(),
                offered.join(", "),
                offered_version()
            ),
            ComposeError::Version { found, offered } => format!(
                "{plugin} imports {found}, but this uuidlock offers {offered}; rebuild the \
                 plugin against the wit/ of uuidlock {}",
                offered_version()
            ),
            ComposeError::Mismatch { import, why } => format!(
                "{plugin} imports {import}, but not as this uuidlock defines it ({why}); rebuild \
                 the plugin against the wit/ of uuidlock {}",
                offered_version()
            ),
            ComposeError::Graph(why) => format!("cannot compose {plugin}: {why}"),
        }
    }
}

/// `uuidlock compose`.
pub fn main(config: Config) -> i32 {
    let plugin = match read_plugin(&config.plugin).and_then(|bytes| {
        check_output(&config.output, &config.plugin).map_err(|why| (exit::USAGE, why))?;
        Ok(bytes)
    }) {
        Ok(bytes) => bytes,
        Err((code, message)) => {
            eprintln!("uuidlock: {message}");
            return code;
        }
    };
    let composed = match compose(&plugin) {
        Ok(composed) => composed,
        Err(e) => {
            eprintln!("uuidlock: {}", e.message(&config.plugin));
            return match e {
                ComposeError::Graph(_) => exit::IO,
                _ => exit::USAGE,
            };
        }
    };
    if let Err(message) = write_replacing(&config.output, &composed) {
        eprintln!("uuidlock: {message}");
        return exit::IO;
    }
    println!("{}", config.output.display());
    exit::OK
}

/// Joins `plugin` with the embedded uuidlock component: every import of the
/// lock's package is given the component's export of it, and the result
/// exports what the plugin exports.
///
/// # Errors
/// See [`ComposeError`].
pub fn compose(plugin: &[u8]) -> Result<Vec<u8>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("plugin", None, plugin.to_vec(), graph.types_mut())
        .map_err(|e| ComposeError::NotComponent(not_component(plugin, &e)))?;
    let lock = Package::from_bytes("uuidlock", None, COMPONENT_WASM, graph.types_mut())
        .map_err(|e| ComposeError::Graph(format!("the embedded uuidlock component: {e:#}")))?;

    // Which of the plugin's imports the lock serves, each checked before
    // anything is joined so that the message names the first mismatch.
    let mut plugs = Vec::new();
    {
        let types = graph.types();
        let imports = &types[socket.ty()].imports;
        let exports = &types[lock.ty()].exports;
        let mut cache = Default::default();
        let mut checker = SubtypeChecker::new(&mut cache);
        if let Some(export) = types[socket.ty()].exports.keys().find(|name| in_package(name)) {
            return Err(ComposeError::ExportsLock(export.clone()));
        }
        for (import, &wanted) in imports.iter().filter(|(name, _)| in_package(name)) {
            let Some((export, &offered)) = exports.iter().find(|(export, _)| are_semver_compatible(import, export))
            else {
                let Some(offered) = exports.keys().find(|export| same_interface(import, export)) else {
                    let offered = exports.keys().filter(|name| in_package(name)).cloned().collect();
                    return Err(ComposeError::Unknown { import: import.clone(), offered });
                };
                return Err(ComposeError::Version { found: import.clone(), offered: offered.clone() });
            };
            checker
                .is_subtype(offered, types, wanted, types)
                .map_err(|e| ComposeError::Mismatch { import: import.clone(), why: format!("{e:#}") })?;
            plugs.push((export.clone(), import.clone()));
        }
    }
    if plugs.is_empty() {
        return Err(ComposeError::NoLock);
    }

    let graph_error = |e: &dyn std::fmt::Display| ComposeError::Graph(e.to_string());
    let socket_exports: Vec<String> = graph.types()[socket.ty()].exports.keys().cloned().collect();
    let socket = graph.register_package(socket).map_err(|e| graph_error(&e))?;
    let lock = graph.register_package(lock).map_err(|e| graph_error(&e))?;
    let plugin_instance = graph.instantiate(socket);
    let lock_instance = graph.instantiate(lock);
    for (export, import) in plugs {
        let served = graph.alias_instance_export(lock_instance, &export).map_err(|e| graph_error(&e))?;
        graph.set_instantiation_argument(plugin_instance, &import, served).map_err(|e| graph_error(&e))?;
    }
    for name in socket_exports {
        let export = graph.alias_instance_export(plugin_instance, &name).map_err(|e| graph_error(&e))?;
        graph.export(export, &name).map_err(|e| graph_error(&e))?;
    }
    graph.encode(EncodeOptions::default()).map_err(|e| ComposeError::Graph(format!("{:#}", anyhow::Error::from(e))))
}

/// The version of the lock's package this binary embeds, from the
/// component's own exports (so it can never disagree with them).
pub fn offered_version() -> String {
    let mut graph = CompositionGraph::new();
    Package::from_bytes("uuidlock", None, COMPONENT_WASM, graph.types_mut())
        .ok()
        .and_then(|lock| {
            graph.types()[lock.ty()]
                .exports
                .keys()
                .find_map(|name| name.strip_prefix(&format!("{PACKAGE}/lock@")).map(str::to_owned))
        })
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

fn in_package(name: &str) -> bool {
    name.strip_prefix(PACKAGE).is_some_and(|rest| rest.starts_with('/'))
}

/// `a` and `b` name one interface, whatever their versions.
fn same_interface(a: &str, b: &str) -> bool {
    let unversioned = |name: &str| name.split('@').next().unwrap_or(name).to_owned();
    unversioned(a) == unversioned(b)
}

/// What wac-types said, put as a plugin author would want it.
fn not_component(bytes: &[u8], error: &anyhow::Error) -> String {
    match bytes {
        // The preamble's version and layer: 1 and 0 for a core module.
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => "it is a core wasm module".to_owned(),
        [0, b'a', b's', b'm', ..] => format!("{error:#}"),
        _ => "it is not wasm".to_owned(),
    }
}

/// Reads the plugin: a regular file (not a FIFO, which would block; not a
/// directory) of at most [`MAX_PLUGIN_BYTES`].
fn read_plugin(path: &Path) -> Result<Vec<u8>, (i32, String)> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|e| {
        (exit::USAGE, format!("cannot read the plugin {shown}: {e}; give the path of a .wasm component"))
    })?;
    if !metadata.is_file() {
        return Err((exit::USAGE, format!("{shown} is not a regular file; give the path of a .wasm component")));
    }
    if metadata.len() > MAX_PLUGIN_BYTES {
        return Err((exit::USAGE, format!("{shown} is {} bytes, over the 1 GiB a plugin may be", metadata.len())));
    }
    std::fs::read(path).map_err(|e| (exit::IO, format!("cannot read the plugin {shown}: {e}")))
}

/// Refuses an output that composing would destroy or could not replace: the
/// plugin itself (by any name), or anything but a regular file (a
/// directory, a link, a FIFO, a device: `-o /dev/null` would replace the
/// device with a file).
fn check_output(output: &Path, plugin: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let shown = output.display();
    let existing = match std::fs::symlink_metadata(output) {
        Ok(existing) => existing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot look at {shown}: {e}; give -o the path of the file to write")),
    };
    let kind = existing.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else {
            "not a regular file"
        };
        return Err(format!("{shown} is {what}; give -o the path of a new or regular file"));
    }
    let source = std::fs::metadata(plugin).map_err(|e| format!("cannot read the plugin {}: {e}", plugin.display()))?;
    if (existing.dev(), existing.ino()) == (source.dev(), source.ino()) {
        return Err(format!("{shown} is the plugin itself; give -o another path, so that the plugin is kept"));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, renamed
/// over it: a reader never sees half a component, and a failure leaves any
/// old `path` as it was.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    if path.is_dir() {
        return Err(format!("{shown} is a directory; give -o the path of the file to write"));
    }
    let name = path.file_name().ok_or_else(|| format!("{shown} names no file; give -o a file's path"))?;
    let mut temporary = name.to_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let written = std::fs::File::create_new(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("cannot write {shown}: {e}; its directory must exist and be writable")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_lock_package_are_told_apart() {
        assert!(in_package("uuidlock:lock/lock@0.3.0"));
        assert!(in_package("uuidlock:lock/types@0.2.0"));
        assert!(!in_package("uuidlock:locks/lock@0.3.0"));
        assert!(!in_package("wasi:filesystem/types@0.2.0"));
        assert!(same_interface("uuidlock:lock/lock@0.2.0", "uuidlock:lock/lock@0.3.0"));
        assert!(!same_interface("uuidlock:lock/types@0.3.0", "uuidlock:lock/lock@0.3.0"));
    }

    #[test]
    fn the_offered_version_is_the_embedded_components() {
        assert_eq!(offered_version(), "0.3.0");
    }

    #[test]
    fn what_is_not_a_component_is_refused_with_a_reason() {
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(compose(core), Err(ComposeError::NotComponent(why)) if why.contains("core wasm module")));
        assert!(matches!(compose(b"#!/bin/sh\n"), Err(ComposeError::NotComponent(why)) if why.contains("not wasm")));
    }

    #[test]
    fn the_uuidlock_component_itself_is_no_plugin() {
        assert!(matches!(compose(COMPONENT_WASM), Err(ComposeError::ExportsLock(_))));
    }
}
