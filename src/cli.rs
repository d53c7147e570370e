//! The command-line contract, shared by the guest command (`uuidlock.wasm`
//! under `wasmtime run`) and the native `uuidlock` binary: the same parsing,
//! output, messages and exit codes. Only the [`Backend`] differs: the guest
//! runs the protocol directly, the native binary runs it in the component.
//!
//! The contract is defined once, with clap's derive: [`LockCommand`] holds
//! the lock commands, which the guest parses as [`GuestArgs`] and the native
//! binary flattens into its own command list. Usage errors become one line
//! on stderr with exit code 2 ([`parse`]), as every other failure is one
//! line.
//!
//! # What clap costs the guest
//!
//! clap is most of `uuidlock.wasm`: 250 KB before, 618 KB with clap and
//! serde_json in a release build. A warm `wasmtime run` starts 3.5–4 ms
//! later, and a first run (compiling the module) takes twice as long. The
//! features here are the ones users see: help, usage, error context and
//! suggestions. Without all four the module is still 513 KB, so dropping
//! them saves little. Colour is left out, so that the guest does no terminal
//! detection. A lighter parser for the guest alone would mean a second
//! definition of the contract. What helps is whole-program optimisation: the
//! `wasm` profile (LTO, one codegen unit, in `Cargo.toml`) makes a first run
//! compile a third less. The README has the figures.

use std::io::Write;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

pub use crate::format::one_line;
use crate::format::Marker;
use crate::protocol::{self, Acquired, Status};
use crate::{LockError, Mode, Options, Token};

/// Exit codes, the same for every command.
pub mod exit {
    /// Done: acquired (token on stdout), released, refreshed, held.
    pub const OK: i32 = 0;
    /// `acquire` timed out; `status` found the lock free.
    pub const TIMEOUT_OR_FREE: i32 = 1;
    /// A usage error or an invalid value.
    pub const USAGE: i32 = 2;
    /// `release`, `refresh`, `holds`: the lock is not held by that token;
    /// nothing was deleted.
    pub const NOT_OWNER: i32 = 3;
    /// The path is outside the sandbox's directories, or an I/O error.
    pub const IO: i32 = 4;
}

/// Where lock operations run.
pub trait Backend {
    /// See [`protocol::acquire`].
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Acquired, LockError>;
    /// See [`protocol::release`].
    fn release(&mut self, path: &str, token: &str) -> Result<(), LockError>;
    /// See [`protocol::refresh`].
    fn refresh(&mut self, path: &str, token: &str) -> Result<(), LockError>;
    /// See [`protocol::holds`].
    fn holds(&mut self, path: &str, token: &str) -> Result<bool, LockError>;
    /// See [`protocol::status`].
    fn status(&mut self, path: &str) -> Result<Option<Status>, LockError>;
    /// See [`protocol::holders`].
    fn holders(&mut self, path: &str) -> Result<Vec<(u32, Status)>, LockError>;
}

/// Runs the protocol in this process (in the guest: inside the sandbox).
pub struct Direct;

impl Backend for Direct {
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Acquired, LockError> {
        protocol::acquire(path, options)
    }
    fn release(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        protocol::release(path, token)
    }
    fn refresh(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        protocol::refresh(path, token)
    }
    fn holds(&mut self, path: &str, token: &str) -> Result<bool, LockError> {
        protocol::holds(path, token)
    }
    fn status(&mut self, path: &str) -> Result<Option<Status>, LockError> {
        protocol::status(path)
    }
    fn holders(&mut self, path: &str) -> Result<Vec<(u32, Status)>, LockError> {
        protocol::holders(path)
    }
}

/// What `uuidlock --help` says after the command list.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (acquire: the owner token on stdout; status: held, the holder on stdout)
  1  acquire timed out (--timeout 0 tries once); status: the lock is free
  2  usage error or invalid value; one-line message on stderr
  3  release, refresh, holds: the lock is not held by TOKEN; nothing was deleted
  4  the path is outside the sandbox's directories, or an I/O error; message on stderr";

