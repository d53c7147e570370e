//! The lock protocol: exclusive create, verify, retry, release-if-ours.
//!
//! Plain `std::fs`, so the same code runs natively and in the wasm32-wasip1
//! guest (where `create_new` is WASI `path_open` with `O_CREAT | O_EXCL`).
//!
//! # The protocol
//!
//! 1. Create the lock file exclusively and write the marker holding a fresh
//!    owner token ([`crate::format`]), then close it (on network shares the
//!    close publishes the content).
//! 2. Wait `verification_delay`, then read the file back *by path*. If it
//!    holds our token, we hold the lock.
//! 3. Otherwise (the file existed, or it now holds something else) sleep
//!    `retry_interval` and try again, until `timeout`.
//! 4. Release reads the file and deletes it only if it holds our token.
//!
//! # Why it is exclusive
//!
//! Among peers that create with `O_EXCL` (uuidlock, `filelock.SoftFileLock`)
//! on a filesystem whose exclusive create is atomic (local filesystems,
//! NFSv3 and later, SFTP): at most one create succeeds while the file exists,
//! and a peer only deletes the file when it holds its own token. A file that
//! exists therefore has exactly one creator, and only that creator can read
//! its own token back, so at most one process returns from [`acquire`]
//! between the file's creation and its deletion. Deletion happens only in
//! [`release`], by the holder.
//!
//! Step 2 is what keeps the lock exclusive against peers whose create is
//! *not* atomic, such as the Python `uuid-filelock` package (it checks that
//! the file is absent, then truncates and writes its own token). Such a peer
//! can overwrite our marker after our create; the read-back after
//! `verification_delay` sees its token instead of ours and we back off. This
//! only works if the peer's check-then-write window is shorter than the
//! delay, which is why the default delay equals that package's (0.1 s). With
//! only `O_EXCL` peers the delay buys nothing and can be 0.
//!
//! # Caveats, stated up front
//!
//! - A holder that dies leaves its file behind; the lock stays held until
//!   someone deletes the file by hand.
//! - [`release`] reads, compares, then deletes. Between the two steps nobody
//!   else may replace the file, because only the holder deletes it; so a
//!   token must be released by one caller at a time (two concurrent releases
//!   of the same token could delete a successor's file).
//! - If a non-atomic peer overwrites our marker with a longer one in the
//!   window between our create and our write, the file ends up holding
//!   neither token and nobody holds the lock or can release it.
//! - The lock path itself must not be a symbolic link: uuidlock refuses one
//!   rather than follow it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::format::{self, Marker, Token};

/// The longest verification delay or retry interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// How to acquire a lock. [`Options::default`] documents the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Put before the random UUID in the owner token, to say who holds the
    /// lock. Default: empty.
    pub prefix: String,
    /// How long to wait after writing before reading the token back.
    /// Default: 0.1 s, as the Python `uuid-filelock` package, so that its
    /// non-atomic writers are detected; every acquisition costs this much.
    pub verification_delay: Duration,
    /// How long to sleep between attempts. Default: 0.1 s.
    pub retry_interval: Duration,
    /// How long to keep trying: `None` waits forever, zero tries once.
    /// Default: `None`.
    pub timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prefix: String::new(),
            verification_delay: Duration::from_millis(100),
            retry_interval: Duration::from_millis(100),
            timeout: None,
        }
    }
}

impl Options {
    /// Checks the options without touching the filesystem.
    ///
    /// # Errors
    /// [`LockError::InvalidOptions`] naming the option and the limit.
    pub fn check(&self) -> Result<(), LockError> {
        format::check_prefix(&self.prefix).map_err(LockError::InvalidOptions)?;
        for (name, value) in [("verification delay", self.verification_delay), ("retry interval", self.retry_interval)]
        {
            if value > MAX_INTERVAL {
                return Err(LockError::InvalidOptions(format!(
                    "the {name} is {value:?}; at most {}s is allowed",
                    MAX_INTERVAL.as_secs()
                )));
            }
        }
        Ok(())
    }
}

