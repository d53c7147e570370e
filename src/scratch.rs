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
