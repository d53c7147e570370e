//! The command-line contract, shared by the guest command (`uuidlock.wasm`
//! under `wasmtime run`) and the native `uuidlock` binary: the same parsing,
//! output, messages and exit codes. Only the [`Backend`] differs: the guest
//! runs the protocol directly, the native binary runs it in the component.

use std::io::Write;
use std::time::Duration;

use crate::format::{Marker, Token};
use crate::protocol::{self, Status};
use crate::{LockError, Options};

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
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Token, LockError>;
    /// See [`protocol::release`].
    fn release(&mut self, path: &str, token: &str) -> Result<(), LockError>;
    /// See [`protocol::refresh`].
    fn refresh(&mut self, path: &str, token: &str) -> Result<(), LockError>;
    /// See [`protocol::holds`].
    fn holds(&mut self, path: &str, token: &str) -> Result<bool, LockError>;
    /// See [`protocol::status`].
    fn status(&mut self, path: &str) -> Result<Option<Status>, LockError>;
}

/// Runs the protocol in this process (in the guest: inside the sandbox).
pub struct Direct;

impl Backend for Direct {
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Token, LockError> {
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
}

/// A parsed lock command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `uuidlock acquire PATH [options]`
    Acquire { path: String, options: Options },
    /// `uuidlock release PATH TOKEN`
    Release { path: String, token: String },
    /// `uuidlock refresh PATH TOKEN`
    Refresh { path: String, token: String },
    /// `uuidlock holds PATH TOKEN`
    Holds { path: String, token: String },
    /// `uuidlock status PATH [--json]`
    Status { path: String, json: bool },
    /// `--help`, for a command or for all of them: the text to print.
    Help(&'static str),
}

/// The lock commands' part of `uuidlock --help`.
pub const USAGE: &str = "\
uuidlock: a cross-process lock file that needs no locking support from the filesystem

Usage:
  uuidlock acquire PATH [--prefix S] [--verification-delay SECS] [--retry-interval SECS]
                        [--timeout SECS] [--stale-after SECS]
  uuidlock release PATH TOKEN
  uuidlock refresh PATH TOKEN
  uuidlock holds PATH TOKEN
  uuidlock status PATH [--json]
  uuidlock COMMAND --help

Exit codes:
  0  done (acquire: the owner token on stdout; status: held, the holder on stdout)
  1  acquire timed out (--timeout 0 tries once); status: the lock is free
  2  usage error or invalid value; message on stderr
  3  release, refresh, holds: the lock is not held by TOKEN; nothing was deleted
  4  the path is outside the sandbox's directories, or an I/O error; message on stderr
";

const ACQUIRE_HELP: &str = "\
uuidlock acquire PATH [--prefix S] [--verification-delay SECS] [--retry-interval SECS]
                      [--timeout SECS] [--stale-after SECS]

Takes the lock file PATH and prints the owner token alone on stdout; keep it
for `uuidlock release PATH TOKEN`.

Options (SECS are decimal seconds, e.g. 0.25):
  --prefix S                 put S before the random UUID in the token, to say
                             who holds the lock (at most 64 printable ASCII
                             bytes, no spaces, not starting with -)
                             [default: none]
  --verification-delay SECS  wait this long after writing, then read the token
                             back; protects against peers whose create is not
                             atomic (Python uuid-filelock). 0 is safe when all
                             peers create exclusively [default: 0.1]
  --retry-interval SECS      sleep between attempts [default: 0.1]
  --timeout SECS             give up after this long; 0 tries exactly once
                             [default: wait forever]
  --stale-after SECS         the lock's lifetime: once it has gone this long
                             without `uuidlock refresh`, contenders may break
                             it (0.01 to 86400; a second or more is wise;
                             needs hard links) [default: never broken]

Exit codes: 0 acquired, 1 timed out, 2 invalid value, 4 outside the sandbox or I/O error.
";

const RELEASE_HELP: &str = "\
uuidlock release PATH TOKEN

Deletes the lock file PATH if, and only if, it holds TOKEN.

Exit codes: 0 released, 3 not held by TOKEN (nothing deleted; also when the
lock was broken as stale), 2 malformed TOKEN, 4 outside the sandbox or I/O error.
";

const REFRESH_HELP: &str = "\
uuidlock refresh PATH TOKEN

Extends the lifetime of a lock taken with --stale-after: contenders see that
its holder is alive. Refresh well within the lifetime (every third of it).

Exit codes: 0 refreshed (or held without a lifetime), 3 no longer held by TOKEN
(broken as stale, or released), 2 malformed TOKEN, 4 outside the sandbox or I/O error.
";

const HOLDS_HELP: &str = "\
uuidlock holds PATH TOKEN

Tells whether the lock file PATH is held by TOKEN.

Exit codes: 0 held by TOKEN, 3 not held by TOKEN, 2 malformed TOKEN,
4 outside the sandbox or I/O error.
";

const STATUS_HELP: &str = "\
uuidlock status PATH [--json]

Prints the holder's token on stdout (or `foreign \"...\"` for another program's
lock file) and exits 0 when the lock is held; exits 1 when it is free. A line
on stderr says the rest: the prefix, the lock's age, its lifetime and refreshes.
With --json, prints one JSON object instead, e.g.
  {\"state\":\"held\",\"token\":\"job-...\",\"prefix\":\"job-\",\"age_s\":1.25,\"stale_after_s\":30,\"refreshes\":2}
  {\"state\":\"foreign\",\"marker\":\"...\",\"age_s\":3.5}
  {\"state\":\"free\"}

Exit codes: 0 held, 1 free, 2 invalid path, 4 outside the sandbox or I/O error.
";

/// What one command takes.
struct Spec {
    help: &'static str,
    /// Names of the positional arguments.
    positional: &'static [&'static str],
    /// Options that take a value.
    valued: &'static [&'static str],
    /// Options that take none.
    switches: &'static [&'static str],
}

