//! The native `uuidlock`: the shared lock commands, run inside the component
//! with exactly the lock file's directory granted, plus `contend`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::exit;

use uuidlock_host::{bench, cli, contend, engine, paths, LockError, Locker, Options, Runtime, Status, Token};

/// The native binary's own commands, added to `uuidlock --help`.
const NATIVE_HELP: &str = "\
Native commands:
  uuidlock contend [options]   cross-process contention run; see 'uuidlock contend --help'
  uuidlock bench [options]     side-by-side benchmark; see 'uuidlock bench --help'
  uuidlock export DIR          write the embedded uuidlock.wasm (command module) and
                               uuidlock.component.wasm (component) into DIR

The native binary runs the lock inside wasmtime: PATH is a host path, and the guest
is granted only the directory that holds it.
";

/// Runs each call in the component, granting the lock file's directory.
#[derive(Default)]
struct NativeBackend {
    runtime: Option<Runtime>,
    lockers: HashMap<PathBuf, Locker>,
}

impl NativeBackend {
    /// The locker for `path`'s directory and the path the guest should use.
    fn locker_for(&mut self, path: &str) -> Result<(Locker, PathBuf), LockError> {
        let (file, dir) = paths::lock_file_and_dir(Path::new(path))?;
        if self.runtime.is_none() {
            let runtime = Runtime::new().map_err(|e| LockError::Io(format!("cannot start the wasm runtime: {e:#}")))?;
            self.runtime = Some(runtime);
        }
        let runtime = self.runtime.as_ref().expect("set above");
        let locker = match self.lockers.get(&dir) {
            Some(locker) => locker.clone(),
            None => {
                let locker = Locker::new(runtime, &[&dir])
                    .map_err(|e| LockError::Io(format!("cannot grant {}: {e:#}", dir.display())))?;
                self.lockers.insert(dir, locker.clone());
                locker
            }
        };
        Ok((locker, file))
    }
}

impl cli::Backend for NativeBackend {
    fn acquire(&mut self, path: &str, options: &Options) -> Result<Token, LockError> {
        let (locker, file) = self.locker_for(path)?;
        Ok(locker.acquire(file, options)?.into_token())
    }
    fn release(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.release(file, token)
    }
    fn refresh(&mut self, path: &str, token: &str) -> Result<(), LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.refresh(file, token)
    }
    fn holds(&mut self, path: &str, token: &str) -> Result<bool, LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.holds(file, token)
    }
    fn status(&mut self, path: &str) -> Result<Option<Status>, LockError> {
        let (locker, file) = self.locker_for(path)?;
        locker.status(file)
    }
}

fn main() {
    let args: Result<Vec<String>, _> = std::env::args_os().skip(1).map(|a| a.into_string()).collect();
    let Ok(args) = args else {
        eprintln!("uuidlock: an argument is not valid UTF-8; lock paths and tokens must be UTF-8");
        exit(cli::exit::USAGE);
    };
    let code = match args.first().map(String::as_str) {
        Some("contend") => contend::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("export") => export(&args[1..]),
        Some(contend::WORKER_COMMAND) => contend::worker_main(&args[1..]),
        _ => {
            cli::run(&args, &mut NativeBackend::default(), NATIVE_HELP, &mut std::io::stdout(), &mut std::io::stderr())
        }
    };
    exit(code);
}

/// `uuidlock export DIR`: the guest artifacts this binary embeds, for
/// `wasmtime run` and for other component hosts.
fn export(args: &[String]) -> i32 {
    let dir = match args {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("uuidlock export DIR\n\nWrites uuidlock.wasm (the WASI command module) and uuidlock.component.wasm\n(the component exporting wit/lock.wit) into DIR, which must exist.");
            return 0;
        }
        [dir] => Path::new(dir),
        _ => {
            eprintln!("uuidlock: export takes one directory; see 'uuidlock export --help'");
            return cli::exit::USAGE;
        }
    };
    for (name, bytes) in [("uuidlock.wasm", engine::COMMAND_WASM), ("uuidlock.component.wasm", engine::COMPONENT_WASM)]
    {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("uuidlock: cannot write {}: {e}; the directory must exist and be writable", path.display());
            return cli::exit::IO;
        }
        println!("{}", path.display());
    }
    0
}