/// Takes the lock at `path`, waiting as `options` say, and returns the owner
/// token that [`release`] needs.
///
/// # Errors
/// [`LockError::Timeout`] when the lock stayed held until the timeout; an
/// invalid path or options; the sandbox refusing the path; an I/O error.
pub fn acquire(path: &str, options: &Options) -> Result<Token, LockError> {
    check_path(path)?;
    options.check()?;
    let token = Token::generate(&options.prefix).map_err(LockError::InvalidOptions)?;
    let marker = format::encode(&token);
    // No deadline when there is no timeout, or when it is too far to compute.
    let deadline = options.timeout.and_then(|timeout| Instant::now().checked_add(timeout));
    loop {
        if try_once(path, &token, &marker, options.verification_delay)? {
            return Ok(token);
        }
        let pause = match deadline {
            None => options.retry_interval,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LockError::Timeout);
                }
                left.min(options.retry_interval)
            }
        };
        sleep(pause);
    }
}

/// One attempt: create exclusively, write, wait, verify. `Ok(false)` when
/// someone else holds the lock.
fn try_once(path: &str, token: &Token, marker: &[u8], delay: Duration) -> Result<bool, LockError> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => write_marker(path, file, marker)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Refuse what can never be a lock file rather than wait on it forever.
            check_not_link_or_dir(path)?;
            return Ok(false);
        }
        Err(e) => return Err(io_error(path, "create", e)),
    }
    if !delay.is_zero() {
        sleep(delay);
    }
    match read_marker(path) {
        Ok(marker) => Ok(matches!(marker, Some(Marker::Uuidlock(held)) if held == *token)),
        Err(e) => {
            // Our marker may be on disk, and the caller never gets the token
            // that would release it: release it here, if it is still ours.
            let _ = release_token(path, token);
            Err(e)
        }
    }
}

/// Writes our marker into the file we just created. On failure the file,
/// still empty or half-written by us, is removed so the lock is not wedged.
fn write_marker(path: &str, mut file: File, marker: &[u8]) -> Result<(), LockError> {
    let written = file.write_all(marker).and_then(|()| file.flush());
    drop(file); // close: on network shares this is what publishes the content
    if let Err(e) = written {
        if let Ok(mut file) = File::open(path) {
            let mut seen = Vec::new();
            // Empty counts as ours: had a non-atomic peer truncated it since,
            // deleting it only makes that peer's read-back fail and retry.
            let ours = file.read_to_end(&mut seen).is_ok() && marker.starts_with(&seen);
            if ours {
                let _ = fs::remove_file(path);
            }
        }
        return Err(io_error(path, "write", e));
    }
    Ok(())
}

/// Releases the lock at `path` if it holds `token`; otherwise deletes
/// nothing and reports [`LockError::NotOwner`].
///
/// # Errors
/// [`LockError::NotOwner`] when the file is absent or holds anything else; a
/// malformed token; an invalid path; the sandbox refusing the path; an I/O
/// error.
pub fn release(path: &str, token: &str) -> Result<(), LockError> {
    check_path(path)?;
    let token = Token::parse(token).map_err(LockError::InvalidToken)?;
    release_token(path, &token)
}

fn release_token(path: &str, token: &Token) -> Result<(), LockError> {
    match read_marker(path)? {
        Some(Marker::Uuidlock(held)) if held == *token => {}
        _ => return Err(LockError::NotOwner),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LockError::NotOwner),
        Err(e) => Err(io_error(path, "delete", e)),
    }
}

/// Who holds the lock at `path`: `None` when it is free.
///
/// # Errors
/// An invalid path; the sandbox refusing the path; an I/O error.
pub fn status(path: &str) -> Result<Option<Marker>, LockError> {
    check_path(path)?;
    read_marker(path)
}

