//! The native `uuidlock` binary's tools, on the `uuidlock-host` library: the
//! lock commands run in the component, and the tools around them.
//!
//! # Layout
//!
//! - [`run`]: `uuidlock run`, a command under a lock with a lease;
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP become the runtimes'
//!   interrupt; an interrupted acquire is undone, and a call stuck past a
//!   grace ends the process;
//! - [`contend`]: the cross-process contention runner (`uuidlock contend`);
//! - [`bench`]: the side-by-side benchmark (`uuidlock bench`);
//! - [`doctor`]: `uuidlock doctor`, whether a share is safe for uuidlock and
//!   with which settings;
//! - [`simulate`]: `uuidlock simulate`, the shipped guest against a
//!   simulated share and simulated time, interleaved by a seed and checked;
//! - [`peers`]: the Python lock libraries, as the bench's anchors and as
//!   `contend` workers beside uuidlock's;
//! - [`plain_host`]: the component in wasmtime-wasi as it comes, the
//!   bench's baseline for a plain embedding;
//! - [`plot`]: wait-time histograms of contention runs, as SVG, from plain
//!   data;
//! - [`stats`]: percentiles, shared by the runner, the bench and the plots;
//! - [`syscalls`]: the host's syscalls per operation, counted by `strace`
//!   (`uuidlock bench --syscalls`);
//! - [`compose`]: `uuidlock compose`, a plugin joined with the lock into one
//!   component (on `wac-graph`);
//! - [`exit`]: every exit code the binary uses, in one place;
//! - `cpu`: the CPU time a worker process used, from the OS;
//! - `progress`: the progress bar of long runs (stderr, terminals only);
//! - `src/main.rs`: the binary: its command list and the lock commands'
//!   backend.

pub mod bench;
pub mod compose;
pub mod contend;
mod cpu;
pub mod doctor;
pub mod exit;
pub mod peers;
pub mod plain_host;
pub mod plot;
mod progress;
pub mod run;
pub mod signals;
pub mod simulate;
pub mod stats;
pub mod syscalls;
