//! The guest command: `wasmtime run --dir HOST::GUEST uuidlock.wasm acquire GUEST/job.lock`.
//! Paths are resolved against the preopened directories.

use std::io::Write;
use std::process::exit;

use uuidlock::cli;

fn main() {
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let Ok(args) = args else {
        eprintln!("uuidlock: an argument is not valid UTF-8; lock paths and tokens must be UTF-8");
        exit(cli::exit::USAGE);
    };
    let code = cli::run(&args, &mut cli::Direct, "", &mut std::io::stdout(), &mut std::io::stderr());
    let _ = std::io::stdout().flush();
    exit(code);
}