/// The guest command's arguments: `uuidlock.wasm COMMAND ...`.
#[derive(Parser, Debug)]
#[command(name = "uuidlock", bin_name = "uuidlock", version, about = ABOUT, after_help = EXIT_CODES)]
pub struct GuestArgs {
    #[command(subcommand)]
    pub command: LockCommand,
}

/// The first line of every `uuidlock --help`.
pub const ABOUT: &str = "uuidlock: a cross-process lock file that needs no locking support from the filesystem";

/// The lock commands, one definition for the guest command and the native
/// binary (which adds its own commands beside them).
#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum LockCommand {
    /// Take a lock and print its owner token
    ///
    /// Takes the lock file PATH and prints the owner token alone on stdout;
    /// keep it for `uuidlock release PATH TOKEN`. With --shared, beside
    /// other shared holders (readers) and never beside an exclusive one;
    /// with --slots N, as one of at most N holders, and the slot (0 to N-1)
    /// is printed after the token: `TOKEN SLOT`.
    #[command(
        after_help = "Exit codes: 0 acquired, 1 timed out, 2 invalid value, 4 outside the sandbox or I/O error."
    )]
    Acquire {
        /// The lock file
        path: String,
        #[command(flatten)]
        options: AcquireOptions,
        /// Print the acquisition's fencing number after the token, on the
        /// same line: `TOKEN FENCE` (`TOKEN FENCE SLOT` with --slots)
        #[arg(long)]
        fence: bool,
    },
    /// Release a lock held by TOKEN
    ///
    /// Deletes the lock file PATH if, and only if, it holds TOKEN.
    #[command(after_help = "Exit codes: 0 released, 3 not held by TOKEN (nothing deleted; also when the lock was
broken as stale), 2 malformed TOKEN, 4 outside the sandbox or I/O error.")]
    Release(PathToken),
    /// Renew a lock that has a lifetime
    ///
    /// Renews a lock taken with --stale-after: rewrites the holder's
    /// heartbeat file, so that contenders see it is alive, and checks the
    /// lock is still held by TOKEN. It never rewrites the lock file, so a
    /// late renewal cannot harm a later holder. Renew well within the
    /// lifetime (every third of it), or let `uuidlock run` do it.
    #[command(after_help = "Exit codes: 0 refreshed (or held without a lifetime), 3 no longer held by TOKEN
(broken as stale, or released), 2 malformed TOKEN, 4 outside the sandbox or I/O error.")]
    Refresh(PathToken),
    /// Tell whether TOKEN holds a lock
    ///
    /// Tells, by the exit code, whether the lock file PATH is held by TOKEN.
    #[command(after_help = "Exit codes: 0 held by TOKEN, 3 not held by TOKEN, 2 malformed TOKEN,
4 outside the sandbox or I/O error.")]
    Holds(PathToken),
    /// Show who holds a lock
    ///
    /// Prints the holder's token on stdout (or `foreign "..."` for another
    /// program's lock file), then the token of every shared holder (reader,
    /// or a semaphore's slot holder), one a line; a line on stderr for each
    /// says the prefix, the age, the lifetime, the last renewal, whether it
    /// is stale, and the fencing number (for a shared holder, its slot). Ages are read off the filesystem's clock through an
    /// empty probe file beside the lock, created and removed at once (this
    /// machine's clock in a read-only directory).
    #[command(after_help = r#"With --json, one JSON object instead, e.g.
  {"state":"held","token":"job-...","prefix":"job-","age_s":1.25,"stale_after_s":30.0,"renewed_s":0.5,"stale":false,"fence":7}
  {"state":"foreign","marker":"...","age_s":3.5}
  {"state":"shared","shared":[{"slot":0,"state":"held","token":"job-...","prefix":"job-","age_s":0.5,"stale_after_s":null,"renewed_s":null,"stale":false,"fence":null}]}
  {"state":"free"}