/// Reads the marker at `path` (at most [`format::MAX_MARKER_LEN`] bytes);
/// `None` when there is no file.
fn read_marker(path: &str) -> Result<Option<Marker>, LockError> {
    if !check_not_link_or_dir(path)? {
        return Ok(None);
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "read", e)),
    };
    let mut bytes = Vec::with_capacity(128);
    file.take(format::MAX_MARKER_LEN as u64 + 1).read_to_end(&mut bytes).map_err(|e| io_error(path, "read", e))?;
    Ok(Some(format::parse(&bytes)))
}

/// Refuses a symbolic link or a directory at the lock path. Returns whether
/// anything exists there.
fn check_not_link_or_dir(path: &str) -> Result<bool, LockError> {
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

fn check_path(path: &str) -> Result<(), LockError> {
    if path.is_empty() {
        return Err(LockError::InvalidPath("the lock path is empty".into()));
    }
    if path.contains('\0') {
        return Err(LockError::InvalidPath(format!("the lock path {path:?} contains a NUL byte")));
    }
    Ok(())
}

/// Maps an I/O error on `path` to the error users see, with the fix.
fn io_error(path: &str, action: &str, e: io::Error) -> LockError {
    if refused_by_sandbox(&e) {
        return LockError::OutsideSandbox(format!(
            "cannot {action} {path}: not permitted; it leads outside the directories granted to this sandbox \
             (through .. or a symbolic link): grant its directory (e.g. wasmtime run --dir HOST_DIR::GUEST_DIR) \
             and name the lock inside it; or the OS forbids the operation"
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

/// Whether the WASI host refused the path because it leads outside the
/// preopened directories. wasmtime reports an escape through `..` or a
/// symbolic link as `EPERM`, which the OS also uses for rare refusals (such
/// as another user's file in a sticky directory), hence the message naming
/// both; `ENOTCAPABLE` is the capability error proper. Natively there is no
/// sandbox.
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A temp dir and a lock path inside it.
    fn lock_in_temp_dir() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock").to_str().unwrap().to_owned();
        (dir, path)
    }

    fn fast() -> Options {
        Options { verification_delay: Duration::ZERO, retry_interval: Duration::from_millis(1), ..Options::default() }
    }

    fn once() -> Options {
        Options { timeout: Some(Duration::ZERO), ..fast() }
    }

    #[test]
    fn acquire_writes_the_marker_and_release_removes_it() {
        let (_dir, path) = lock_in_temp_dir();
        let token = acquire(&path, &Options { prefix: "job-".into(), ..fast() }).unwrap();
        assert!(token.as_str().starts_with("job-"));
        assert_eq!(fs::read(&path).unwrap(), format::encode(&token));
        assert_eq!(status(&path).unwrap(), Some(Marker::Uuidlock(token.clone())));
        release(&path, token.as_str()).unwrap();
        assert!(!fs::exists(&path).unwrap());
        assert_eq!(status(&path).unwrap(), None);
    }

    #[test]
    fn a_held_lock_is_not_acquired_again() {
        let (_dir, path) = lock_in_temp_dir();
        let _held = acquire(&path, &fast()).unwrap();
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
    }

    #[test]
    fn a_timeout_waits_at_least_that_long() {
        let (_dir, path) = lock_in_temp_dir();
        let _held = acquire(&path, &fast()).unwrap();
        let start = Instant::now();
        let options = Options { timeout: Some(Duration::from_millis(50)), ..fast() };
        assert_eq!(acquire(&path, &options), Err(LockError::Timeout));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_waiter_gets_the_lock_once_it_is_released() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || acquire(&path, &Options { timeout: Some(Duration::from_secs(30)), ..fast() }))
        };
        std::thread::sleep(Duration::from_millis(20));
        release(&path, held.as_str()).unwrap();
        let next = waiter.join().unwrap().unwrap();
        assert_ne!(next, held);
        assert_eq!(status(&path).unwrap(), Some(Marker::Uuidlock(next)));
    }

    #[test]
    fn release_with_another_token_deletes_nothing() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        let stranger = Token::generate("").unwrap();
        assert_eq!(release(&path, stranger.as_str()), Err(LockError::NotOwner));
        assert_eq!(fs::read(&path).unwrap(), format::encode(&held));
    }

    #[test]
    fn releasing_twice_reports_not_owner() {
        let (_dir, path) = lock_in_temp_dir();
        let held = acquire(&path, &fast()).unwrap();
        release(&path, held.as_str()).unwrap();
        assert_eq!(release(&path, held.as_str()), Err(LockError::NotOwner));
    }

    #[test]
    fn a_foreign_marker_is_waited_on_and_never_deleted() {
        let (_dir, path) = lock_in_temp_dir();
        fs::write(&path, "4242\nbuildhost\n").unwrap();
        assert_eq!(acquire(&path, &once()), Err(LockError::Timeout));
        assert!(matches!(status(&path).unwrap(), Some(Marker::Foreign(_))));
        let token = Token::generate("").unwrap();
        assert_eq!(release(&path, token.as_str()), Err(LockError::NotOwner));
        assert_eq!(fs::read(&path).unwrap(), b"4242\nbuildhost\n");
    }

    #[test]
    fn a_huge_lock_file_is_read_only_in_part() {
        let (_dir, path) = lock_in_temp_dir();
        fs::write(&path, vec![b'x'; 10 << 20]).unwrap();
        assert!(matches!(status(&path).unwrap(), Some(Marker::Foreign(_))));
    }

    #[test]
    fn paths_that_cannot_be_lock_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_str().unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link.lock")).unwrap();
        for path in ["", "a\0b", base, &format!("{base}/"), &format!("{base}/link.lock")] {
            assert!(matches!(acquire(path, &once()), Err(LockError::InvalidPath(_))), "acquire {path:?}");
            assert!(matches!(status(path), Err(LockError::InvalidPath(_))), "status {path:?}");
        }
        assert!(!fs::exists(dir.path().join("target")).unwrap(), "the link was followed");
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/job.lock");
        let Err(LockError::Io(message)) = acquire(path.to_str().unwrap(), &once()) else { panic!() };
        assert!(message.contains("job.lock") && message.contains("create it first"), "{message}");
    }

    #[test]
    fn a_missing_directory_in_a_relative_path_is_not_a_sandbox_error() {
        let Err(LockError::Io(message)) = acquire("no-such-dir-here/job.lock", &once()) else { panic!() };
        assert!(message.contains("create it first"), "{message}");
    }

    #[test]
    fn bad_options_and_tokens_are_refused_before_touching_the_file() {
        let (_dir, path) = lock_in_temp_dir();
        let bad_options = [
            Options { prefix: "has space".into(), ..once() },
            Options { prefix: "x".repeat(65), ..once() },
            Options { verification_delay: MAX_INTERVAL + Duration::from_nanos(1), ..once() },
            Options { retry_interval: Duration::MAX, ..once() },
        ];
        for options in bad_options {
            assert!(matches!(acquire(&path, &options), Err(LockError::InvalidOptions(_))), "{options:?}");
        }
        for token in ["", "nonsense", "\0"] {
            assert!(matches!(release(&path, token), Err(LockError::InvalidToken(_))), "{token:?}");
        }
        assert!(!fs::exists(&path).unwrap());
    }

    #[test]
    fn a_huge_timeout_means_wait_forever_not_overflow() {
        let (_dir, path) = lock_in_temp_dir();
        let options = Options { timeout: Some(Duration::MAX), ..fast() };
        assert!(acquire(&path, &options).is_ok());
    }

    #[test]
    fn threads_contending_never_overlap() {
        // Mutual exclusion natively: every thread checks that nobody else is
        // inside while it holds the lock.
        let (_dir, path) = lock_in_temp_dir();
        let inside = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside) = (path.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let token = acquire(&path, &fast()).unwrap();
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        std::thread::yield_now();
                        inside.store(false, Ordering::SeqCst);
                        release(&path, token.as_str()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