fn spec(command: &str) -> Option<Spec> {
    const PATH_TOKEN: &[&str] = &["PATH", "TOKEN"];
    let token_command = |help| Spec { help, positional: PATH_TOKEN, valued: &[], switches: &[] };
    Some(match command {
        "acquire" => Spec {
            help: ACQUIRE_HELP,
            positional: &["PATH"],
            valued: &["--prefix", "--verification-delay", "--retry-interval", "--timeout", "--stale-after"],
            switches: &[],
        },
        "release" => token_command(RELEASE_HELP),
        "refresh" => token_command(REFRESH_HELP),
        "holds" => token_command(HOLDS_HELP),
        "status" => Spec { help: STATUS_HELP, positional: &["PATH"], valued: &[], switches: &["--json"] },
        _ => return None,
    })
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A one-line message for stderr; the exit code is [`exit::USAGE`].
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given; see 'uuidlock --help'".into());
    };
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        return Ok(Command::Help(USAGE));
    }
    let Some(spec) = spec(command) else {
        return Err(format!("unknown command {command:?}; see 'uuidlock --help'"));
    };
    let see = || format!("see 'uuidlock {command} --help'");
    let mut positional = Vec::new();
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut words = rest.iter();
    let mut options_done = false;
    while let Some(word) = words.next() {
        if options_done || !word.starts_with("--") && word != "-h" {
            positional.push(word.clone());
            continue;
        }
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (word.as_str(), None),
        };
        if values.iter().any(|(seen, _)| *seen == flag) {
            return Err(format!("{flag} is given twice; {}", see()));
        }
        match flag {
            "--" if inline.is_some() => return Err(format!("{word:?} is not an option; {}", see())),
            "--" => options_done = true,
            "-h" | "--help" => return Ok(Command::Help(spec.help)),
            _ if spec.switches.contains(&flag) && inline.is_none() => values.push((flag, String::new())),
            _ if spec.valued.contains(&flag) => {
                let Some(value) = inline.or_else(|| words.next().cloned()) else {
                    return Err(format!("{flag} needs a value; {}", see()));
                };
                values.push((flag, value));
            }
            _ => return Err(format!("unknown option {flag} for {command}; {}", see())),
        }
    }
    if positional.len() != spec.positional.len() {
        return Err(format!(
            "{command} takes {}, got {} argument(s); {}",
            spec.positional.join(" and "),
            positional.len(),
            see()
        ));
    }
    let mut options = Options::default();
    for (flag, value) in &values {
        match *flag {
            "--prefix" => options.prefix = value.clone(),
            "--verification-delay" => options.verification_delay = seconds(flag, value)?,
            "--retry-interval" => options.retry_interval = seconds(flag, value)?,
            "--timeout" => options.timeout = Some(seconds(flag, value)?),
            "--stale-after" => options.stale_after = Some(seconds(flag, value)?),
            _ => {}
        }
    }
    let mut positional = positional.into_iter();
    let path = positional.next().unwrap_or_default();
    let token = positional.next().unwrap_or_default();
    Ok(match command.as_str() {
        "acquire" => Command::Acquire { path, options },
        "release" => Command::Release { path, token },
        "refresh" => Command::Refresh { path, token },
        "holds" => Command::Holds { path, token },
        _ => Command::Status { path, json: !values.is_empty() },
    })
}