(a lock file's holder and shared holders together: "held", with a "shared" list)

Exit codes: 0 held (also only by shared holders), exits 1 when it is free, 2 invalid path, 4 outside the sandbox or I/O error."#)]
    Status {
        /// The lock file
        path: String,
        /// Print one JSON object on stdout instead
        #[arg(long)]
        json: bool,
    },
}

/// A lock file and the token that holds it.
#[derive(Args, Debug, PartialEq, Eq)]
pub struct PathToken {
    /// The lock file
    pub path: String,
    /// The owner token that `acquire` printed
    pub token: String,
}

/// How to acquire: the flags of `acquire` (and of every command that
/// acquires). SECS are decimal seconds, e.g. 0.25.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Put S before the random UUID in the token, to say who holds the lock
    /// (at most 64 printable ASCII bytes, no spaces or &, not starting with -)
    #[arg(long, value_name = "S", default_value = "", hide_default_value = true, allow_hyphen_values = true)]
    pub prefix: String,
    /// Wait this long after writing, then read the token back; protects
    /// against peers whose create is not atomic (Python uuid-filelock). 0 is
    /// safe when all peers create exclusively (at most 3600)
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = seconds)]
    pub verification_delay: Duration,
    /// Sleep this long between attempts (at most 3600)
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = seconds)]
    pub retry_interval: Duration,
    /// Give up after this long; 0 tries exactly once; any length is taken
    /// [default: wait forever]
    #[arg(long, value_name = "SECS", value_parser = seconds_or_forever)]
    pub timeout: Option<Duration>,
    /// The lock's lifetime: once it has gone this long without `uuidlock
    /// refresh`, contenders may break it (0.5 to 86400, and at least twice
    /// the verification delay; refreshed by hand, a second or more: ordinary
    /// load breaks shorter ones) [default: never broken]
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub stale_after: Option<Duration>,
    /// Do not wait in the queue of waiters: poll the lock every retry
    /// interval, as uuidlock 0.1 did (by default a waiter lines up, and only
    /// the first in line polls)
    #[arg(long)]
    pub no_queue: bool,
    /// How far apart the clocks that date the share's files may be (0 to
    /// 86400): on a share that dates files by each client's own clock
    /// (GlusterFS; `uuidlock doctor` tells), a lock is judged dead by its
    /// dates only after two lifetimes plus this
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = seconds)]
    pub max_clock_skew: Duration,
    /// Hold the lock shared: beside other shared holders (readers), never
    /// beside an exclusive holder (a writer: an acquire without --shared).
    /// A waiting writer is served before readers that come after it
    #[arg(long, conflicts_with = "slots")]
    pub shared: bool,
    /// A semaphore: at most N holders of PATH at once (1 to 1024; every
    /// holder must pass the same N); prints the holder's slot, 0 to N-1,
    /// after the token
    #[arg(long, value_name = "N")]
    pub slots: Option<u32>,
}

impl AcquireOptions {
    /// The protocol's options.
    pub fn options(&self) -> Options {
        Options {
            prefix: self.prefix.clone(),
            verification_delay: self.verification_delay,
            retry_interval: self.retry_interval,
            timeout: self.timeout,
            stale_after: self.stale_after,
            queue: !self.no_queue,
            max_clock_skew: self.max_clock_skew,
            mode: match (self.shared, self.slots) {
                (_, Some(n)) => Mode::Slots(n),
                (true, None) => Mode::Shared,
                (false, None) => Mode::Exclusive,
            },
        }
    }
}

/// The program's arguments as strings.
///
/// # Errors
/// A one-line message when one is not UTF-8 (lock paths and tokens must be:
/// WIT carries them as strings).
pub fn args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| format!("the argument {arg:?} is not valid UTF-8; lock paths and tokens must be UTF-8"))
        })
        .collect()
}

