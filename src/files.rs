//! The filesystem steps the protocol is made of, each mapped to the error
//! users see: staging a complete marker, publishing it with a hard link,
//! replacing, reading (bounded) and removing lock files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::format::{self, Marker};
use crate::LockError;

/// Whether publishing created the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// Something is already there: its bytes (at most
    /// [`format::MAX_MARKER_LEN`] + 1), or `None` if it went away meanwhile.
    Exists(Option<Vec<u8>>),
}

/// Whether [`publish`] may fall back to an exclusive create and a write
/// where the filesystem has no hard links. That fallback can leave an empty
/// file behind a crash, which is never judged stale; so lifetimes and claims
/// never use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    Allowed,
    Never,
}

/// Creates `path` holding exactly `bytes`, only if nothing is there.
///
/// The bytes are written to `staged` first and hard-linked into place, so the
/// lock file is complete from the instant it exists: a crash leaves at most a
/// staged file, never an empty or half-written lock. Where the filesystem has
/// no hard links, falls back to an exclusive create and a write if
/// `fallback` allows.
///
/// A link reported as failing with "exists" whose target holds exactly our
/// bytes was ours (an NFS server answering a retransmitted request): the
/// bytes carry a random token, so nobody else could have written them.
pub fn publish(path: &str, staged: &str, bytes: &[u8], fallback: Fallback) -> Result<Created, LockError> {
    write_new(staged, path, bytes)?;
    let linked = fs::hard_link(staged, path);
    let _ = fs::remove_file(staged);
    match linked {
        Ok(()) => Ok(Created::Yes),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let there = read(path)?;
            Ok(if there.as_deref() == Some(bytes) { Created::Yes } else { Created::Exists(there) })
        }
        Err(e) if no_hard_links(&e) && fallback == Fallback::Never => Err(LockError::Io(format!(
            "cannot create {path}: this filesystem has no hard links, which lock lifetimes need; \
             acquire without --stale-after here"
        ))),
        Err(e) if no_hard_links(&e) => match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => write_all(path, file, bytes).map(|()| Created::Yes),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists(read(path)?)),
            Err(e) => Err(io_error(path, "create", e)),
        },
        Err(e) => Err(io_error(path, "create", e)),
    }
}

/// Replaces the file at `path` with one holding `bytes`, atomically (staged,
/// then renamed over it). The caller must hold the right to replace it.
pub fn replace(path: &str, staged: &str, bytes: &[u8]) -> Result<(), LockError> {
    write_new(staged, path, bytes)?;
    fs::rename(staged, path).map_err(|e| {
        let _ = fs::remove_file(staged);
        io_error(path, "replace", e)
    })
}

/// Removes `path`; `false` when it was already gone.
pub fn remove(path: &str) -> Result<bool, LockError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "delete", e)),
    }
}

/// Creates `staged` exclusively and writes `bytes`; on failure nothing is
/// left. Errors name `path`, the lock the staging file is for.
fn write_new(staged: &str, path: &str, bytes: &[u8]) -> Result<(), LockError> {
    let file = OpenOptions::new().write(true).create_new(true).open(staged).map_err(|e| io_error(path, "create", e))?;
    write_all(path, file, bytes).inspect_err(|_| {
        let _ = fs::remove_file(staged);
    })
}

fn write_all(path: &str, mut file: File, bytes: &[u8]) -> Result<(), LockError> {
    let written = file.write_all(bytes).and_then(|()| file.flush());
    drop(file); // close: on network shares this is what publishes the content
    written.map_err(|e| io_error(path, "write", e))
}

/// Whether a hard link failed because the filesystem has none.
fn no_hard_links(e: &io::Error) -> bool {
    // EPERM is also how Linux says "no hard links on this filesystem"; a
    // sandbox refusal fails the fallback's create the same way.
    #[cfg(target_os = "wasi")]
    const NOT_SUPPORTED: [i32; 3] = [52, 58, 63]; // ENOSYS, ENOTSUP, EPERM
    #[cfg(not(target_os = "wasi"))]
    const NOT_SUPPORTED: [i32; 3] = [38, 95, 1]; // ENOSYS, EOPNOTSUPP, EPERM
    e.kind() == io::ErrorKind::Unsupported || e.raw_os_error().is_some_and(|code| NOT_SUPPORTED.contains(&code))
}

