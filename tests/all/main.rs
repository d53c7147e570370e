//! Every integration test of the repository, in one binary: one link of
//! wasmtime, one build of the share beds. Each module is one concern; the
//! fixture and the beds are in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod cli;
mod component;
mod conformance;
mod contention;
mod docs;
mod hard_cases;
mod hostile;
mod languages;
mod lease;
mod model;
mod plugins;
mod python_peers;
mod queue;
mod run;
mod shares;
mod simulate;
mod wasmtime_cli;