/// Parses `args` (the program name first) into `P`. `--help` and
/// `--version` are printed on `out`; a usage error becomes one line on
/// `err` that names the command's `--help`.
///
/// # Errors
/// The exit code to exit with: [`exit::OK`] after help or the version,
/// [`exit::USAGE`] after a usage error.
pub fn parse<P: Parser>(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<P, i32> {
    P::try_parse_from(args).map_err(|error| match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(out, "{error}");
            exit::OK
        }
        // No command at all: one line too, naming the commands (clap's
        // own message is the whole help).
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let command = command_path(P::command(), args);
            let mut found = P::command();
            for name in command.split(' ').skip(1) {
                found = found.find_subcommand(name).cloned().unwrap_or(found);
            }
            let names: Vec<&str> =
                found.get_subcommands().map(|sub| sub.get_name()).filter(|name| *name != "help").collect();
            let _ =
                writeln!(err, "uuidlock: a command is missing: one of {}; see '{command} --help'", names.join(", "));
            exit::USAGE
        }
        _ => {
            let command = command_path(P::command(), args);
            let _ = writeln!(err, "uuidlock: {}", usage_line(&error, &command));
            exit::USAGE
        }
    })
}

/// The command `args` name, as far as they name one: `uuidlock run` for
/// `uuidlock run PATH --conflict-exit-code 300 -- CMD`.
fn command_path(mut command: clap::Command, args: &[String]) -> String {
    let mut path = vec![command.get_name().to_owned()];
    for arg in args.iter().skip(1) {
        let Some(sub) = command.find_subcommand(arg).cloned() else { break };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}

/// A clap error as one line: what is wrong, clap's tip ("a similar argument
/// exists: '--timeout'"), and which `--help` to read (that of `command`).
/// Scripts and logs keep one line per failure, as for every other error.
fn usage_line(error: &clap::Error, command: &str) -> String {
    let rendered = error.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in rendered.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if line.starts_with("Usage: ") {
            // Named by `command` instead.
        } else if !line.starts_with("For more information") {
            let line = line.strip_prefix("error: ").unwrap_or(line);
            // "...were not provided:" and the list under it make one part.
            match parts.last_mut() {
                Some(last) if last.ends_with(':') => *last = format!("{last} {line}"),
                _ => parts.push(line.to_owned()),
            }
        }
    }
    parts.push(format!("see '{command} --help'"));
    parts.join("; ")
}

/// Parses decimal seconds: finite, not negative, representable.
///
/// # Errors
/// A message for clap to put after the flag and the value.
pub fn seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value.trim().parse().map_err(|_| "not a number of seconds (e.g. 0.5)".to_owned())?;
    if !secs.is_finite() || secs < 0.0 {
        return Err("must be a finite number of seconds, 0 or more".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| TOO_LARGE.into())
}

/// Parses decimal seconds as [`seconds`] does, taking a length too long to
/// represent (`1e300`) as forever: a timeout has no upper limit.
///
/// # Errors
/// A message for clap to put after the flag and the value.
pub fn seconds_or_forever(value: &str) -> Result<Duration, String> {
    match seconds(value) {
        Err(e) if e == TOO_LARGE => Ok(Duration::MAX),
        parsed => parsed,
    }
}

const TOO_LARGE: &str = "too large";

/// The exit code for an error.
pub fn exit_code(error: &LockError) -> i32 {
    match error {
        LockError::Timeout => exit::TIMEOUT_OR_FREE,
        LockError::NotOwner => exit::NOT_OWNER,
        LockError::AlreadyHeld(_)
        | LockError::InvalidPath(_)
        | LockError::InvalidOptions(_)
        | LockError::InvalidToken(_) => exit::USAGE,
        LockError::OutsideSandbox(_) | LockError::Io(_) => exit::IO,
    }
}

/// The guest command: parses `args` (the program name first) and runs the
/// lock command; returns the exit code.
pub fn main(args: &[String], backend: &mut dyn Backend, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match parse::<GuestArgs>(args, out, err) {
        Ok(parsed) => run(parsed.command, backend, out, err),
        Err(code) => code,
    }
}

/// Runs one lock command; returns the exit code. Failures are one line on
/// `err`.
pub fn run(command: LockCommand, backend: &mut dyn Backend, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let code = match execute(command, backend, out, err) {
        Ok(code) => code,
        Err(failure) => {
            let _ = writeln!(err, "uuidlock: {failure}");
            failure.code
        }
    };
    let _ = out.flush();
    code
}

