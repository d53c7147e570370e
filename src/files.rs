//! The filesystem steps the protocol is made of, each mapped to the error
//! users see: staging a complete marker, publishing it with a hard link (or,
//! where there are none, as a directory renamed into place), replacing,
//! reading (bounded) and removing lock files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::format::{self, Marker};
use crate::stale;
use crate::LockError;

/// Whether publishing created the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    Yes,
    /// Something is already there.
    Exists {
        /// What it holds; `None` if it went away meanwhile.
        there: Option<Content>,
        /// The filesystem's time just before `there` was read: when our
        /// staging file was written, by the same clock that dates `there`.
        now: Option<SystemTime>,
    },
}

/// What [`publish`] does where the filesystem has no hard links (smbnetfs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// An exclusive create and a write: what the lock file itself takes, as
    /// every peer finds a lock there in a regular file (a crash in between
    /// leaves an empty file, which is foreign and never judged stale), and
    /// so do shared holders' entries (where an empty one is junk, broken by
    /// the next holder of the gate: [`crate::shared`]).
    Allowed,
    /// A directory holding the bytes in a file `marker`, renamed into place
    /// whole ([`publish_dir`]): complete from its first instant, as a linked
    /// file is. For names only uuidlock uses, where a lifetime needs that:
    /// claims.
    Directory,
}

/// The file inside a directory published by [`publish_dir`].
const DIR_MARKER: &str = "marker";

/// How long a link answered with a stale handle (or, in the guest, `EIO`)
/// is made again before the filesystem is taken to have no hard links.
const LINK_STALE_BOUND: Duration = Duration::from_millis(100);

/// How many times [`publish`] stages again when its staging file vanished
/// before the link: reclaimed as a leftover while this process stalled.
const RESTAGE_TRIES: usize = 3;

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
/// What is there is read as [`read_beside`] reads (a claim's name is
/// anyone's to plant a FIFO at); a lock path's caller refuses a
/// [`Kind::Special`] itself.
pub fn publish(path: &str, staged: &str, bytes: &[u8], fallback: Fallback) -> Result<Created, LockError> {
    let mut tries = 0;
    loop {
        write_new(staged, path, bytes)?;
        // Briefly: rclone answers every link with EIO, which the guest
        // cannot tell from a stale handle.
        let linked = stale::again_within(LINK_STALE_BOUND, &mut || fs::hard_link(staged, path));
        if let Err(e) = &linked {
            if taken(path, e) {
                let at = if fallback == Fallback::Directory { Where::Claim } else { Where::Beside };
                let there = read_file(path, Dating::IfLifetime, at);
                // The filesystem's "now", to judge a lock with a lifetime:
                // our staging file was written before `there` was read.
                let dated = matches!(&there, Ok(Some(there)) if there.modified.is_some());
                let now = if dated { modified(staged) } else { None };
                unstage(staged);
                let there = there?;
                return Ok(if there.as_ref().is_some_and(|there| there.bytes == bytes) {
                    Created::Yes
                } else {
                    Created::Exists { there, now }
                });
            }
        }
        unstage(staged);
        return match linked {
            Ok(()) => Ok(Created::Yes),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < RESTAGE_TRIES => {
                tries += 1;
                continue;
            }
            // At once, where each try would cost a dozen round trips: sshfs
            // answers "exists" as EPERM too, which a release between the
            // link and the look in `taken` leaves ambiguous, but the rename
            // fails just as the link did where anything is there.
            Err(e) if no_hard_links(&e) && fallback == Fallback::Directory => publish_dir(path, staged, bytes),
            Err(e) if no_hard_links(&e) => create_and_write(path, bytes),
            Err(e) => Err(io_error(path, "create", e)),
        };
    }
}

/// Publishes `bytes` at `path` as a directory holding them in a file
/// `marker`: made under the staging name `staged`, then renamed to `path`.
/// Like a linked file it is complete from the instant it appears, and like
/// a link the rename fails where something is there: a file, or a directory
/// that is not empty (measured across two smbnetfs clients, where exclusive
/// create lets both win: of two directories renamed onto one new name, the
/// second always failed, 0 of 840). An empty directory it would replace is
/// no instance: instances appear complete and go whole ([`remove_within`]).
fn publish_dir(path: &str, staged: &str, bytes: &[u8]) -> Result<Created, LockError> {
    for _ in 0..=RESTAGE_TRIES {
        create_dir_fresh(staged).map_err(|e| io_error(path, "create", e))?;
        let inside = format!("{staged}/{DIR_MARKER}");
        let written = create_fresh(&inside)
            .map_err(|e| io_error(path, "create", e))
            .and_then(|file| write_all(path, file, bytes));
        if let Err(e) = written {
            remove_dir_whole(staged);
            return Err(e);
        }
        let renamed = stale::again_within(LINK_STALE_BOUND, &mut || fs::rename(staged, path));
        if renamed.is_err() {
            remove_dir_whole(staged);
        }
        // Read back in either case: a rename that succeeded published what
        // the staged directory held by then (a neighbour could have emptied
        // it), and one that failed may have been ours after all (a
        // retransmitted rename answered for the first).
        let there = read_file(path, Dating::IfLifetime, Where::Claim)?;
        return match (renamed, there) {
            (_, Some(there)) if there.bytes == bytes => Ok(Created::Yes),
            // What this process has just renamed into place, unreadable: an
            // error, never someone else's claim. Taken for someone else's,
            // the claim stayed, ours and forgotten, and every later release
            // with this token found it taken; a slot holder then took its
            // own lock file again and again, renewing it, and nobody held
            // for good (found by `uuidlock simulate --profile smb --mode
            // slots --hold 0.5`, seed 703 of the first 1,000: an injected
            // EACCES on this read). Now the call fails, the claim speaks
            // for a claimant that never renews it, and contenders break it
            // and the lock file once their lifetime has passed.
            (Ok(()), Some(there)) if there.kind == Kind::Unreadable => Err(unreadable_own(path)),
            (_, Some(there)) => Ok(Created::Exists { there: Some(there), now: None }),
            // Our staged directory was reclaimed as a leftover while this
            // process stalled (crate::sweep): stage again.
            (Err(e), None) if e.kind() == io::ErrorKind::NotFound => continue,
            (Err(e), None) => Err(io_error(path, "create", e)),
            (Ok(()), None) => Ok(Created::Exists { there: None, now: None }),
        };
    }
    Ok(Created::Exists { there: None, now: None })
}

