//! The guest command: `wasmtime run --dir HOST::GUEST uuidlock.wasm acquire GUEST/job.lock`.
//! Paths are resolved against the preopened directories.

use std::process::exit;

use uuidlock::cli;

fn main() {
    let code = match cli::args() {
        Ok(args) => cli::main(&args, &mut cli::Direct, &mut std::io::stdout(), &mut std::io::stderr()),
        Err(message) => {
            eprintln!("uuidlock: {message}");
            cli::exit::USAGE
        }
    };
    exit(code);
}
