//! Ends a waiting guest's pause as soon as the lock file it waits for goes.
//!
//! The head of the queue of waiters, and the first few behind it, pause
//! with absolute-time sleeps (`subscribe-instant`; `uuidlock`'s `wake`
//! module), which say "until this instant, or until the lock file goes",
//! and look at the lock, or at the queue, whenever one ends. During an acquire this host watches the lock
//! file (inotify on the file itself, never its directory, so that no other
//! file's comings and goings wake anyone) and ends such a sleep when the
//! file loses a name, moves or goes. A release is then seen within
//! microseconds instead of at the next look, which with the default retry
//! interval (0.1 s) was most of a hand-off.
//!
//! Why exclusion does not depend on this: only the waiters' pauses between
//! looks end early, and their length is no part of the exclusion argument
//! (a waiter that looks sooner only attempts sooner; the attempt's own
//! exclusive publish and verification decide). The guest's other sleeps,
//! the verification delay among them, are relative (`subscribe-duration`)
//! and always run their full length. A wake-up for nothing (the file's
//! attributes changed, the event queue overflowed) costs one look.
//!
//! Each wait watches the lock file as it is then, so a new holder's file is
//! watched at the next wait; the watches an acquire added are removed when
//! it returns, and an acquire that never waits adds none. Where none can be
//! had (not Linux, inotify unavailable, the user's watch limit reached) and
//! where there is no lock file (the lock is free: a waiter must not spin
//! while the head takes it), the sleeps run their full length and the
//! guest's own looks find the release, as in any other host.

use std::path::Path;