/// Where there are no hard links: creates `path` exclusively and writes
/// `bytes` into it (the lock file, a shared holder's entry).
fn create_and_write(path: &str, bytes: &[u8]) -> Result<Created, LockError> {
    let began = Instant::now();
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(file) => write_all(path, file, bytes).map(|()| Created::Yes).inspect_err(|_| withdraw_empty(path, began)),
        Err(e) if taken(path, &e) => {
            Ok(Created::Exists { there: read_file(path, Dating::IfLifetime, Where::Beside)?, now: None })
        }
        Err(e) => Err(io_error(path, "create", e)),
    }
}

/// How long after its create a lock file whose write failed is withdrawn:
/// half the shortest verification delay the doctor names for a share whose
/// create is not atomic (0.1 s).
const WITHDRAW_WITHIN: Duration = Duration::from_millis(50);

/// Removes the lock file this process created at `began` and failed to
/// write, if it is still empty: left there, it would be a lock nobody holds
/// and nobody breaks (an empty file is foreign). Only within
/// [`WITHDRAW_WITHIN`] of the create: on a share whose create is not atomic
/// another client may have won the same file and written it since (this
/// client's cached size may still say 0), and it holds only once its
/// read-back, a verification delay after its write, finds its marker; a
/// removal within half that delay comes before. (A peer that never writes
/// nor reads back, `filelock.SoftFileLock`, does not exclude on such a share
/// anyway.) A busy removal (SMB, a contender reading the file) is tried
/// again within that time.
fn withdraw_empty(path: &str, began: Instant) {
    while began.elapsed() < WITHDRAW_WITHIN
        && fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == 0)
    {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

/// Removes the directory at `path` and the files in it, best effort: a
/// directory of this process's own, or one already renamed aside to a
/// fresh name ([`remove_dir_instance`]; a staged claim or fencing counter).
/// The directory is opened without following a link, and the files are
/// removed through that descriptor, so a link that someone swaps in for it
/// is never followed: nothing outside the lock's directory is touched. A
/// directory holding more than a couple of entries, or other directories,
/// was not made by uuidlock, and what it holds stays.
pub fn remove_dir_whole(path: &str) {
    const MOST: usize = 2;
    if let Ok(dir) = open_dir_no_follow(path) {
        // The names, from a listing by path (a swapped-in link may show
        // another directory's: harmless, as the removals go through `dir`).
        let names: Vec<_> = fs::read_dir(path).into_iter().flatten().take(MOST + 1).flatten().collect();
        if names.len() <= MOST {
            for entry in names {
                let _ = unlink_in(&dir, &entry.file_name());
            }
        }
    }
    let _ = fs::remove_dir(path);
}

/// Opens the directory at `path` for [`unlink_in`], failing if it is a link
/// or not a directory.
#[cfg(any(unix, target_os = "wasi"))]
fn open_dir_no_follow(path: &str) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(path).map_err(|_| io::ErrorKind::InvalidInput)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    // SAFETY: `path` is NUL-terminated and outlives the call; `open` takes
    // no other pointers.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes the file `name` inside the open directory `dir`.
#[cfg(any(unix, target_os = "wasi"))]
fn unlink_in(dir: &File, name: &std::ffi::OsStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    #[cfg(unix)]
    use std::os::unix::ffi::OsStrExt;
    #[cfg(target_os = "wasi")]
    use std::os::wasi::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `dir` is an open descriptor for the call's length, and `name`
    // is NUL-terminated and outlives it.
    match unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Elsewhere a directory is never emptied: what it holds stays.
#[cfg(not(any(unix, target_os = "wasi")))]
fn open_dir_no_follow(_path: &str) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(not(any(unix, target_os = "wasi")))]
fn unlink_in(_dir: &File, _name: &std::ffi::OsStr) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// When `path` was last written, by the filesystem's clock.
pub fn modified(path: &str) -> Option<SystemTime> {
    stale::again(|| fs::symlink_metadata(path)).and_then(|meta| meta.modified()).ok()
}

/// The filesystem's clock: the date it gives a file created at `probe`
/// (then removed). `None` where no file can be created, or none is dated.
pub fn clock(probe: &str) -> Option<SystemTime> {
    let file = OpenOptions::new().write(true).create_new(true).open(probe).ok()?;
    let now = file.metadata().and_then(|meta| meta.modified()).ok();
    drop(file);
    let _ = fs::remove_file(probe);
    now
}

/// Creates `path` empty and exclusively; `false` when something is there.
/// Needs no free blocks, only a directory entry: it works on a full disk.
pub fn create_empty(path: &str) -> Result<bool, LockError> {
    // Not made again on a stale handle (crate::stale): an empty file cannot
    // be told from another party's.
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => Ok(true),
        Err(e) if taken(path, &e) => Ok(false),
        Err(e) => Err(io_error(path, "create", e)),
    }
}

/// Replaces the file at `path` with one holding `bytes`, atomically (staged,
/// then renamed over it). The caller must hold the right to replace it.
pub fn replace(path: &str, staged: &str, bytes: &[u8]) -> Result<(), LockError> {
    write_new(staged, path, bytes)?;
    match stale::again(|| fs::rename(staged, path)) {
        Ok(()) => Ok(()),
        // A rename whose reply was lost after the server did it (NFS): its
        // retransmission finds no staging file, and `path` holds our bytes,
        // which carry a fresh random nonce or token.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(staged).is_err() && holds(path, bytes) =>
        {
            Ok(())
        }
        Err(e) => {
            unstage(staged);
            Err(io_error(path, "replace", e))
        }
    }
}

/// Whether the regular file at `path` holds exactly `bytes`.
fn holds(path: &str, bytes: &[u8]) -> bool {
    matches!(read_beside(path), Ok(Some(content)) if content.kind == Kind::Regular && content.bytes == bytes)
}

/// Writes a heartbeat's fresh `bytes` at `path`: over the old ones, in
/// place, when a regular file of the same length is there, so that a
/// renewal needs no new block and works on a full disk (a heartbeat's bytes
/// always have one length); else staged and renamed into place as
/// [`replace`] does. A contender that reads the file mid-write sees bytes
/// that changed, which is what a renewal means; the name is the holder's
/// own, so nobody else's heartbeat is ever written. (On a filesystem that
/// copies on write, btrfs or ZFS, every write takes a new block anyway.)
pub fn renew_in_place(path: &str, staged: &str, bytes: &[u8]) -> Result<(), LockError> {
    let same_length = fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == bytes.len() as u64);
    if same_length {
        if let Ok(mut file) = open_no_follow(path, Access::InPlace) {
            if file.metadata().is_ok_and(|meta| meta.is_file())
                && file.write_all(bytes).and_then(|()| file.flush()).is_ok()
            {
                return Ok(());
            }
        }
    }
    replace(path, staged, bytes)
}