/// Parses decimal seconds: finite, not negative, representable.
///
/// # Errors
/// A one-line message naming `flag`.
pub fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    let secs: f64 =
        value.trim().parse().map_err(|_| format!("{flag} {value:?} is not a number of seconds (e.g. 0.5)"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{flag} {value:?} must be a finite number of seconds, 0 or more"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag} {value:?} is too large"))
}

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

/// Parses and runs one command; returns the exit code. `more_help` is added
/// to the top-level `--help` (the native binary's own commands).
pub fn run(
    args: &[String],
    backend: &mut dyn Backend,
    more_help: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result = parse(args)
        .map_err(|message| Failure { message, code: exit::USAGE })
        .and_then(|command| execute(command, backend, more_help, out, err));
    let code = match result {
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
        f.write_str(&self.message)
    }
}

impl From<LockError> for Failure {
    fn from(error: LockError) -> Self {
        Failure { code: exit_code(&error), message: error.to_string() }
    }
}

fn execute(
    command: Command,
    backend: &mut dyn Backend,
    more_help: &str,
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
        Command::Help(text) => {
            print(out, text.trim_end())?;
            if text == USAGE && !more_help.is_empty() {
                print(out, &format!("\n{}", more_help.trim_end()))?;
            }
            Ok(exit::OK)
        }
        Command::Acquire { path, options } => match backend.acquire(&path, &options) {
            Ok(token) => print(out, token.as_str()).map(|()| exit::OK).map_err(|failure| {
                // Nobody will see the token, so nobody could release the lock.
                let undone = match backend.release(&path, token.as_str()) {
                    Ok(()) => "the lock was released again".to_owned(),
                    Err(e) => format!("the lock stays held by {token} ({e})"),
                };
                Failure { message: format!("{failure}; {undone}"), ..failure }
            }),
            Err(LockError::Timeout) => {
                let waited = options.timeout.unwrap_or_default();
                Err(Failure {
                    message: format!(
                        "timed out after {waited:?} waiting for {path}{}; try again later or with a longer --timeout",
                        held_by(backend, &path)
                    ),
                    code: exit::TIMEOUT_OR_FREE,
                })
            }
            Err(e) => Err(e.into()),
        },
        Command::Release { path, token } => match backend.release(&path, &token) {
            Ok(()) => Ok(exit::OK),
            Err(LockError::NotOwner) => Err(not_owner(backend, &path, &token, "nothing was deleted")),
            Err(e) => Err(e.into()),
        },
        Command::Refresh { path, token } => match backend.refresh(&path, &token) {
            Ok(()) => Ok(exit::OK),
            Err(LockError::NotOwner) => Err(not_owner(backend, &path, &token, "it was broken as stale or released")),
            Err(e) => Err(e.into()),
        },
        Command::Holds { path, token } => match backend.holds(&path, &token)? {
            true => Ok(exit::OK),
            false => Err(not_owner(backend, &path, &token, "this token does not hold it")),
        },
        Command::Status { path, json } => {
            let status = backend.status(&path)?;
            if json {
                print(out, &status_json(status.as_ref()))?;
            }
            match status {
                None if json => Ok(exit::TIMEOUT_OR_FREE),
                None => Err(Failure { message: format!("{path} is free"), code: exit::TIMEOUT_OR_FREE }),
                Some(_) if json => Ok(exit::OK),
                Some(status) => {
                    // The token alone on stdout, for scripts; the rest, for
                    // people, as one line on stderr.
                    let _ = writeln!(err, "uuidlock: {}", describe(&path, &status));
                    match status.marker {
                        Marker::Uuidlock(held) => print(out, held.token.as_str()),
                        Marker::Foreign(shown) => print(out, &format!("foreign {shown}")),
                    }
                    .map(|()| exit::OK)
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
            let lifetime = match held.stale_after {
                Some(lifetime) => format!(
                    "; breakable after {}s without a refresh, refreshed {} time(s)",
                    lifetime.as_secs_f64(),
                    held.refreshes
                ),
                None => "; never broken as stale".into(),
            };
            format!(
                "{path} is held by {} (prefix {:?}), last written {age:.1}s ago{lifetime}",
                held.token,
                held.token.prefix()
            )
        }
        Marker::Foreign(_) => format!("{path} is held by another program, last written {age:.1}s ago"),
    }
}

/// `status --json`: one object, the same fields for every holder.
fn status_json(status: Option<&Status>) -> String {
    let Some(Status { marker, age }) = status else { return r#"{"state":"free"}"#.into() };
    let age = age.as_secs_f64();
    match marker {
        Marker::Uuidlock(held) => format!(
            r#"{{"state":"held","token":{},"prefix":{},"age_s":{age:.3},"stale_after_s":{},"refreshes":{}}}"#,
            json_string(held.token.as_str()),
            json_string(held.token.prefix()),
            held.stale_after.map_or("null".into(), |lifetime| format!("{}", lifetime.as_secs_f64())),
            held.refreshes
        ),
        Marker::Foreign(shown) => format!(r#"{{"state":"foreign","marker":{},"age_s":{age:.3}}}"#, json_string(shown)),
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if u32::from(c) < 0x20 => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// " (held by X)" or " (it is free)", best effort, for messages.
fn held_by(backend: &mut dyn Backend, path: &str) -> String {
    match backend.status(path) {
        Ok(Some(Status { marker: Marker::Uuidlock(held), .. })) => format!(" (held by {})", held.token),
        Ok(Some(Status { marker: Marker::Foreign(shown), .. })) => format!(" (held by another program: {shown})"),
        Ok(None) => " (it is free)".into(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn acquire_takes_all_options_in_both_spellings() {
        let parsed =
            parse(&args("acquire /l/x.lock --prefix job- --verification-delay=0 --retry-interval 0.25 --timeout 3"));
        let expected = Options {
            prefix: "job-".into(),
            verification_delay: Duration::ZERO,
            retry_interval: Duration::from_millis(250),
            timeout: Some(Duration::from_secs(3)),
            stale_after: None,
        };
        assert_eq!(parsed, Ok(Command::Acquire { path: "/l/x.lock".into(), options: expected }));
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        for bad in ["-1", "NaN", "inf", "abc", "", "1e400"] {
            let result = parse(&["acquire".into(), "x".into(), "--timeout".into(), bad.into()]);
            assert!(result.is_err(), "--timeout {bad:?} was accepted");
        }
    }

    #[test]
    fn wrong_shapes_are_usage_errors() {
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
            assert!(parse(&args(line)).is_err(), "{line:?} was accepted");
        }
    }

    #[test]
    fn help_is_there_for_every_command() {
        for line in ["--help", "acquire --help", "release -h", "status x --help"] {
            assert!(matches!(parse(&args(line)), Ok(Command::Help(_))), "{line}");
        }
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            parse(&args("status -- --odd-name")),
            Ok(Command::Status { path: "--odd-name".into(), json: false })
        );
    }

    #[test]
    fn status_json_is_one_object_with_escaped_strings() {
        assert_eq!(parse(&args("status x --json")), Ok(Command::Status { path: "x".into(), json: true }));
        assert_eq!(status_json(None), r#"{"state":"free"}"#);
        let token = Token::parse("a\"b\\-7c9e6679-7425-40de-944b-e07a4b7b7bd1").unwrap();
        let held = crate::format::Held { token, stale_after: Some(Duration::from_millis(1500)), refreshes: 2 };
        let json = status_json(Some(&Status { marker: Marker::Uuidlock(held), age: Duration::from_millis(250) }));
        assert_eq!(
            json,
            r#"{"state":"held","token":"a\"b\\-7c9e6679-7425-40de-944b-e07a4b7b7bd1","prefix":"a\"b\\-","age_s":0.250,"stale_after_s":1.5,"refreshes":2}"#
        );
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        let path = path.to_str().unwrap();
        let mut err = Vec::new();
        let code =
            run(&args(&format!("acquire {path} --verification-delay 0")), &mut Direct, "", &mut Closed, &mut err);
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
