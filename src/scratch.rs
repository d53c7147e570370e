//! Temporary directories for the unit tests, on tmpfs (`/dev/shm`) where
//! there is one. On a disk, writeback can stall a metadata call for seconds
//! (a write and rename in ext4's `/tmp` took up to 3.8 s here while a build
//! was linking), longer than the short lifetimes the tests use to stay
//! quick. Surviving such stalls is the lifetime's contract (README,
//! "Choosing a lifetime"); these tests check the protocol, not the disk.

use std::path::Path;

pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir()).expect("a temporary directory")
}

/// A temporary directory and the path of `job.lock` inside it.
pub fn lock() -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let lock = dir.path().join("job.lock").to_str().expect("temporary paths are UTF-8").to_owned();
    (dir, lock)
}

/// Makes a named pipe at `path`: what a hostile neighbour plants.
pub fn mkfifo(path: &str) {
    let c_path = std::ffi::CString::new(path).expect("no NUL in test paths");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) }, 0, "mkfifo {path}");
}

/// Runs `f` on a thread of its own and returns its result, failing the test
/// if it takes longer than `bound` (a call blocked in `open` on a FIFO never
/// returns; its thread is left behind).
pub fn within<T: Send + 'static>(bound: std::time::Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    result.recv_timeout(bound).unwrap_or_else(|_| panic!("{what} was still running after {bound:?}"))
}