/// As [`replace`]; where the share cannot rename over a file that another
/// client is reading (smbnetfs deletes the target first, which fails while
/// it is open there), writes over the file in place instead. Only a regular
/// file is written over: a link or a FIFO planted at `path` is never
/// followed or opened (as for reads, the guest looks first).
pub fn rewrite(path: &str, staged: &str, bytes: &[u8]) -> Result<(), LockError> {
    let Err(e) = replace(path, staged, bytes) else { return Ok(()) };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        _ => return Err(e),
    }
    let file = open_no_follow(path, Access::Overwrite).map_err(|e| io_error(path, "write", e))?;
    if !file.metadata().is_ok_and(|meta| meta.is_file()) {
        return Err(e);
    }
    write_all(path, file, bytes)
}

/// Removes `path`; `false` when it was already gone. A busy file is retried
/// for [`busy_retry`]`(None)`.
pub fn remove(path: &str) -> Result<bool, LockError> {
    remove_within(path, busy_retry(None))
}

/// Removes `path`, retrying a busy file for up to `bound`; `false` when it
/// was already gone, or the handle this client had to it went stale
/// ([`remove_unless_stale`] tells the two apart).
///
/// SMB refuses to delete a file that another client has open (`EBUSY`),
/// and a contender has the lock file open for the moment it reads it, at
/// every poll. Measured through smbnetfs with three contenders polling
/// every millisecond, 50 ms of retries were not always enough; the gaps
/// between their reads are short but frequent, so the removal is tried
/// again every 1 to 3 ms. After `bound` the error says the file is still
/// there, and nothing was reported removed.
pub fn remove_within(path: &str, bound: Duration) -> Result<bool, LockError> {
    remove_unless_stale(path, bound).map(|removal| removal == Removal::Removed)
}

/// What [`remove_unless_stale`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// Nothing was at the name.
    Absent,
    /// The delete met a stale handle (`ESTALE`, or `EIO` in the guest) and
    /// did nothing.
    Stale,
}

/// As [`remove_within`], saying whether a file not removed was absent or
/// met a stale handle.
pub fn remove_unless_stale(path: &str, bound: Duration) -> Result<Removal, LockError> {
    // The clock starts at the first refusal that needs it: a removal that
    // succeeds, or finds nothing, is one call.
    let mut refused: Option<Instant> = None;
    let mut tries = 0u32;
    loop {
        let mut spent = || refused.get_or_insert_with(Instant::now).elapsed();
        match fs::remove_file(path) {
            Ok(()) => return Ok(Removal::Removed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Absent),
            // The file this client had at that name was removed or replaced
            // by another: not removed here, and never removed again by
            // name, which would remove what is there now (crate::stale).
            Err(e) if stale::is_stale(&e) => return Ok(Removal::Stale),
            // A claim published as a directory ([`publish_dir`]).
            Err(e) if e.kind() != io::ErrorKind::ResourceBusy && dir_state(path) == Ok(DirState::Dir) => {
                let removed = remove_dir_instance(path, bound - spent().min(bound))?;
                return Ok(if removed { Removal::Removed } else { Removal::Absent });
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && spent() < bound => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1 + u64::from(tries % 3)));
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                return Err(LockError::Io(format!(
                    "cannot delete {path}: resource busy (another client of the share has it open) for {} ms; \
                     it is still there, try again",
                    bound.as_millis()
                )))
            }
            // Not ours to delete: in a directory with the sticky bit (as
            // /tmp), only the file's owner, the directory's owner or root
            // may; say so, and who can act.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && parent_reachable(path) => {
                return Err(LockError::Io(format!(
                    "cannot delete {path}: not permitted; it is another user's file in a directory with the sticky \
                     bit (as /tmp), or the directory is read-only: its owner, the directory's owner or root must \
                     delete it"
                )))
            }
            Err(e) => return Err(io_error(path, "delete", e)),
        }
    }
}

/// Removes the directory instance at `path` ([`publish_dir`]): renamed whole
/// to a fresh staging name beside it first, so that its name is free at once
/// and never shows a directory half emptied (which a publisher's rename
/// would replace), then emptied and removed; the sweep reclaims it if this
/// process dies in between. A rename, like an unlink, acts on whatever is
/// at the name now: the callers act under the claim on what they observed,
/// as for a file. `false` when it was already gone.
fn remove_dir_instance(path: &str, bound: Duration) -> Result<bool, LockError> {
    let Some(away) = format::away_path(path) else {
        return Err(LockError::Io(format!(
            "cannot delete {path}: it is a directory where uuidlock keeps a file; someone put it there: remove it"
        )));
    };
    let start = Instant::now();
    loop {
        match fs::rename(path, &away) {
            Ok(()) => {
                remove_dir_whole(&away);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound || stale::is_stale(&e) => return Ok(false),
            // SMB refuses to rename a directory with a file open inside (a
            // contender reading the marker): "busy", or "access denied"
            // (EACCES) where the open is through the same connection or the
            // server is strict. Briefly again, as for a busy file.
            Err(e)
                if matches!(e.kind(), io::ErrorKind::ResourceBusy | io::ErrorKind::PermissionDenied)
                    && start.elapsed() < bound =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(io_error(path, "delete", e)),
        }
    }
}

/// How long a busy file is retried before its removal fails: a tenth of
/// the lifetime of the lock it belongs to, so that a claimant finishes well
/// within its claim's lifetime, and at most 2 s (for a lock without a
/// lifetime, which nobody breaks, only the caller waits).
pub fn busy_retry(lifetime: Option<Duration>) -> Duration {
    const MOST: Duration = Duration::from_secs(2);
    lifetime.map_or(MOST, |lifetime| (lifetime / 10).min(MOST))
}

/// Creates `staged` exclusively and writes `bytes`; on failure nothing is
/// left. Errors name `path`, the lock the staging file is for.
fn write_new(staged: &str, path: &str, bytes: &[u8]) -> Result<(), LockError> {
    // Not made again on a stale handle (crate::stale); the caller's next
    // attempt stages afresh.
    let created = match create_fresh(staged) {
        // Our bytes: left by this acquire's last attempt, whose removal
        // the server still refused ([`unstage`]), or copied there by a
        // neighbour who read our token in its name. Removed and made
        // afresh either way, never linked as it is: a neighbour's file
        // would stay theirs to rewrite while we held it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && holds(staged, bytes) => {
            unstage(staged);
            create_fresh(staged)
        }
        created => created,
    };
    let file = created.map_err(|e| match e.kind() {
        // Else only a token used before stages here: an acquire-as
        // repeated after an interrupted one, instead of its undo.
        io::ErrorKind::AlreadyExists => LockError::Io(format!(
            "cannot stage {path} at {staged}: that file exists, left by an earlier acquire with this token; \
             undo that one (abandon with the token) or acquire with a fresh token"
        )),
        _ => io_error(path, "create", e),
    })?;
    write_all(path, file, bytes).inspect_err(|_| unstage(staged))
}

