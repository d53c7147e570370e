//! Host paths and the guest's view of them. Each granted directory appears
//! inside the guest under its own absolute host path, so a lock path means the
//! same inside and out, and the guest's messages name real paths.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{Grant, LockError};

/// The grant of `dir` under its absolute path.
///
/// # Errors
/// The path is not UTF-8 or cannot be made absolute.
pub fn grant(dir: &Path) -> Result<Grant> {
    let host = std::path::absolute(dir).with_context(|| format!("cannot make {} absolute", dir.display()))?;
    let guest = host.to_str().with_context(|| format!("{} is not valid UTF-8", host.display()))?.to_owned();
    Ok(Grant::new(host, guest))
}

/// The guest's name for the host path `path`: the same path, absolute. `..`
/// is left for the sandbox to judge. An empty path stays empty (the guest
/// refuses it).
///
/// # Errors
/// [`LockError::InvalidPath`] when the path is not UTF-8.
pub fn guest_path(path: &Path) -> Result<String, LockError> {
    if path.as_os_str().is_empty() {
        return Ok(String::new());
    }
    let absolute = std::path::absolute(path)
        .map_err(|e| LockError::InvalidPath(format!("cannot make {} absolute: {e}", path.display())))?;
    absolute
        .into_os_string()
        .into_string()
        .map_err(|raw| LockError::InvalidPath(format!("{} is not valid UTF-8; lock paths must be", raw.display())))
}

/// The lock file and the directory that holds it, as the native command
/// line grants it: the directory is resolved as the OS resolves it (links
/// and `..` included), so that the lock is the very file other programs
/// reach through the same path; the last component stays as given (the
/// guest refuses a symbolic link there).
///
/// # Errors
/// [`LockError::InvalidPath`] when the path names no file (empty, `/`, ending
/// in `..`) or its parent is not a directory; [`LockError::Io`] when the
/// directory does not exist or cannot be resolved.
pub fn lock_file_and_dir(path: &Path) -> Result<(PathBuf, PathBuf), LockError> {
    if path.as_os_str().is_empty() {
        return Err(LockError::InvalidPath("the lock path is empty".into()));
    }
    let Some(name) = path.file_name() else {
        return Err(LockError::InvalidPath(format!(
            "{} does not name a file; name a lock file, e.g. /tmp/job.lock",
            path.display()
        )));
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LockError::Io(format!(
            "cannot lock {}: the directory {} does not exist; create it first",
            path.display(),
            parent.display()
        )),
        _ => LockError::Io(format!("cannot lock {}: cannot resolve {}: {e}", path.display(), parent.display())),
    })?;
    if !dir.is_dir() {
        return Err(LockError::InvalidPath(format!(
            "cannot lock {}: {} is not a directory",
            path.display(),
            parent.display()
        )));
    }
    Ok((dir.join(name), dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_cli_grants_the_resolved_parent() {
        let root = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        // The OS resolves link/.. to the parent of the link's target.
        let (file, dir) = lock_file_and_dir(&real.join("link/../x.lock")).unwrap();
        assert_eq!((file, dir), (real.join("x.lock"), real.clone()));
        let (file, dir) = lock_file_and_dir(&real.join("link/x.lock")).unwrap();
        assert_eq!((file, dir), (real.join("a/x.lock"), real.join("a")));
        std::fs::write(real.join("plain"), "").unwrap();
        for bad in ["", "/", "a/.."] {
            assert!(matches!(lock_file_and_dir(Path::new(bad)), Err(LockError::InvalidPath(_))), "{bad}");
        }
        assert!(matches!(lock_file_and_dir(&real.join("plain/x.lock")), Err(LockError::InvalidPath(_))));
        assert!(matches!(lock_file_and_dir(&real.join("none/x.lock")), Err(LockError::Io(_))));
    }

    #[test]
    fn guest_paths_are_absolute_host_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(guest_path(Path::new("x.lock")).unwrap(), cwd.join("x.lock").to_str().unwrap());
        assert_eq!(guest_path(Path::new("")).unwrap(), "");
    }
}