/// A failure to report: the message for stderr and the exit code.
struct Failure {
    message: String,
    code: i32,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::format::one_line(&self.message))
    }
}

impl From<LockError> for Failure {
    fn from(error: LockError) -> Self {
        Failure { code: exit_code(&error), message: error.to_string() }
    }
}

fn execute(
    command: LockCommand,
    backend: &mut dyn Backend,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    let print = |out: &mut dyn Write, line: &str| {
        writeln!(out, "{line}").map_err(|e| Failure { message: format!("cannot write to stdout: {e}"), code: exit::IO })
    };
    let not_owner = |backend: &mut dyn Backend, path: &str, token: &str, what: &str| Failure {
        message: format!("{path} is not held by {token}{}; {what}", held_by(backend, path)),
        code: exit::NOT_OWNER,
    };
    match command {
        LockCommand::Acquire { path, options, fence } => match backend.acquire(&path, &options.options()) {
            Ok(Acquired { token, fence: number, slot }) => {
                let mut line = token.to_string();
                if fence {
                    line += &format!(" {number}");
                }
                if let Some(slot) = slot {
                    line += &format!(" {slot}");
                }
                print(out, &line).map(|()| exit::OK).map_err(|failure| {
                    // Nobody will see the token, so nobody could release the lock.
                    let undone = match backend.release(&path, token.as_str()) {
                        Ok(()) => "the lock was released again".to_owned(),
                        Err(e) => format!("the lock stays held by {token} ({e})"),
                    };
                    Failure { message: format!("{failure}; {undone}"), ..failure }
                })
            }
            Err(LockError::Timeout) => {
                let waited = options.timeout.unwrap_or_default();
                Err(Failure {
                    message: format!(
                        "timed out after {} s waiting for {path}{}; try again later or with a longer --timeout",
                        waited.as_secs_f64(),
                        held_by(backend, &path)
                    ),
                    code: exit::TIMEOUT_OR_FREE,
                })
            }
            Err(e) => Err(e.into()),
        },
        LockCommand::Release(PathToken { path, token }) => match backend.release(&path, &token) {
            Ok(()) => Ok(exit::OK),
            // Still ours: another release (or a breaker) holds the claim.
            Err(LockError::NotOwner) if backend.holds(&path, &token).unwrap_or(false) => Err(Failure {
                message: format!(
                    "{path} is held by {token}, but its claim {} is taken (by another release of this token, a \
                     breaker, a release killed midway, or someone who can write the directory); nothing was \
                     deleted. If no other release of this token runs, delete that file (its owner or root must, in \
                     a sticky directory) and release again",
                    Token::parse(&token).map(|token| crate::format::claim_path(&path, &token)).unwrap_or_default()
                ),
                code: exit::NOT_OWNER,
            }),
            Err(LockError::NotOwner) => Err(not_owner(backend, &path, &token, "nothing was deleted")),
            Err(e) => Err(e.into()),
        },
        LockCommand::Refresh(PathToken { path, token }) => match backend.refresh(&path, &token) {
            Ok(()) => Ok(exit::OK),
            Err(LockError::NotOwner) => Err(not_owner(backend, &path, &token, "it was broken as stale or released")),
            Err(e) => Err(e.into()),
        },
        LockCommand::Holds(PathToken { path, token }) => match backend.holds(&path, &token)? {
            true => Ok(exit::OK),
            false => Err(not_owner(backend, &path, &token, "this token does not hold it")),
        },
        LockCommand::Status { path, json } => {
            let status = backend.status(&path)?;
            let shared = backend.holders(&path)?;
            if json {
                let report = StatusReport::new(status.as_ref(), &shared);
                print(out, &serde_json::to_string(&report).expect("plain data serialises"))?;
            }
            match status {
                None if shared.is_empty() && json => Ok(exit::TIMEOUT_OR_FREE),
                None if shared.is_empty() => {
                    Err(Failure { message: format!("{path} is free"), code: exit::TIMEOUT_OR_FREE })
                }
                _ if json => Ok(exit::OK),
                status => {
                    // Tokens alone on stdout, for scripts; the rest, for
                    // people, as one line each on stderr.
                    if let Some(status) = status {
                        let _ = writeln!(err, "uuidlock: {}", one_line(&describe(&path, &status)));
                        match status.marker {
                            Marker::Uuidlock(held) => print(out, held.token.as_str())?,
                            Marker::Foreign(shown) => print(out, &format!("foreign {shown}"))?,
                        }
                    }
                    for (slot, status) in shared {
                        let what = format!("{path} (shared, slot {slot})");
                        let _ = writeln!(err, "uuidlock: {}", one_line(&describe(&what, &status)));
                        match status.marker {
                            Marker::Uuidlock(held) => print(out, held.token.as_str())?,
                            Marker::Foreign(shown) => print(out, &format!("foreign {shown}"))?,
                        }
                    }
                    Ok(exit::OK)
                }
            }
        }
    }
}