/// How long the removal of a staging file is tried again while "busy".
const UNSTAGE_BUSY_BOUND: Duration = Duration::from_millis(100);

/// Removes our staging file `staged`, trying again briefly while the server
/// says "busy": a FUSE client closes a file on the server after close(2)
/// has returned (its release is asynchronous), so an SMB server can still
/// see the file this process just wrote as open, and refuse its removal.
/// (Found on the smbnetfs bed: an acquire's next attempt found its staging
/// name taken, and failed.) What is left past the bound is removed again
/// by this acquire's next attempt ([`write_new`]), and otherwise reclaimed
/// by the sweep.
fn unstage(staged: &str) {
    let _ = remove_within(staged, UNSTAGE_BUSY_BOUND);
}

/// Creates `path` exclusively, for writing: a name of our own, made of our
/// fresh random UUID, that nobody else creates. An exclusive create whose
/// reply was lost after the server made the file (NFS) is answered
/// "exists" on its retransmission; an empty regular file at such a name is
/// that one, and ours to write (found by the simulator's `nfs` profile).
pub fn create_fresh(path: &str) -> io::Result<File> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() == 0) =>
        {
            open_no_follow(path, Access::Overwrite).or(Err(e))
        }
        other => other,
    }
}

/// As [`create_fresh`], for a directory: an empty directory at our own
/// name is the one a lost reply made.
pub fn create_dir_fresh(path: &str) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e)
            if e.kind() == io::ErrorKind::AlreadyExists
                && fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none()) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn write_all(path: &str, mut file: File, bytes: &[u8]) -> Result<(), LockError> {
    let written = file.write_all(bytes).and_then(|()| file.flush());
    drop(file); // close: on network shares this is what publishes the content
    written.map_err(|e| io_error(path, "write", e))
}

/// Whether a hard link failed because the filesystem (or share) has none
/// that work: `ENOSYS`, `ENOTSUP`, `EPERM` (how Linux and SMB say "no hard
/// links here"; a sandbox refusal fails the fallback's create the same
/// way), and `EIO` (how `rclone mount` says it).
fn no_hard_links(e: &io::Error) -> bool {
    #[cfg(target_os = "wasi")]
    const NOT_SUPPORTED: [i32; 4] = [52, 58, 63, 29]; // ENOSYS, ENOTSUP, EPERM, EIO
    #[cfg(not(target_os = "wasi"))]
    const NOT_SUPPORTED: [i32; 4] = [38, 95, 1, 5]; // ENOSYS, EOPNOTSUPP, EPERM, EIO
    e.kind() == io::ErrorKind::Unsupported || e.raw_os_error().is_some_and(|code| NOT_SUPPORTED.contains(&code))
}

/// Whether an exclusive create (or link) failed because something is
/// already there. Some shares say so with `EACCES` (davfs2), so "permission
/// denied" with a file at the path counts too: with our staging file just
/// written, the directory is writable.
fn taken(path: &str, e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists
        || (e.kind() == io::ErrorKind::PermissionDenied && fs::symlink_metadata(path).is_ok())
}

/// What reading a lock file (or a file beside it) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// Its bytes, at most [`format::MAX_MARKER_LEN`] + 1 of them; empty when
    /// it may not be read, or is not a regular file.
    pub bytes: Vec<u8>,
    /// When it was last written, by the filesystem's clock (the server's, on
    /// a share), where the filesystem says and the caller asked
    /// ([`read_dated`], or a contender reading a lock with a lifetime).
    pub modified: Option<SystemTime>,
    /// What kind of file it is.
    pub kind: Kind,
}

/// The kinds of file a read can find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file, read.
    Regular,
    /// A regular file this user may not read: another user's lock file with
    /// mode 600, say. It is someone else's lock, waited for and never
    /// deleted.
    Unreadable,
    /// Not a regular file (a link, a directory, a FIFO, a socket, a device),
    /// found beside the lock ([`read_beside`]): never opened, never
    /// followed. Nothing uuidlock writes is one, so it speaks for nobody.
    Special(&'static str),
}

/// Reads the file at `path`; `None` when there is no file. A symbolic link,
/// a directory or any other file that is not a regular file (a FIFO, a
/// socket, a device) is refused as [`LockError::InvalidPath`] and never read
/// (natively it is opened without blocking and closed at once; the guest
/// does not open it, as opening a FIFO blocks until someone writes to it).
pub fn read(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::Never, Where::LockPath)
}

/// As [`read`], with the file's date. The date comes from the open file,
/// which network filesystems revalidate on open (NFS's close-to-open), so
/// it is as fresh as the bytes.
pub fn read_dated(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::Always, Where::LockPath)
}

/// As [`read_dated`] for a lock file or a claim that declares a lifetime,
/// the only ones judged by their date; as [`read`] for any other, so that
/// waiting on a lock without a lifetime costs no more calls.
pub fn read_if_lifetime(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::IfLifetime, Where::LockPath)
}

/// Reads a file uuidlock keeps beside a lock (a claim, a heartbeat, a queue
/// entry, the queue's `served`), dated: `None` when there is none. As
/// [`read`] it never follows a link, never blocks on a FIFO and reads at
/// most [`format::MAX_MARKER_LEN`] + 1 bytes; but anything that is not a
/// regular file is reported as [`Kind::Special`] (dated, never opened)
/// instead of refused, because such a name is anyone's to plant in a shared
/// directory and must not turn the caller's call into an error.
pub fn read_beside(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::Always, Where::Beside)
}

/// As [`read_beside`], without the date: for a file read for its bytes
/// alone (the queue's entries and `served`, read at every look of a
/// waiter). In the guest that is one call less: the date is asked of the
/// open file.
pub fn read_beside_undated(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::Never, Where::Beside)
}

/// As [`read_beside`], for a claim, which is a directory holding its marker
/// where there are no hard links ([`publish_dir`]).
pub fn read_claim(path: &str) -> Result<Option<Content>, LockError> {
    read_file(path, Dating::Always, Where::Claim)
}

/// Which reads need the file's date.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dating {
    Never,
    IfLifetime,
    Always,
}

/// Whether the path read is the lock path the caller named (anything but a
/// regular file there is the caller's mistake) or a name uuidlock derives
/// from it (anything but a regular file there is someone else's doing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    LockPath,
    Beside,
    /// A claim: as [`Where::Beside`], but a directory holding a marker is a
    /// claim published as one ([`publish_dir`]), read as its marker. Only
    /// claims: a directory anywhere else stays what it is.
    Claim,
    /// The marker inside a claim's directory.
    Inside,
}

