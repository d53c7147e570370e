//! uuidlock: a cross-process lock file that needs no locking support from the
//! filesystem or the network share, built to run inside a WASI sandbox.
//!
//! This crate is the *guest*: the lock protocol and the command-line
//! contract, compiled to `wasm32-wasip1` as the `uuidlock.wasm` command and
//! (with the `component` feature) as the core module of the component that
//! exports the `guest` world of `wit/`. The host crate (`host/`) runs both in wasmtime, and
//! also links this crate natively for the shared command line and as the
//! native baseline.
//!
//! # Layout
//!
//! - [`protocol`]: the lock itself: publish, verify, retry, release,
//!   refresh, break stale locks; plain `std::fs`, native and wasm alike. Its
//!   module docs carry the argument for mutual exclusion.
//! - `claim`: claims, heartbeats and staleness: who may remove a lock
//!   instance, when it is dead, and breaking stale locks (and stale claims).
//! - `files`: the filesystem steps (stage, hard-link, rename, bounded read
//!   of regular files only, remove, the filesystem's clock), each mapped to
//!   the error users see.
//! - [`stale`]: stale file handles (a share's client whose cached name now
//!   names nothing), met by looking the name up again.
//! - `sweep`: reclaiming what killed processes leave beside a lock.
//! - `scratch` (tests only): temporary directories on tmpfs.
//! - `planted` (tests only, feature `planted-bugs`): protocol bugs planted
//!   on request, so that the simulator's tests can prove they catch them.
//! - [`format`]: the lock file's bytes, a public format specified there.
//! - [`fence`]: fencing numbers, a counter beside the lock that only moves
//!   forward.
//! - [`shared`]: shared (reader) locks and N-slot semaphores, as entries
//!   in a holders' directory taken under the lock itself, and why readers
//!   never hold beside a writer nor more than N in a semaphore.
//! - [`queue`]: the queue of waiters: arrival order, only the first polls
//!   the lock, and why it can neither break nor wedge it.
//! - `wake`: a waiter's pause in the queue, the one sleep a host may end
//!   early (when the lock file goes).
//! - [`error`]: the protocol's error type; each layer maps it once.
//! - [`owned`]: the locks one owner (an instance, a host's locker) holds,
//!   so that it never waits for itself.
//! - [`cli`] (feature `cli`, on by default): the command-line contract
//!   shared by the guest command and the native binary: parsing, output,
//!   messages, exit codes. `default-features = false` is the protocol alone.
//! - `component` (feature `component`, wasm only): the WIT export, and its
//!   `guard` resource.
//! - `src/bin/uuidlock.rs`: the guest command's thin `main`.
//!
//! # Example
//!
//! ```no_run
//! use uuidlock::{protocol, Options};
//!
//! let acquired = protocol::acquire("/locks/job.lock", &Options::default())?;
//! // ... the critical section; pass acquired.fence to the resource ...
//! protocol::release("/locks/job.lock", acquired.token.as_str())?;
//! # Ok::<(), uuidlock::LockError>(())
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod format;
pub mod owned;
pub mod protocol;

pub mod fence;
pub mod queue;

mod claim;
mod files;
mod planted;
#[cfg(test)]
mod scratch;
pub mod shared;
pub mod stale;
mod sweep;
mod wake;

#[cfg(all(feature = "component", target_arch = "wasm32"))]
mod component;

pub use error::LockError;
pub use files::busy_retry;
pub use format::{Marker, Token};
pub use protocol::Options;
pub use shared::Mode;
