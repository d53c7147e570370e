//! The two filesystem calls this host makes differently from wasmtime-wasi,
//! for lock directories that others can write: opens that never wait for
//! the other end of a FIFO, and directories as shared as the directory they
//! are made in. Both resolve paths beneath the granted directory with
//! cap-primitives, as wasmtime-wasi itself does, and check its permissions
//! the same way.
//!
//! - **`descriptor.open-at`**, with `O_NONBLOCK`. WASI has no way to open
//!   without blocking, so the guest looks at a file's type before opening
//!   it, and someone who can write the lock's directory could swap a FIFO
//!   in between the two calls: the open then waited for a writer for good,
//!   past every timeout (a neighbour swapping `served` in a loop did it
//!   within seconds). Opened non-blocking, a FIFO opens at once and the
//!   guest's next look refuses it. On a regular file or a directory the
//!   flag changes nothing. Everything else is wasmtime-wasi's `open_at`.
//! - **`descriptor.create-directory-at`**, shared. uuidlock keeps its
//!   fencing counter and its queue in directories beside the lock, made by
//!   whoever uses the lock first, and every later user must be able to
//!   write in them. WASI cannot set a mode, so wasmtime-wasi's directory
//!   gets this process's umask (0755 with the usual 022), and in a directory
//!   shared by several accounts (a 1777 scratch directory, a group
//!   directory) the first user shut every other out. Here a new directory
//!   gets read, write and search for the group, and for others, where the
//!   directory it is made in gives them write. The mode is set through the
//!   new directory's own descriptor, opened without following a link and
//!   without blocking, and only if what is opened there is an empty
//!   directory of this user's: a neighbour who renames one of this user's
//!   directories (with files in it) over the new name gets nothing opened
//!   to others.
//!
//! Only this host does this: under `wasmtime run`, jco or wasmtime-py the
//! window before an open stays (the README's limitations), and the umask
//! decides a directory's mode.

use std::path::Path;

use cap_primitives::fs::{create_dir, open, open_dir, DirOptions, FollowSymlinks, OpenOptions};
use wasmtime::component::{self, Resource};
use wasmtime::{Engine, Result, StoreContextMut};
use wasmtime_wasi::filesystem::{Descriptor, Dir, File};
use wasmtime_wasi::p2::bindings::filesystem::types::{DescriptorFlags, ErrorCode, OpenFlags, PathFlags};
use wasmtime_wasi::OpenMode;

use crate::engine::ComponentState;