/// `status` for people: who holds the lock, since when, for how long.
fn describe(path: &str, status: &Status) -> String {
    let age = status.age.as_secs_f64();
    match &status.marker {
        Marker::Uuidlock(held) => {
            let lifetime = match (held.stale_after, status.renewed) {
                (Some(lifetime), _) if status.stale => format!(
                    "; stale: not renewed within its {}s lifetime, so the next acquire breaks it (if that user \
                     may delete it: in a sticky directory only its owner, the directory's owner or root may)",
                    lifetime.as_secs_f64()
                ),
                (Some(lifetime), Some(renewed)) => format!(
                    "; breakable after {}s without a renewal, renewed {:.1}s ago",
                    lifetime.as_secs_f64(),
                    renewed.as_secs_f64()
                ),
                (Some(lifetime), None) => {
                    format!("; breakable after {}s without a renewal, not renewed yet", lifetime.as_secs_f64())
                }
                (None, _) => "; never broken as stale".into(),
            };
            let fence = status.fence.map_or(String::new(), |fence| format!(", fence {fence}"));
            format!(
                "{path} is held by {} (prefix {:?}{fence}), taken {age:.1}s ago{lifetime}",
                held.token,
                held.token.prefix()
            )
        }
        Marker::Foreign(_) => format!("{path} is held by another program, last written {age:.1}s ago"),
    }
}

/// `status --json`: one object, the same fields for every holder.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StatusJson {
    /// Held by uuidlock.
    Held {
        token: String,
        prefix: String,
        /// Seconds since the lock file was last written, to the millisecond.
        age_s: f64,
        /// The lifetime in seconds, or null for a lock never broken as stale.
        stale_after_s: Option<f64>,
        /// Seconds since the holder's last renewal; null before the first.
        renewed_s: Option<f64>,
        /// Whether it has gone two lifetimes without a renewal: the next
        /// acquire breaks it.
        stale: bool,
        /// The latest fencing number taken for this path: the holder's
        /// (larger only if a stalled former holder took one since).
        fence: Option<u64>,
    },
    /// Held by another program: its marker, quoted and shortened.
    Foreign {
        marker: String,
        age_s: f64,
    },
    /// Free of an exclusive holder, held by shared holders (listed beside).
    Shared,
    Free,
}

/// `status --json`: the lock file's holder ([`StatusJson`]), and the
/// shared holders, if any, under `"shared"`. With shared holders only, the
/// state is `"shared"`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StatusReport {
    #[serde(flatten)]
    pub lock: StatusJson,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedJson>,
}

/// A shared holder, in `status --json`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct SharedJson {
    /// Its index: a semaphore's slot.
    pub slot: u32,
    #[serde(flatten)]
    pub holder: StatusJson,
}

impl StatusReport {
    pub fn new(status: Option<&Status>, shared: &[(u32, Status)]) -> StatusReport {
        let lock = match (status, shared.is_empty()) {
            (None, false) => StatusJson::Shared,
            (status, _) => StatusJson::new(status),
        };
        let shared = shared
            .iter()
            .map(|(slot, status)| SharedJson { slot: *slot, holder: StatusJson::new(Some(status)) })
            .collect();
        StatusReport { lock, shared }
    }
}