fn read_file(path: &str, dating: Dating, at: Where) -> Result<Option<Content>, LockError> {
    let read = read_stale_again(path, dating, at)?;
    // A claim's directory without its marker may be one renamed aside (or
    // replaced) between the look and the read of its marker: look once more
    // before taking it for junk (found in review: 4% of the reads of a claim
    // published and removed in a loop).
    match read {
        Some(Content { kind: Kind::Special("a directory"), .. }) if at == Where::Claim => {
            read_stale_again(path, dating, at)
        }
        read => Ok(read),
    }
}

fn read_stale_again(path: &str, dating: Dating, at: Where) -> Result<Option<Content>, LockError> {
    // A stale handle anywhere in the read (the look, the open, the bytes)
    // means the file was replaced meanwhile: read it again, from its name.
    stale::again_if(|| read_once(path, dating, at), |failure| matches!(failure, Failure::Stale(_))).map_err(|failure| {
        match failure {
            Failure::Stale(e) => io_error(path, "read", e),
            Failure::Lock(e) => e,
        }
    })
}

/// Why one read failed: a stale handle (read again) or anything else.
enum Failure {
    Stale(io::Error),
    Lock(LockError),
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Failure {
        Failure::Lock(e)
    }
}

/// An I/O error on `path` while reading it, classified. "No such file"
/// reaches here only from a file already open (an open that finds no file
/// is an absent file, [`open_regular`]): GlusterFS answers a read of a file
/// that another client removed meanwhile so (seen in CI: a shared holder's
/// heartbeat read as its holder released). That file is gone, as one that
/// went stale is: read again from its name, which then finds what is there
/// now, or nothing.
fn read_failure(path: &str, e: io::Error) -> Failure {
    if stale::is_stale(&e) || e.kind() == io::ErrorKind::NotFound {
        return Failure::Stale(e);
    }
    Failure::Lock(check_not_link_or_dir(path).err().unwrap_or_else(|| io_error(path, "read", e)))
}

fn read_once(path: &str, dating: Dating, at: Where) -> Result<Option<Content>, Failure> {
    let Some(opened) = open_regular(path, at)? else { return Ok(None) };
    let (file, mut modified) = match opened {
        Opened::File(file, modified) => (file, modified),
        Opened::Unreadable(modified) => {
            let modified = modified.filter(|_| dating == Dating::Always);
            return Ok(Some(Content { bytes: Vec::new(), modified, kind: Kind::Unreadable }));
        }
        Opened::Special(kind, modified) => {
            // A claim's directory holding a marker is a claim published
            // where there are no hard links ([`publish_dir`]): read as its
            // marker. Anything else there is what it is.
            if at == Where::Claim && kind == "a directory" {
                match read_once(&format!("{path}/{DIR_MARKER}"), dating, Where::Inside) {
                    Ok(Some(inside)) if !matches!(inside.kind, Kind::Special(_)) => return Ok(Some(inside)),
                    Err(Failure::Stale(e)) => return Err(Failure::Stale(e)),
                    _ => {}
                }
            }
            return Ok(Some(Content { bytes: Vec::new(), modified, kind: Kind::Special(kind) }));
        }
    };
    let bytes = read_whole(&file).map_err(|e| read_failure(path, e))?;
    let wanted = match dating {
        Dating::Never => false,
        Dating::Always => true,
        // An empty file too: a contender with a lifetime judges it by its
        // date (point 12 of crate::protocol).
        Dating::IfLifetime => {
            bytes.is_empty() || matches!(format::parse(&bytes), Marker::Uuidlock(held) if held.stale_after.is_some())
        }
    };
    if !wanted {
        modified = None;
    } else if modified.is_none() {
        // The guest has no date yet: ask the open file.
        modified = file.metadata().and_then(|meta| meta.modified()).ok();
    }
    Ok(Some(Content { bytes, modified, kind: Kind::Regular }))
}