#[cfg(target_os = "linux")]
pub(crate) use linux::{Ender, Wake};
#[cfg(not(target_os = "linux"))]
pub(crate) use other::{Ender, Wake};

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::Path;

    /// One instance's watcher: an inotify descriptor, made at the first
    /// wait, and the lock file of the acquire in progress.
    #[derive(Default)]
    pub(crate) struct Wake {
        fd: Option<Arc<OwnedFd>>,
        /// The lock file the acquire in progress waits for.
        lock: Option<Arc<Lock>>,
    }

    /// A lock file's host path, and the watches added for it.
    struct Lock {
        path: CString,
        dir: CString,
        name: Vec<u8>,
        added: Mutex<Vec<i32>>,
    }

    /// What ends one sleep early.
    pub(crate) struct Ender {
        fd: Arc<OwnedFd>,
        lock: Arc<Lock>,
        /// The watch on the lock file, once there is one.
        file: Option<i32>,
        /// The watch on its directory, for a lock file to appear.
        dir: Option<i32>,
    }

    // A link is watched as the link, never followed.
    const FILE_EVENTS: u32 = libc::IN_ATTRIB | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_DONT_FOLLOW;
    const DIR_EVENTS: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;

    impl Wake {
        /// An acquire of the lock file at the host path `lock` begins.
        pub(crate) fn watch_for(&mut self, lock: &Path) {
            self.stop();
            let (Some(name), Some(dir)) = (lock.file_name(), lock.parent()) else { return };
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            let (Ok(path), Ok(dir)) =
                (CString::new(lock.as_os_str().as_bytes()), CString::new(dir.as_os_str().as_bytes()))
            else {
                return;
            };
            self.lock = Some(Arc::new(Lock { path, dir, name: name.as_bytes().to_vec(), added: Mutex::default() }));
        }

        /// The acquire returned: its watches go.
        pub(crate) fn stop(&mut self) {
            if let (Some(fd), Some(lock)) = (&self.fd, self.lock.take()) {
                for wd in lock.added.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..) {
                    // SAFETY: a plain system call on a descriptor we own. A
                    // watch the kernel already dropped (its file deleted)
                    // gives EINVAL, which changes nothing.
                    unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
                }
            }
        }

        /// For a sleep that may end early: what ends it. `None` (a sleep of
        /// full length) when no acquire is in progress or there is no inotify.
        pub(crate) fn ender(&mut self) -> Option<Ender> {
            let lock = self.lock.clone()?;
            let fd = match &self.fd {
                Some(fd) => fd.clone(),
                None => {
                    // SAFETY: a plain system call; the descriptor is ours.
                    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
                    if raw < 0 {
                        self.lock = None; // none for the rest of this acquire
                        return None;
                    }
                    // SAFETY: `raw` is a new descriptor that nothing else owns.
                    let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
                    self.fd = Some(fd.clone());
                    fd
                }
            };
            let mut ender = Ender { fd, lock, file: None, dir: None };
            ender.file = ender.add(FILE_EVENTS, true);
            Some(ender)
        }
    }

    impl Ender {
        /// Waits up to `timeout`; `true` as soon as the lock file that was
        /// there at the first wait, or the first to appear after, has gone
        /// (or may have), `false` when the time is up.
        pub(crate) fn wait(&mut self, timeout: Duration) -> bool {
            let deadline = Instant::now() + timeout;
            loop {
                // Events queued before count too: the lock file may have
                // gone between the waiter's last look and the watch.
                if self.drain() {
                    return true;
                }
                if self.file.is_none() && self.dir.is_none() {
                    // No lock file: the lock is free, and the head is
                    // taking it. Wait for a lock file to appear (and then to
                    // go), never ending the sleep for the free lock itself:
                    // a waiter that is not the head would spin.
                    self.dir = self.add(DIR_EVENTS, false);
                    // It may have appeared before the watch.
                    self.file = self.add(FILE_EVENTS, true);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                let mut poll = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let left = libc::timespec {
                    tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                // SAFETY: one valid pollfd, a valid timespec, no signal mask.
                if unsafe { libc::ppoll(&mut poll, 1, &left, std::ptr::null()) } == 0 {
                    return false;
                }
            }
        }

        /// A watch on the lock file (`file`) or its directory; `None` where
        /// none can be had (no such file, the watch limit reached, ...).
        fn add(&self, mask: u32, file: bool) -> Option<i32> {
            let path = if file { &self.lock.path } else { &self.lock.dir };
            // SAFETY: `path` is a NUL-terminated string that outlives the call.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
            if wd < 0 {
                return None;
            }
            let mut added = self.lock.added.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // The same file watched again gives the same wd: keep each once.
            if !added.contains(&wd) {
                added.push(wd);
            }
            Some(wd)
        }

        /// Reads every queued event; whether one says the watched lock file
        /// changed its links, moved or went. A lock file appearing is
        /// watched from then on. Events of earlier watches (files that held
        /// the lock before) are dropped.
        fn drain(&mut self) -> bool {
            const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
            // Aligned for the events' headers; room for many events at once.
            let mut buf = [0u64; 512];
            let mut gone = false;
            let mut appeared = false;
            loop {
                // SAFETY: reads into a buffer we own, at most its length.
                let n =
                    unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf)) };
                // Nothing more queued (EAGAIN), or nothing to read.
                let Ok(n @ 1..) = usize::try_from(n) else { break };
                // SAFETY: the kernel wrote `n` bytes of whole events there.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                let mut at = 0;
                while at + HEADER <= n {
                    // SAFETY: a whole header lies at `at`, read unaligned.
                    let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
                    let end = (at + HEADER + event.len as usize).min(n);
                    let name = &bytes[at + HEADER..end];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    gone |= event.mask & libc::IN_Q_OVERFLOW != 0 || Some(event.wd) == self.file;
                    appeared |= Some(event.wd) == self.dir && name == self.lock.name;
                    at = end;
                }
            }
            if appeared && !gone && self.file.is_none() {
                self.file = self.add(FILE_EVENTS, true);
            }
            gone
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod other {
    use std::time::Duration;

    use super::Path;

    /// No watching here: every sleep runs its full length.
    #[derive(Default)]
    pub(crate) struct Wake;

    pub(crate) struct Ender;

    impl Wake {
        pub(crate) fn watch_for(&mut self, _lock: &Path) {}
        pub(crate) fn stop(&mut self) {}
        pub(crate) fn ender(&mut self) -> Option<Ender> {
            None
        }
    }

    impl Ender {
        pub(crate) fn wait(&mut self, timeout: Duration) -> bool {
            std::thread::sleep(timeout);
            false
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_wait_ends_when_the_lock_file_goes_and_not_for_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("job.lock");
        std::fs::write(&lock, "x").unwrap();
        std::fs::write(dir.path().join("other"), "x").unwrap();
        let mut wake = Wake::default();
        assert!(wake.ender().is_none(), "no acquire in progress: nothing to watch");
        wake.watch_for(&lock);
        let mut ender = wake.ender().expect("a watch on a file in a temporary directory");

        // Another file going, or the lock file being read, ends nothing.
        std::fs::remove_file(dir.path().join("other")).unwrap();
        std::fs::read(&lock).unwrap();
        assert!(!ender.wait(Duration::from_millis(50)));

        let remover = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                std::fs::remove_file(lock).unwrap();
            })
        };
        let start = Instant::now();
        assert!(ender.wait(Duration::from_secs(20)), "the removal ends the wait");
        assert!(start.elapsed() < Duration::from_secs(20));
        remover.join().unwrap();

        // No lock file: no end for the free lock itself (a waiter that is
        // not the head would spin) ...
        let mut ender = wake.ender().unwrap();
        let start = Instant::now();
        assert!(!ender.wait(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        // ... but the next holder's file, appearing, is watched, and its
        // going ends the wait: a rename away, here.
        std::fs::write(dir.path().join("other"), "x").unwrap();
        std::fs::write(&lock, "y").unwrap();
        assert!(!ender.wait(Duration::from_millis(30)), "appearing ends nothing");
        std::fs::rename(&lock, dir.path().join("moved")).unwrap();
        assert!(ender.wait(Duration::from_secs(20)), "a rename away ends the wait");

        // Once the acquire returns, nothing ends a sleep.
        std::fs::write(&lock, "z").unwrap();
        wake.stop();
        assert!(wake.ender().is_none());
    }

    #[test]
    fn a_release_just_before_the_wait_ends_it_at_once_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("job.lock");
        std::fs::write(&lock, "x").unwrap();
        let mut wake = Wake::default();
        wake.watch_for(&lock);
        let mut ender = wake.ender().unwrap();
        std::fs::remove_file(&lock).unwrap();
        assert!(ender.wait(Duration::from_secs(20)));
        // Consumed: the next wait runs its length.
        let start = Instant::now();
        assert!(!ender.wait(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_link_in_the_lock_files_place_is_watched_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "x").unwrap();
        let lock = dir.path().join("job.lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let mut wake = Wake::default();
        wake.watch_for(&lock);
        let mut ender = wake.ender().unwrap();
        // The link's target changing ends nothing: it is not watched.
        std::fs::remove_file(&target).unwrap();
        assert!(!ender.wait(Duration::from_millis(50)));
        std::fs::remove_file(&lock).unwrap();
        assert!(ender.wait(Duration::from_secs(20)));
    }
}