impl StatusJson {
    pub fn new(status: Option<&Status>) -> StatusJson {
        let Some(Status { marker, age, renewed, stale, fence }) = status else { return StatusJson::Free };
        let seconds = |duration: &Duration| duration.as_millis() as f64 / 1e3;
        let age_s = seconds(age);
        match marker {
            Marker::Uuidlock(held) => StatusJson::Held {
                token: held.token.as_str().into(),
                prefix: held.token.prefix().into(),
                age_s,
                stale_after_s: held.stale_after.map(|lifetime| lifetime.as_secs_f64()),
                renewed_s: renewed.as_ref().map(seconds),
                stale: *stale,
                fence: *fence,
            },
            Marker::Foreign(shown) => StatusJson::Foreign { marker: shown.clone(), age_s },
        }
    }
}

/// " (held by X)" or " (it is free)", best effort, for messages.
fn held_by(backend: &mut dyn Backend, path: &str) -> String {
    match backend.status(path) {
        Ok(Some(Status { marker: Marker::Uuidlock(held), .. })) => format!(" (held by {})", held.token),
        Ok(Some(Status { marker: Marker::Foreign(shown), .. })) => format!(" (held by another program: {shown})"),
        Ok(None) => match backend.holders(path).map(|holders| holders.len()) {
            Ok(0) => " (it is free)".into(),
            Ok(1) => " (held by 1 shared holder)".into(),
            Ok(n) => format!(" (held by {n} shared holders)"),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Token;

    fn args(line: &str) -> Vec<String> {
        std::iter::once("uuidlock").chain(line.split_whitespace()).map(String::from).collect()
    }

    /// Parses `line` as the guest command does: the command, or the exit
    /// code and what was printed (stdout, stderr).
    fn parsed(line: &str) -> Result<LockCommand, (i32, String, String)> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        parse::<GuestArgs>(&args(line), &mut out, &mut err)
            .map(|parsed| parsed.command)
            .map_err(|code| (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap()))
    }

    #[test]
    fn acquire_takes_all_options_in_both_spellings() {
        let parsed = parsed(
            "acquire /l/x.lock --prefix job- --verification-delay=0 --retry-interval 0.25 --timeout 3 --fence \
             --max-clock-skew=2.5",
        );
        let Ok(LockCommand::Acquire { path, options, fence: true }) = parsed else { panic!("{parsed:?}") };
        let expected = Options {
            prefix: "job-".into(),
            verification_delay: Duration::ZERO,
            retry_interval: Duration::from_millis(250),
            timeout: Some(Duration::from_secs(3)),
            stale_after: None,
            queue: true,
            max_clock_skew: Duration::from_millis(2500),
            mode: Mode::Exclusive,
        };
        assert_eq!((path.as_str(), options.options()), ("/l/x.lock", expected));
    }

    #[test]
    fn defaults_are_the_protocols() {
        let Ok(LockCommand::Acquire { options, .. }) = parsed("acquire x") else { panic!() };
        assert_eq!(options.options(), Options::default());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        for bad in ["-1", "NaN", "inf", "abc", "", "1e400"] {
            let result = parse::<GuestArgs>(
                &["uuidlock", "acquire", "x", "--timeout", bad].map(String::from),
                &mut Vec::new(),
                &mut Vec::new(),
            );
            assert_eq!(result.err(), Some(exit::USAGE), "--timeout {bad:?} was accepted");
        }
    }

    #[test]
    fn wrong_shapes_are_one_line_usage_errors() {
        for line in [
            "",
            "frobnicate x",
            "acquire",
            "acquire a b",
            "release x",
            "release x t extra",
            "status x --timeout 1",
            "acquire x --timeout",
            "acquire x --timeout 1 --timeout 2",
            "refresh x",
            "holds x",
            "status x --json=yes",
            "acquire x --stale-after -3",
            "acquire x --bogus 1",
            "status --=x y",
        ] {
            let Err((code, out, err)) = parsed(line) else { panic!("{line:?} was accepted") };
            assert_eq!((code, out.as_str(), err.lines().count()), (exit::USAGE, "", 1), "{line:?}: {err}");
            assert!(err.starts_with("uuidlock: ") && err.contains("--help'"), "{line:?}: {err}");
        }
    }

    #[test]
    fn a_mistyped_flag_gets_a_suggestion_and_the_commands_help() {
        let Err((_, _, err)) = parsed("acquire x --timout 1") else { panic!() };
        assert!(err.contains("'--timeout'") && err.contains("see 'uuidlock acquire --help'"), "{err}");
        let Err((_, _, err)) = parsed("aquire x") else { panic!() };
        assert!(err.contains("'acquire'"), "{err}");
    }

    #[test]
    fn help_and_version_go_to_stdout_with_exit_0() {
        for (line, expected) in [
            ("--help", "Exit codes"),
            ("acquire --help", "--verification-delay"),
            ("release -h", "TOKEN"),
            ("status x --help", "exits 1 when it is free"),
            ("--version", env!("CARGO_PKG_VERSION")),
        ] {
            let Err((code, out, err)) = parsed(line) else { panic!("{line}") };
            assert_eq!((code, err.as_str()), (exit::OK, ""), "{line}");
            assert!(out.contains(expected), "{line}: {out}");
        }
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(parsed("status -- --odd-name"), Ok(LockCommand::Status { path: "--odd-name".into(), json: false }));
    }

    #[test]
    fn status_json_round_trips_with_escaped_strings() {
        assert_eq!(parsed("status x --json"), Ok(LockCommand::Status { path: "x".into(), json: true }));
        assert_eq!(serde_json::to_string(&StatusJson::new(None)).unwrap(), r#"{"state":"free"}"#);
        let token = Token::parse("a\"b\\-7c9e6679-7425-40de-944b-e07a4b7b7bd1").unwrap();
        let held = crate::format::Held { token, stale_after: Some(Duration::from_millis(1500)) };
        let status = Status {
            marker: Marker::Uuidlock(held),
            age: Duration::from_micros(250_400),
            renewed: Some(Duration::from_millis(100)),
            stale: false,
            fence: Some(7),
        };
        let json = serde_json::to_string(&StatusJson::new(Some(&status))).unwrap();
        assert_eq!(
            json,
            r#"{"state":"held","token":"a\"b\\-7c9e6679-7425-40de-944b-e07a4b7b7bd1","prefix":"a\"b\\-","age_s":0.25,"stale_after_s":1.5,"renewed_s":0.1,"stale":false,"fence":7}"#
        );
        assert_eq!(serde_json::from_str::<StatusJson>(&json).unwrap(), StatusJson::new(Some(&status)));
    }

    /// Stdout closed under us (a broken pipe).
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_token_nobody_can_read_is_released_again() {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("job.lock");
        let path = path.to_str().unwrap();
        let mut err = Vec::new();
        let code = main(&args(&format!("acquire {path} --verification-delay 0")), &mut Direct, &mut Closed, &mut err);
        assert_eq!(code, exit::IO);
        assert!(String::from_utf8_lossy(&err).contains("released again"));
        assert!(!std::path::Path::new(path).exists());
    }

    #[test]
    fn every_error_has_its_documented_exit_code() {
        let why = || String::from("why");
        assert_eq!(exit_code(&LockError::Timeout), 1);
        assert_eq!(exit_code(&LockError::InvalidPath(why())), 2);
        assert_eq!(exit_code(&LockError::InvalidOptions(why())), 2);
        assert_eq!(exit_code(&LockError::InvalidToken(why())), 2);
        assert_eq!(exit_code(&LockError::NotOwner), 3);
        assert_eq!(exit_code(&LockError::OutsideSandbox(why())), 4);
        assert_eq!(exit_code(&LockError::Io(why())), 4);
    }
}