/// The bytes at `path` (at most [`format::MAX_MARKER_LEN`] + 1 of them);
/// `None` when there is no file. A symbolic link or a directory there is
/// refused ([`check_not_link_or_dir`]).
pub fn read(path: &str) -> Result<Option<Vec<u8>>, LockError> {
    // A link (ELOOP on open) or a directory (EISDIR on read): the link or
    // directory check explains any failure best.
    let failed = |e| check_not_link_or_dir(path).err().unwrap_or_else(|| io_error(path, "read", e));
    let file = match open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Absent; unless nothing above it exists either: then it is outside the sandbox.
            return if any_ancestor_exists(path) { Ok(None) } else { Err(io_error(path, "read", e)) };
        }
        Err(e) => return Err(failed(e)),
    };
    let mut bytes = Vec::with_capacity(128);
    file.take(format::MAX_MARKER_LEN as u64 + 1).read_to_end(&mut bytes).map_err(failed)?;
    Ok(Some(bytes))
}

/// Opens `path` for reading, failing (`ELOOP`) if it is a symbolic link.
/// One call, where checking with `lstat` first would take two (three
/// host calls through wasmtime's preview 1 adapter) on every read.
#[cfg(unix)]
fn open_no_follow(path: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// As above. Rust's std on WASI always follows links (its switch is
/// unstable), so this goes through wasi-libc's `open`, which resolves the
/// path against the preopened directories just as std does.
#[cfg(target_os = "wasi")]
fn open_no_follow(path: &str) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(path).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `path` is NUL-terminated and outlives the call; `open` takes
    // no other pointers.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `open` just returned this descriptor, and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(any(unix, target_os = "wasi")))]
fn open_no_follow(path: &str) -> io::Result<File> {
    match check_not_link_or_dir(path) {
        Ok(_) => File::open(path),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

/// The marker at `path`; `None` when there is no file.
pub fn read_marker(path: &str) -> Result<Option<Marker>, LockError> {
    Ok(read(path)?.map(|bytes| format::parse(&bytes)))
}

/// How long ago `path` was last written, by the wall clock (zero if its
/// time is in the future, as on a share whose clock runs ahead).
pub fn age(path: &str) -> Result<std::time::Duration, LockError> {
    let modified = fs::metadata(path).and_then(|meta| meta.modified()).map_err(|e| io_error(path, "inspect", e))?;
    Ok(std::time::SystemTime::now().duration_since(modified).unwrap_or_default())
}

/// Refuses a symbolic link or a directory at the lock path. Returns whether
/// anything exists there.
pub fn check_not_link_or_dir(path: &str) -> Result<bool, LockError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        // Absent; unless nothing above it exists either: then it is outside the sandbox.
        Err(e) if e.kind() == io::ErrorKind::NotFound && any_ancestor_exists(path) => return Ok(false),
        Err(e) => return Err(io_error(path, "inspect", e)),
    };
    if meta.file_type().is_symlink() {
        return Err(LockError::InvalidPath(format!(
            "{path} is a symbolic link; uuidlock does not follow links at the lock path, name a regular file"
        )));
    }
    if meta.is_dir() {
        return Err(LockError::InvalidPath(format!(
            "{path} is a directory; name a file inside it, e.g. {}/job.lock",
            path.trim_end_matches('/')
        )));
    }
    Ok(true)
}

/// Refuses paths that can never name a lock file: empty, or with NUL.
pub fn check_path(path: &str) -> Result<(), LockError> {
    if path.is_empty() {
        return Err(LockError::InvalidPath("the lock path is empty".into()));
    }
    if path.contains('\0') {
        return Err(LockError::InvalidPath(format!("the lock path {path:?} contains a NUL byte")));
    }
    Ok(())
}

/// Maps an I/O error on `path` to the error users see, with the fix.
pub fn io_error(path: &str, action: &str, e: io::Error) -> LockError {
    if refused_by_sandbox(&e) && parent_reachable(path) {
        return LockError::Io(format!(
            "cannot {action} {path}: not permitted; its directory does not allow it \
             (read-only, immutable, or another user's file in a sticky directory)"
        ));
    }
    if refused_by_sandbox(&e) {
        return LockError::OutsideSandbox(format!(
            "cannot {action} {path}: it leads outside the directories granted to this sandbox \
             (through .. or a symbolic link); grant its directory (e.g. wasmtime run --dir HOST_DIR::GUEST_DIR) \
             and name the lock inside it"
        ));
    }
    match e.kind() {
        io::ErrorKind::NotFound if !any_ancestor_exists(path) => LockError::OutsideSandbox(format!(
            "cannot {action} {path}: it is not inside any directory granted to this sandbox; \
             grant its directory (e.g. wasmtime run --dir HOST_DIR::GUEST_DIR) and name the lock inside it"
        )),
        io::ErrorKind::NotFound => {
            LockError::Io(format!("cannot {action} {path}: its directory does not exist; create it first"))
        }
        io::ErrorKind::PermissionDenied => LockError::Io(format!(
            "cannot {action} {path}: permission denied; the directory must be writable by this user"
        )),
        io::ErrorKind::ReadOnlyFilesystem => LockError::Io(format!(
            "cannot {action} {path}: the filesystem is read-only; put the lock on a writable one"
        )),
        io::ErrorKind::IsADirectory => {
            LockError::InvalidPath(format!("{path} names a directory; name a file inside it"))
        }
        io::ErrorKind::NotADirectory => {
            LockError::InvalidPath(format!("cannot {action} {path}: a component of the path is not a directory"))
        }
        _ => LockError::Io(format!("cannot {action} {path}: {e}")),
    }
}

/// Whether the directory holding `path` can be reached: if so, a refusal
/// to create in it is the OS's, not the sandbox's.
fn parent_reachable(path: &str) -> bool {
    let parent = Path::new(path).parent().map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    parent.is_some_and(|dir| fs::metadata(dir).is_ok())
}

/// Whether any directory above `path` exists. In the guest, wasi-libc
/// answers "not found" for a path under no preopened directory, where no
/// ancestor exists; natively `/` always does.
fn any_ancestor_exists(path: &str) -> bool {
    Path::new(path)
        .ancestors()
        .skip(1)
        .map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
        .any(|dir| fs::metadata(dir).is_ok())
}

/// Whether the WASI host refused the path as leading outside the preopened
/// directories. wasmtime reports an escape through `..` or a symbolic link
/// as `EPERM`, which the OS also uses (an immutable directory, another
/// user's file in a sticky directory): [`io_error`] tells them apart by
/// whether the directory itself can be reached. `ENOTCAPABLE` is the
/// capability error proper. Natively there is no sandbox.
fn refused_by_sandbox(e: &io::Error) -> bool {
    #[cfg(target_os = "wasi")]
    {
        const EPERM: i32 = 63;
        const ENOTCAPABLE: i32 = 76;
        matches!(e.raw_os_error(), Some(EPERM | ENOTCAPABLE))
    }
    #[cfg(not(target_os = "wasi"))]
    {
        let _ = e;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_reported_as_existing_but_holding_our_bytes_was_ours() {
        // What an NFS server's answer to a retransmitted LINK looks like.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let staged = format!("{path}.new");
        fs::write(&path, b"ours").unwrap();
        assert_eq!(publish(&path, &staged, b"ours", Fallback::Never), Ok(Created::Yes));
        assert_eq!(publish(&path, &staged, b"theirs", Fallback::Never), Ok(Created::Exists(Some(b"ours".to_vec()))));
        assert!(!fs::exists(&staged).unwrap());
    }
}