/// Puts both replacements into `linker`, under the version of
/// `wasi:filesystem/types` that `component` imports (the one wasmtime-wasi
/// defines: both come from one wasmtime release).
pub(crate) fn link(
    engine: &Engine,
    component: &component::Component,
    linker: &mut component::Linker<ComponentState>,
) -> Result<()> {
    let imports = component.component_type();
    let Some(types) =
        imports.imports(engine).map(|(name, _)| name).find(|name| name.starts_with("wasi:filesystem/types@"))
    else {
        return Ok(()); // a guest without files
    };
    linker.allow_shadowing(true);
    let mut instance = linker.instance(types)?;
    instance.func_wrap(
        "[method]descriptor.create-directory-at",
        |mut store: StoreContextMut<'_, ComponentState>, (fd, path): (Resource<Descriptor>, String)| {
            let result = match store.data_mut().table.get(&fd)? {
                Descriptor::Dir(dir) if dir.perms.write_not_permitted() => Err(ErrorCode::NotPermitted),
                Descriptor::Dir(dir) => make_shared_dir(&dir.dir, Path::new(&path)).map_err(ErrorCode::from),
                Descriptor::File(_) => Err(ErrorCode::NotDirectory),
            };
            Ok((result,))
        },
    )?;
    instance.func_wrap(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, ComponentState>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            let table = &mut store.data_mut().table;
            let opened = match table.get(&fd)? {
                Descriptor::Dir(dir) => open_without_waiting(dir, path_flags, &path, oflags, flags),
                Descriptor::File(_) => Err(ErrorCode::NotDirectory),
            };
            Ok((match opened {
                Ok(descriptor) => Ok(table.push(descriptor)?),
                Err(code) => Err(code),
            },))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// wasmtime-wasi's `Dir::open_at` (48), with `O_NONBLOCK`.
fn open_without_waiting(
    dir: &Dir,
    path_flags: PathFlags,
    path: &str,
    oflags: OpenFlags,
    flags: DescriptorFlags,
) -> Result<Descriptor, ErrorCode> {
    let mut create = false;
    let mut open_mode = OpenMode::empty();
    let mut options = OpenOptions::new();
    if oflags.contains(OpenFlags::CREATE) {
        if oflags.contains(OpenFlags::EXCLUSIVE) {
            options.create_new(true);
        } else {
            options.create(true);
        }
        create = true;
        options.write(true);
        open_mode |= OpenMode::WRITE;
    }
    if oflags.contains(OpenFlags::TRUNCATE) {
        options.truncate(true).write(true);
        open_mode |= OpenMode::WRITE;
    }
    if flags.contains(DescriptorFlags::READ) {
        options.read(true);
        open_mode |= OpenMode::READ;
    }
    if flags.contains(DescriptorFlags::WRITE) {
        options.write(true);
        open_mode |= OpenMode::WRITE;
    } else {
        // As wasmtime-wasi: open for reading, and let the permissions refuse
        // a write later.
        options.read(true);
        open_mode |= OpenMode::READ;
    }
    let follow = if path_flags.contains(PathFlags::SYMLINK_FOLLOW) { FollowSymlinks::Yes } else { FollowSymlinks::No };
    options._cap_fs_ext_follow(follow);
    let sync = DescriptorFlags::FILE_INTEGRITY_SYNC
        | DescriptorFlags::DATA_INTEGRITY_SYNC
        | DescriptorFlags::REQUESTED_WRITE_SYNC;
    if flags.intersects(sync) {
        return Err(ErrorCode::Unsupported);
    }
    let changes = OpenFlags::CREATE | OpenFlags::EXCLUSIVE | OpenFlags::TRUNCATE;
    if oflags.contains(OpenFlags::DIRECTORY) && oflags.intersects(changes) {
        return Err(ErrorCode::Invalid);
    }
    if dir.perms.write_not_permitted() && (create || open_mode.contains(OpenMode::WRITE)) {
        return Err(ErrorCode::NotPermitted);
    }
    // The one difference.
    options._cap_fs_ext_nonblock(true);
    let opened = open(&dir.dir, Path::new(path), &options)?;
    // Ours are synchronous calls, made on the calling thread.
    let blocking = true;
    if opened.metadata()?.is_dir() {
        Ok(Descriptor::Dir(Dir::new(opened, dir.perms, open_mode, blocking)))
    } else if oflags.contains(OpenFlags::DIRECTORY) {
        Err(ErrorCode::NotDirectory)
    } else {
        Ok(Descriptor::File(File::new(opened, dir.perms, open_mode, blocking)))
    }
}

/// Makes the directory `path` beneath `start`, with group and other access
/// where its parent gives them write (see the module docs).
fn make_shared_dir(start: &std::fs::File, path: &Path) -> std::io::Result<()> {
    create_dir(start, path, &DirOptions::new())?;
    share(start, path);
    Ok(())
}

/// Gives the directory at `path` (beneath `start`) group and other access
/// where its parent gives them write, if it is an empty directory of this
/// user's; best effort.
fn share(start: &std::fs::File, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        // Best effort: the directory is made either way.
        let shared =
            |parent: u32| (if parent & 0o020 != 0 { 0o070 } else { 0 }) | (if parent & 0o002 != 0 { 0o007 } else { 0 });
        let Ok(parent) = open_dir(start, parent).and_then(|dir| dir.metadata()) else { return };
        let wanted = shared(parent.permissions().mode());
        if wanted == 0 {
            return;
        }
        // A descriptor that can change the mode (cap-primitives opens
        // directories with O_PATH, which cannot), of what is at the name:
        // no link followed, no FIFO waited on.
        let mut options = OpenOptions::new();
        options
            .read(true)
            ._cap_fs_ext_follow(FollowSymlinks::No)
            ._cap_fs_ext_nonblock(true)
            ._cap_fs_ext_maybe_dir(true);
        let Ok(made) = open(start, path, &options) else { return };
        let Ok(meta) = made.metadata() else { return };
        // SAFETY: geteuid has no preconditions.
        let ours = meta.uid() == unsafe { libc::geteuid() };
        let empty = cap_primitives::fs::read_base_dir(&made).is_ok_and(|mut entries| entries.next().is_none());
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() && ours && empty && mode & wanted != wanted {
            let _ = made.set_permissions(std::fs::Permissions::from_mode(mode | wanted));
        }
    }
    #[cfg(not(unix))]
    let _ = (start, path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    // A directory made in a 1777 or 2775 directory is as shared; in a 0755
    // one it keeps the umask's mode.
    #[test]
    fn a_new_directory_is_as_shared_as_its_parent() {
        let root = tempfile::tempdir().unwrap();
        for (parent_mode, made) in [(0o1777, Some(0o777)), (0o2775, Some(0o2775)), (0o755, None)] {
            let parent = root.path().join(format!("{parent_mode:o}"));
            std::fs::create_dir(&parent).unwrap();
            std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(parent_mode)).unwrap();
            let start = std::fs::File::open(root.path()).unwrap();
            let name = Path::new(parent.file_name().unwrap()).join("job.lock.fence");
            make_shared_dir(&start, &name).unwrap();
            let got = mode(&root.path().join(&name));
            match made {
                Some(made) => assert_eq!(got, made, "in a {parent_mode:o} directory"),
                // As the umask made it: nobody else may write.
                None => assert_eq!(got & 0o002, 0, "in a {parent_mode:o} directory: {got:o}"),
            }
        }
    }

    // What a neighbour renames over the new name (one of this user's own
    // directories, with files in it) is never opened to others.
    #[test]
    fn a_directory_with_files_in_it_is_never_opened_to_others() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let private = root.path().join("secret");
        std::fs::create_dir(&private).unwrap();
        std::fs::write(private.join("key"), b"mine").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let start = std::fs::File::open(root.path()).unwrap();
        share(&start, Path::new("secret"));
        assert_eq!(mode(&private), 0o700);
        std::fs::remove_file(private.join("key")).unwrap();
        share(&start, Path::new("secret"));
        assert_eq!(mode(&private), 0o777, "an empty one of ours is shared");
    }
}
