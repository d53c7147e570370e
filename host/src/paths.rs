//! Host paths and the guest's view of them. Each granted directory appears
//! inside the guest under its own absolute host path, so a lock path means the
//! same inside and out, and the guest's messages name real paths.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::{Grant, LockError};

/// The grant of `dir` under its absolute path.
///
/// # Errors
/// The path is not UTF-8 or cannot be made absolute.
pub fn grant(dir: &Path) -> Result<Grant> {
    let host = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    let guest = host
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", host.display()))?
        .to_owned();
    Ok(Grant { host, guest })
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
    let absolute = std::path::absolute(path).map_err(|e| {
        LockError::InvalidPath(format!("cannot make {} absolute: {e}", path.display()))
    })?;
    absolute.into_os_string().into_string().map_err(|raw| {
        LockError::InvalidPath(format!(
            "{} is not valid UTF-8; lock paths must be",
            raw.display()
        ))
    })
}

/// `path` made absolute with `.` and `..` resolved by name (like
/// `realpath -s`), and the directory that holds it: what the native
/// command line grants for one lock file.
pub fn lock_file_and_dir(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let absolute = std::path::absolute(path).ok()?;
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let dir = normal.parent()?.to_path_buf();
    normal.file_name()?;
    Some((normal, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_cli_grants_the_lexical_parent() {
        let (file, dir) = lock_file_and_dir(Path::new("/a/b/../c/./x.lock")).unwrap();
        assert_eq!(file, Path::new("/a/c/x.lock"));
        assert_eq!(dir, Path::new("/a/c"));
        assert!(lock_file_and_dir(Path::new("/")).is_none());
    }

    #[test]
    fn guest_paths_are_absolute_host_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            guest_path(Path::new("x.lock")).unwrap(),
            cwd.join("x.lock").to_str().unwrap()
        );
        assert_eq!(guest_path(Path::new("")).unwrap(), "");
    }
}
