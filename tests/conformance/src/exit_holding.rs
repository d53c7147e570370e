//! `exit-holding LOCK STATUS`: takes the lock with a guard, says so on
//! stdout, and exits with STATUS while the guard still holds it, as a
//! plugin that calls `std::process::exit` (or leaks its guard) does. A host
//! that provides the lock releases it when the plugin's store goes; a host
//! that passes the status on exits with 0 for 0 and 1 for any other (WASI
//! 0.2 carries only success or failure).

use std::process::ExitCode;

wit_bindgen::generate!({ path: "../../wit", world: "uuidlock:lock/plugin@0.3.0" });

use uuidlock::lock::lock::{default_options, Guard};
use uuidlock::lock::types::Options;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, lock, status] = args.as_slice() else {
        eprintln!("usage: exit-holding LOCK STATUS");
        return ExitCode::from(2);
    };
    let Ok(status) = status.parse::<i32>() else {
        eprintln!("exit-holding: STATUS must be a whole number, not {status:?}");
        return ExitCode::from(2);
    };
    let options = Options { timeout_ns: Some(0), ..default_options() };
    let guard = match Guard::acquire(lock, &options) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("exit-holding: {e:?}");
            return ExitCode::FAILURE;
        }
    };
    println!("holding {lock} with {}", guard.token());
    std::process::exit(status)
}
