//! `release-by-token LOCK TOKEN`: releases the lock held with TOKEN, which
//! a plugin can learn from `status`: what a hostile plugin tries on a lock
//! that is not its own. Prints `released`, or the error; exits 0 or 1.

use std::process::ExitCode;

wit_bindgen::generate!({ path: "../../wit", world: "uuidlock:lock/plugin@0.3.0" });

use uuidlock::lock::lock::release;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, lock, token] = args.as_slice() else {
        eprintln!("usage: release-by-token LOCK TOKEN");
        return ExitCode::from(2);
    };
    match release(lock, token) {
        Ok(()) => {
            println!("released");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e:?}");
            ExitCode::FAILURE
        }
    }
}
