//! An example plugin: takes the lock N times and, holding it, adds one to a
//! counter file, the read-modify-write that two plugins in two processes
//! would corrupt without the lock.
//!
//! `counter-plugin LOCK COUNTER N` prints one line per turn:
//! `ENTER_NS EXIT_NS FENCE` (wall-clock nanoseconds when it held the lock,
//! and the acquisition's fencing number), so that a test can check that no
//! two turns overlapped and that fences rose turn after turn.
//!
//! Its world is uuidlock's `plugin`: it imports `uuidlock:lock/lock`, which
//! `uuidlock compose` joins in (or a host provides).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

wit_bindgen::generate!({ path: "../../wit", world: "uuidlock:lock/plugin@0.3.0" });

use uuidlock::lock::lock::{default_options, Guard};
use uuidlock::lock::types::Error;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, lock, counter, turns] = args.as_slice() else {
        eprintln!("usage: counter-plugin LOCK COUNTER N");
        return ExitCode::from(2);
    };
    let Ok(turns) = turns.parse::<u32>() else {
        eprintln!("counter-plugin: N must be a whole number, not {turns:?}");
        return ExitCode::from(2);
    };
    let mut options = default_options();
    options.prefix = "counter-plugin-".into();
    options.verification_delay_ns = 0;
    options.retry_interval_ns = 1_000_000;
    options.timeout_ns = Some(60_000_000_000);
    for _ in 0..turns {
        if let Err(why) = turn(lock, counter, &options) {
            eprintln!("counter-plugin: {why}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// One turn: the lock taken, the counter incremented, the lock released
/// when the guard drops at the end of the function.
fn turn(lock: &str, counter: &str, options: &uuidlock::lock::types::Options) -> Result<(), String> {
    let guard = Guard::acquire(lock, options).map_err(|e| message(&e))?;
    let enter = now_ns();
    let count: u64 = match std::fs::read_to_string(counter) {
        Ok(text) => text.trim().parse().map_err(|_| format!("{counter} holds {text:?}, not a number"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("cannot read {counter}: {e}")),
    };
    std::fs::write(counter, format!("{}\n", count + 1)).map_err(|e| format!("cannot write {counter}: {e}"))?;
    let exit = now_ns();
    println!("{enter} {exit} {}", guard.fence());
    Ok(())
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn message(error: &Error) -> String {
    match error {
        Error::Timeout => "the lock stayed busy past the timeout".into(),
        Error::NotOwner => "the lock is no longer ours".into(),
        Error::AlreadyHeld(why)
        | Error::InvalidPath(why)
        | Error::InvalidOptions(why)
        | Error::InvalidToken(why)
        | Error::OutsideSandbox(why)
        | Error::Io(why) => why.clone(),
    }
}