/// The bytes of the open regular file `file`, at most
/// [`format::MAX_MARKER_LEN`] + 1 of them, in one read where that read
/// shows the whole file.
///
/// A read of a regular file returns fewer bytes than asked only at the
/// file's end (POSIX `read`; NFS, FUSE and the WASI hosts pass that on),
/// and nothing only there. So an answer that is empty, or shorter than
/// asked and ending in a newline as everything uuidlock writes does, is
/// the whole file: the read that would return nothing, which
/// `read_to_end` makes to learn that, is saved (one call per read, two of
/// a release's fourteen). Any other answer (a foreign file's, a writer's
/// half-written bytes) is read on to the end as before. Exclusion does not
/// rest on this: a filesystem that answered short in the middle of a file
/// would still show its first bytes, and the marker they show is the
/// file's, whose creator alone reads its token back
/// ([`crate::protocol`], point 1).
fn read_whole(mut file: impl Read) -> io::Result<Vec<u8>> {
    let limit = format::MAX_MARKER_LEN + 1;
    let mut bytes = vec![0; limit];
    let got = loop {
        match file.read(&mut bytes) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            got => break got?,
        }
    };
    bytes.truncate(got);
    if got == 0 || (got < limit && bytes.ends_with(b"\n")) {
        return Ok(bytes);
    }
    file.take((limit - got) as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A regular file opened for reading, one that exists but may not be read,
/// or (beside the lock) one that is not a regular file; with its
/// modification time.
enum Opened {
    File(File, Option<SystemTime>),
    Unreadable(Option<SystemTime>),
    Special(&'static str, Option<SystemTime>),
}

/// Opens `path` for reading if it is a regular file; `None` when there is
/// no file. Natively the open file's date comes free with the type check;
/// the guest leaves it to the caller, who asks only when it needs it.
///
/// Natively the open is non-blocking (`O_NONBLOCK`, which a FIFO honours),
/// and the file type comes from the open file. WASI cannot open without
/// blocking, so the guest asks for the type first (one more call): the
/// remaining window, a FIFO swapped in between the two calls, needs someone
/// who can write the lock directory and means to wedge it.
fn open_regular(path: &str, at: Where) -> Result<Option<Opened>, Failure> {
    // Not a regular file: the caller's mistake at the lock path, someone
    // else's beside it.
    let not_regular = |meta: &fs::Metadata| -> Result<Option<Opened>, Failure> {
        match at {
            Where::LockPath => Err(Failure::Lock(not_a_lock_file(path, kind_of(&meta.file_type())))),
            Where::Beside | Where::Claim | Where::Inside => {
                Ok(Some(Opened::Special(kind_of(&meta.file_type()), meta.modified().ok())))
            }
        }
    };
    let failed = |e: io::Error| read_failure(path, e);
    #[cfg(target_os = "wasi")]
    {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(absent(path, e)?),
            Err(e) => return Err(failed(e)),
        };
        if !meta.is_file() {
            return not_regular(&meta);
        }
        match open_no_follow(path, Access::Read) {
            Ok(file) => Ok(Some(Opened::File(file, None))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(absent(path, e)?),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Some(Opened::Unreadable(meta.modified().ok()))),
            // Swapped for something else since the look (ELOOP: a link).
            Err(e) => match fs::symlink_metadata(path) {
                Ok(meta) if !meta.is_file() => not_regular(&meta),
                _ => Err(failed(e)),
            },
        }
    }
    #[cfg(not(target_os = "wasi"))]
    {
        match open_no_follow(path, Access::Read) {
            Ok(file) => {
                let meta = file.metadata().map_err(failed)?;
                if !meta.is_file() {
                    return not_regular(&meta);
                }
                Ok(Some(Opened::File(file, meta.modified().ok())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(absent(path, e)?),
            Err(e) => match fs::symlink_metadata(path) {
                // Another user's file we may not read: a held lock.
                Ok(meta) if meta.is_file() && e.kind() == io::ErrorKind::PermissionDenied => {
                    Ok(Some(Opened::Unreadable(meta.modified().ok())))
                }
                // A link (ELOOP), a socket (ENXIO): say what it is.
                Ok(meta) if !meta.is_file() => not_regular(&meta),
                _ => Err(failed(e)),
            },
        }
    }
}

/// No file at `path`: `None`, unless nothing above it exists either; then
/// it is outside the sandbox.
fn absent<T>(path: &str, e: io::Error) -> Result<Option<T>, LockError> {
    if any_ancestor_exists(path) {
        Ok(None)
    } else {
        Err(io_error(path, "read", e))
    }
}

/// Why a file this process has just written (its lock file, its claim)
/// reads as [`Kind::Unreadable`]: an error, never someone else's file.
pub fn unreadable_own(path: &str) -> LockError {
    LockError::Io(format!(
        "cannot read back {path}, which this process wrote: permission denied; the directory must let this \
         user read the files it creates"
    ))
}

/// Why the lock path `path` cannot be a lock file: it is of `kind` (as
/// [`kind_of`] names it), not a regular file. uuidlock never opens,
/// follows or deletes it.
pub fn not_a_lock_file(path: &str, kind: &str) -> LockError {
    LockError::InvalidPath(match kind {
        "a symbolic link" => {
            format!("{path} is a symbolic link; uuidlock does not follow links at the lock path, name a regular file")
        }
        "a directory" => format!("{path} is a directory; name a file inside it, e.g. {}/job.lock", path.trim_end_matches('/')),
        _ => format!(
            "{path} is {kind}, not a regular file; uuidlock never opens or deletes it: remove it, or name another lock path"
        ),
    })
}

/// Names a file type that is neither a regular file, a directory nor a link.
fn special_kind(file_type: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "a device";
        }
    }
    let _ = file_type;
    "a special file (a FIFO, a socket or a device)"
}

/// Names any file type but a regular file's.
pub fn kind_of(file_type: &fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a directory"
    } else {
        special_kind(file_type)
    }
}

/// What is at a name where uuidlock keeps a directory of its own (the
/// fencing counter, the queue), looked at without following a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    Absent,
    Dir,
    /// Anything else: never listed, entered or followed.
    Other(&'static str),
}

/// What is at `path`, for a directory uuidlock keeps beside a lock. A
/// listing or a lookup inside a FIFO opens it, which blocks; inside a link,
/// follows it: so every use of such a directory looks first.
pub fn dir_state(path: &str) -> Result<DirState, LockError> {
    match stale::again(|| fs::symlink_metadata(path)) {
        Ok(meta) if meta.is_dir() => Ok(DirState::Dir),
        Ok(meta) => Ok(DirState::Other(kind_of(&meta.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DirState::Absent),
        Err(e) => Err(io_error(path, "inspect", e)),
    }
}

/// How [`open_no_follow`] opens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    /// For writing, truncated.
    Overwrite,
    /// For writing over the bytes in place, not truncated.
    InPlace,
}

/// Opens `path`, failing (`ELOOP`) if it is a symbolic link, and without
/// waiting for the other end if it is a FIFO. One call, where checking with
/// `lstat` first would take two.
#[cfg(unix)]
fn open_no_follow(path: &str, access: Access) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    match access {
        Access::Read => options.read(true),
        Access::Overwrite => options.write(true).truncate(true),
        Access::InPlace => options.write(true),
    };
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

/// As above. Rust's std on WASI always follows links (its switch is
/// unstable), so this goes through wasi-libc's `open`, which resolves the
/// path against the preopened directories just as std does. (WASI hosts
/// ignore `O_NONBLOCK` on open, hence the callers' look at the type first.)
#[cfg(target_os = "wasi")]
fn open_no_follow(path: &str, access: Access) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let path = std::ffi::CString::new(path).map_err(|_| io::ErrorKind::InvalidInput)?;
    let flags = match access {
        Access::Read => libc::O_RDONLY,
        Access::Overwrite => libc::O_WRONLY | libc::O_TRUNC,
        Access::InPlace => libc::O_WRONLY,
    };
    // SAFETY: `path` is NUL-terminated and outlives the call; `open` takes
    // no other pointers.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_NOFOLLOW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `open` just returned this descriptor, and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(not(any(unix, target_os = "wasi")))]
fn open_no_follow(path: &str, access: Access) -> io::Result<File> {
    match check_not_link_or_dir(path) {
        Ok(_) if access == Access::Read => File::open(path),
        Ok(_) if access == Access::InPlace => OpenOptions::new().write(true).open(path),
        Ok(_) => OpenOptions::new().write(true).truncate(true).open(path),
        Err(e) => Err(io::Error::other(e.to_string())),
    }
}

impl Content {
    /// What the file says about its holder. A file that may not be read is
    /// someone else's; one that is not a regular file speaks for nobody.
    pub fn marker(&self) -> Marker {
        match self.kind {
            Kind::Regular => format::parse(&self.bytes),
            Kind::Unreadable => Marker::Foreign("(unreadable by this user: permission denied)".into()),
            Kind::Special(kind) => Marker::Foreign(format!("({kind}, not a regular file)")),
        }
    }
}

/// The marker at `path`; `None` when there is no file.
pub fn read_marker(path: &str) -> Result<Option<Marker>, LockError> {
    Ok(read(path)?.map(|content| content.marker()))
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
    if meta.file_type().is_symlink() || meta.is_dir() {
        return Err(not_a_lock_file(path, kind_of(&meta.file_type())));
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
    if stale::is_stale(&e) {
        return LockError::Io(format!(
            "cannot {action} {path}: the share answered \"stale file handle\" for {} s (in the guest: \"I/O error\", \
             which WASI also gives for errors it has no name for, such as a quota or a read-only filesystem): \
             another client keeps removing or replacing it faster than this one's cache follows, or the disk \
             fails; see `uuidlock doctor` for the share's caches",
            stale::BOUND.as_secs_f64()
        ));
    }
    match e.kind() {
        io::ErrorKind::NotFound if !any_ancestor_exists(path) => LockError::OutsideSandbox(format!(
            "cannot {action} {path}: it is not inside any directory granted to this sandbox; \
             grant its directory (e.g. wasmtime run --dir HOST_DIR::GUEST_DIR) and name the lock inside it"
        )),
        io::ErrorKind::NotFound => LockError::Io(format!(
            "cannot {action} {path}: its directory does not exist; create it first (on a network share whose \
                 mount showed it before: the client has stopped showing it, check the mount)"
        )),
        io::ErrorKind::PermissionDenied if action == "read" || action == "inspect" => LockError::Io(format!(
            "cannot {action} {path}: permission denied; this user must be allowed to search its directory"
        )),
        io::ErrorKind::PermissionDenied => LockError::Io(format!(
            "cannot {action} {path}: permission denied; the directory must be writable by this user"
        )),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => LockError::Io(format!(
            "cannot {action} {path}: {}; free some space (a lock without a lifetime is still released)",
            condition(&e)
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
        _ => LockError::Io(format!("cannot {action} {path}: {}", condition(&e))),
    }
}

/// What went wrong, in words: "no space left on device". Without the error
/// number, which in the guest is WASI's (51 for a full disk, where Linux
/// says 28) and means nothing to the user.
fn condition(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.rfind(" (os error ").map_or(text.as_str(), |at| &text[..at]);
    // "No space left" reads "no space left" mid-sentence, but "I/O error"
    // stays as it is: only a capital followed by a small letter is lowered.
    let mut chars = text.chars();
    match (chars.next(), chars.clone().next()) {
        (Some(first), Some(second)) if second.is_lowercase() => first.to_lowercase().chain(chars).collect(),
        _ => text.to_owned(),
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
    use crate::format::Token;

    // Where there are no hard links a claim is a directory renamed into
    // place: whole from its first instant, refused where one is there, read
    // as its marker, and removed whole (renamed aside first), leaving
    // nothing behind.
    #[test]
    fn a_claim_published_as_a_directory_is_whole_exclusive_and_removed_whole() {
        let dir = crate::scratch::tempdir();
        let lock = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let ours = Token::generate("").unwrap();
        let claim = format::claim_path(&lock, &ours);
        let staged = |token: &Token| format::staged_path(&lock, token);
        assert_eq!(publish_dir(&claim, &staged(&ours), b"ours"), Ok(Created::Yes));
        assert_eq!(fs::read(format!("{claim}/{DIR_MARKER}")).unwrap(), b"ours");
        let there = read_claim(&claim).unwrap().unwrap();
        assert_eq!((there.bytes.as_slice(), there.kind), (&b"ours"[..], Kind::Regular));
        // Only a claim is read through its directory: anywhere else beside
        // the lock (a heartbeat, an entry) a directory is what it is.
        assert_eq!(read_beside(&claim).unwrap().unwrap().kind, Kind::Special("a directory"));
        assert!(there.modified.is_some(), "a claim is dated by its marker");

        let theirs = Token::generate("").unwrap();
        let Ok(Created::Exists { there: Some(there), .. }) = publish_dir(&claim, &staged(&theirs), b"theirs") else {
            panic!("a second directory was renamed over the first")
        };
        assert_eq!(there.bytes, b"ours");
        assert!(!fs::exists(staged(&theirs)).unwrap(), "the loser's staged directory was left");

        assert_eq!(remove_within(&claim, Duration::ZERO), Ok(true));
        assert_eq!(remove_within(&claim, Duration::ZERO), Ok(false));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "something was left beside the lock");
    }

    // A staging file this acquire's last attempt left (its removal refused
    // as "busy": SMB, before the FUSE client closed it on the server), or a
    // copy of our bytes planted there, is replaced by a file of our own,
    // never linked as it is; one holding other bytes is an earlier
    // acquire's with this token, named in the error.
    #[test]
    fn an_attempt_replaces_a_staging_file_with_its_bytes_and_keeps_others() {
        use std::os::unix::fs::MetadataExt;
        let dir = crate::scratch::tempdir();
        let lock = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let staged = format::staged_path(&lock, &Token::generate("").unwrap());
        fs::write(&staged, b"ours").unwrap();
        let planted = fs::metadata(&staged).unwrap().ino();
        let kept = format!("{staged}.kept");
        fs::hard_link(&staged, &kept).unwrap();
        assert_eq!(publish(&lock, &staged, b"ours", Fallback::Allowed), Ok(Created::Yes));
        assert_eq!(fs::read(&lock).unwrap(), b"ours");
        assert_ne!(fs::metadata(&lock).unwrap().ino(), planted, "the file found there became the lock");
        assert!(!fs::exists(&staged).unwrap(), "the staging file was left");
        fs::remove_file(&kept).unwrap();

        fs::remove_file(&lock).unwrap();
        fs::write(&staged, b"earlier").unwrap();
        match publish(&lock, &staged, b"ours", Fallback::Allowed) {
            Err(LockError::Io(why)) => assert!(why.contains(&staged) && why.contains("abandon"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(&staged).unwrap(), b"earlier", "an earlier acquire's staging file was changed");
        assert!(!fs::exists(&lock).unwrap());
    }

    // Emptying a directory goes through a descriptor opened without
    // following links: a link to another directory (swapped in by a
    // neighbour) empties nothing there (found in review: a swap raced in a
    // loop deleted files outside the lock's directory).
    #[test]
    fn a_link_in_place_of_a_directory_to_empty_is_never_followed() {
        let dir = crate::scratch::tempdir();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("marker"), b"theirs").unwrap();
        let link = dir.path().join("x.lock.0c6b1f3a-94b8-4d4e-9a55-3d7a2d3c8b11.claim");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        remove_dir_whole(link.to_str().unwrap());
        assert_eq!(fs::read(elsewhere.join("marker")).unwrap(), b"theirs");
        assert!(fs::symlink_metadata(&link).is_ok(), "the link itself is left");
    }

    // A directory at a claim's name that holds no marker is what it is
    // (planted: nothing uuidlock makes), however it was filled; its removal
    // frees the name whatever is inside.
    #[test]
    fn a_directory_without_a_marker_beside_the_lock_is_what_it_is() {
        let dir = crate::scratch::tempdir();
        let lock = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let claim = format::claim_path(&lock, &Token::generate("").unwrap());
        fs::create_dir(&claim).unwrap();
        assert_eq!(read_claim(&claim).unwrap().unwrap().kind, Kind::Special("a directory"));
        fs::create_dir(format!("{claim}/{DIR_MARKER}")).unwrap();
        fs::write(format!("{claim}/{DIR_MARKER}/deep"), b"x").unwrap();
        assert_eq!(read_claim(&claim).unwrap().unwrap().kind, Kind::Special("a directory"));
        assert_eq!(remove_within(&claim, Duration::ZERO), Ok(true));
        assert!(!fs::exists(&claim).unwrap());
        // Only a name uuidlock derives can be renamed aside.
        let odd = dir.path().join("odd").to_str().unwrap().to_owned();
        fs::create_dir(&odd).unwrap();
        assert!(
            matches!(remove_within(&odd, Duration::ZERO), Err(LockError::Io(e)) if e.contains("someone put it there"))
        );
    }

    #[test]
    fn a_link_reported_as_existing_but_holding_our_bytes_was_ours() {
        // What an NFS server's answer to a retransmitted LINK looks like.
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let staged = format!("{path}.new");
        fs::write(&path, b"ours").unwrap();
        assert_eq!(publish(&path, &staged, b"ours", Fallback::Directory), Ok(Created::Yes));
        let Ok(Created::Exists { there: Some(there), now }) = publish(&path, &staged, b"theirs", Fallback::Directory)
        else {
            panic!("published over an existing file")
        };
        assert_eq!(there.bytes, b"ours");
        assert_eq!(now, None, "dated, though no lifetime is declared");
        assert!(!fs::exists(&staged).unwrap());
    }

    // Only a lock that declares a lifetime is judged by its date: reading it
    // dates it, and the staging file's date gives the filesystem's "now".
    #[test]
    fn only_a_lock_with_a_lifetime_is_dated() {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("x.lock").to_str().unwrap().to_owned();
        let token = format::Token::generate("").unwrap();
        fs::write(&path, format::Held::new(token, Some(std::time::Duration::from_secs(1))).encode()).unwrap();
        let Ok(Created::Exists { there: Some(there), now }) =
            publish(&path, &format!("{path}.new"), b"x", Fallback::Directory)
        else {
            panic!("published over an existing file")
        };
        assert!(now.is_some() && there.modified.is_some());
        assert!(now >= there.modified, "the staging file was written after the lock");
    }

    // GlusterFS answers "no such file" to a read of an open file that
    // another client removed meanwhile: read again by name, not an error
    // naming a missing directory (a contend worker in shared mode failed so
    // in CI, reading a holder's heartbeat).
    #[test]
    fn a_file_gone_while_open_is_read_again_by_name() {
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("x.lock.beat").to_str().unwrap().to_owned();
        assert!(matches!(read_failure(&path, io::Error::from(io::ErrorKind::NotFound)), Failure::Stale(_)));
        // Read again, the name says what is there now: nothing.
        assert_eq!(read_file(&path, Dating::Never, Where::Beside).unwrap().map(|c| c.bytes), None);
        // Other errors are not read again.
        fs::write(&path, b"x").unwrap();
        assert!(matches!(read_failure(&path, io::Error::from(io::ErrorKind::PermissionDenied)), Failure::Lock(_)));
    }

    // One read where its answer is the whole file (empty, or short of the
    // limit and ending in a newline); read on to the end otherwise, and
    // never past the limit.
    #[test]
    fn a_file_is_read_in_one_call_where_the_answer_is_the_whole_file() {
        // Answers in the pieces given, then the end; counts the calls.
        struct Pieces(Vec<Vec<u8>>, usize);
        impl Read for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 += 1;
                if self.0.is_empty() {
                    return Ok(0);
                }
                let piece = &mut self.0[0];
                let n = piece.len().min(buf.len());
                buf[..n].copy_from_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    self.0.remove(0);
                }
                Ok(n)
            }
        }
        let read = |pieces: &[&[u8]]| {
            let mut file = Pieces(pieces.iter().map(|p| p.to_vec()).collect(), 0);
            let bytes = read_whole(&mut file).unwrap();
            (bytes, file.1)
        };
        let marker = b"1\nuuidlock/1?token=7c9e6679-7425-40de-944b-e07a4b7b7bd1\n";
        assert_eq!(read(&[marker]), (marker.to_vec(), 1));
        assert_eq!(read(&[]), (Vec::new(), 1));
        // Half written: read on, and the rest comes.
        assert_eq!(read(&[b"1\nuuid", b"lock\n"]), (b"1\nuuidlock\n".to_vec(), 3));
        // The limit is kept whatever the pieces.
        let long = vec![b'x'; format::MAX_MARKER_LEN + 10];
        assert_eq!(read(&[&long]).0.len(), format::MAX_MARKER_LEN + 1);
        let (bytes, _) = read(&[&long[..10], &long[10..]]);
        assert_eq!(bytes.len(), format::MAX_MARKER_LEN + 1);
        // A real file: its whole bytes, however long.
        let dir = crate::scratch::tempdir();
        let path = dir.path().join("x.lock");
        fs::write(&path, marker).unwrap();
        assert_eq!(read_whole(File::open(&path).unwrap()).unwrap(), marker);
        fs::write(&path, &long).unwrap();
        assert_eq!(read_whole(File::open(&path).unwrap()).unwrap(), &long[..format::MAX_MARKER_LEN + 1]);
    }

    #[test]
    fn shares_that_misreport_are_read_as_meant() {
        let dir = crate::scratch::tempdir();
        let there = dir.path().join("there").to_str().unwrap().to_owned();
        let absent = dir.path().join("absent").to_str().unwrap().to_owned();
        fs::write(&there, b"x").unwrap();
        let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
        // davfs2: EACCES for "exists".
        assert!(taken(&there, &denied()));
        assert!(!taken(&absent, &denied()));
        assert!(taken(&absent, &io::Error::from(io::ErrorKind::AlreadyExists)));
        // rclone mount: EIO from link means no usable hard links.
        assert!(no_hard_links(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(no_hard_links(&io::Error::from_raw_os_error(libc::EPERM)));
        assert!(!no_hard_links(&io::Error::from_raw_os_error(libc::ENOSPC)));
    }
}
