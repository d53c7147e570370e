// A direct, synchronous implementation of the WASI 0.2 filesystem and the
// stream and poll resources the uuidlock guest uses, for the worker thread
// that runs it. Linux only (it needs /proc/self/fd; see below).
//
// preview2-shim 0.26.1 serves every file open, stream read and write, and
// descriptor close through its own I/O worker thread, one blocking message
// round trip each (about 25 µs here), and its file streams are Node
// streams; that is most of the cost of an acquire. Our worker may block, so
// here each call is one or a few synchronous fs calls.
//
// Sandbox. Every directory descriptor, the preopen included (opened once, at
// start), holds an open O_DIRECTORY file descriptor, and every *At call is
// resolved against that fd, never by re-walking a host path string: the
// guest path is walked one component at a time, each intermediate directory
// opened (O_PATH | O_DIRECTORY | O_NOFOLLOW) through
// `/proc/self/fd/<parent>/<component>` (the magic link resolves to the very
// directory the fd refers to, as openat(2) would), and the final component
// acted on through `/proc/self/fd/<parent>/<name>`, never followed by the
// kernel (O_NOFOLLOW, lstat, lutimes, link, rename, ...). So renaming or
// swapping a directory on the host, even while a call runs, can neither
// redirect a descriptor nor lead a call out of the sandbox. The rules the
// guest sees:
// - paths are relative; `..` pops the walk and never goes above the
//   descriptor's own directory (not-permitted); `f/..` needs `f` to be a
//   directory and `nope/../f` needs `nope` to exist, as in POSIX;
// - symbolic links are interpreted here, by the same fd walk: followed (in
//   intermediate components, and in the final one when the guest asks) only
//   to relative targets that stay inside; an absolute target or one that
//   climbs out is not-permitted; more than 40 links is `loop`;
// - the descriptor's own directory ('', '.', 'a/..') cannot be removed,
//   unlinked, renamed or linked over; the preopen's times cannot be set;
// - a directory descriptor mutates (create, remove, rename, link, symlink,
//   set times, open for writing/creating/truncating) only if it has
//   `mutate-directory`: the preopen has it unless granted read-only, and a
//   sub-directory has it if the directory it was opened from has it, asked
//   for or not, as in wasmtime. (The WASI 0.1 adapter the guest is built
//   with never asks for it, so a sub-directory that needed asking could
//   never be emptied: the guest's staged counter directories, and claims
//   made as directories, were left behind whenever it lost a race.)
//   Truncating needs `write`; setting a file's size or times needs `write`;
// - a walk goes at most 256 directories deep (name-too-long);
// - one write or write-zeroes is at most 1 GiB (insufficient-memory);
// - opens never wait for the other end of a FIFO (O_NONBLOCK).
//
// Everything else (random, wall clock, environment, exit, terminals) stays
// preview2-shim's.
import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  futimesSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  opendirSync,
  readSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';

const symbolDispose = Symbol.dispose || Symbol.for('dispose');
const MAX_SYMLINKS = 40;
/** The most directories a walk holds open at once (below a descriptor). */
const MAX_DEPTH = 256;
const CHUNK = 65536;
/** The largest single write or write-zeroes accepted. */
const MAX_WRITE = 1 << 30;
const ZEROES = new Uint8Array(CHUNK);

/** Linux's O_PATH (not in Node's fs.constants): an fd that only names. */
const O_PATH = constants.O_PATH ?? 0o10000000;
/** How intermediate directories are opened during a walk. */
const WALK_FLAGS = O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const PROC_FD = '/proc/self/fd/';
/** The host path naming `name` inside the directory open as `fd`. */
const at = (fd, name) => `${PROC_FD}${fd}/${name}`;
const ERRNO = {
  EACCES: 'access',
  EAGAIN: 'would-block',
  EWOULDBLOCK: 'would-block',
  EALREADY: 'already',
  EBADF: 'bad-descriptor',
  EBUSY: 'busy',
  EDEADLK: 'deadlock',
  EDQUOT: 'quota',
  EEXIST: 'exist',
  EFBIG: 'file-too-large',
  EILSEQ: 'illegal-byte-sequence',
  EINPROGRESS: 'in-progress',
  EINTR: 'interrupted',
  EINVAL: 'invalid',
  EIO: 'io',
  EISDIR: 'is-directory',
  ELOOP: 'loop',
  EMLINK: 'too-many-links',
  EMSGSIZE: 'message-size',
  ENAMETOOLONG: 'name-too-long',
  ENODEV: 'no-device',
  ENOENT: 'no-entry',
  ENOLCK: 'no-lock',
  ENOMEM: 'insufficient-memory',
  ENOSPC: 'insufficient-space',
  ENOTDIR: 'not-directory',
  ENOTEMPTY: 'not-empty',
  ENOTRECOVERABLE: 'not-recoverable',
  ENOTSUP: 'unsupported',
  EOPNOTSUPP: 'unsupported',
  ENOTTY: 'no-tty',
  ENXIO: 'no-such-device',
  EOVERFLOW: 'overflow',
  EPERM: 'not-permitted',
  EPIPE: 'pipe',
  EROFS: 'read-only',
  ESPIPE: 'invalid-seek',
  ETXTBSY: 'text-file-busy',
  EXDEV: 'cross-device',
  // Node's own: an offset or length past what it can pass to the kernel.
  ERR_OUT_OF_RANGE: 'invalid',
};

/** A Node fs error as a WASI error-code (thrown as a string, as jco expects). */
function code(e) {
  if (typeof e === 'string') return e;
  return ERRNO[e?.code] ?? 'io';
}

function typeOf(stats) {
  if (stats.isFile()) return 'regular-file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symbolic-link';
  if (stats.isFIFO()) return 'fifo';
  if (stats.isSocket()) return 'socket';
  if (stats.isCharacterDevice()) return 'character-device';
  if (stats.isBlockDevice()) return 'block-device';
  return 'unknown';
}

const NS = 1_000_000_000n;
const datetime = (ns) => ({ seconds: ns / NS, nanoseconds: Number(ns % NS) });

function stat(stats) {
  return {
    type: typeOf(stats),
    linkCount: stats.nlink,
    size: stats.size,
    dataAccessTimestamp: datetime(stats.atimeNs),
    dataModificationTimestamp: datetime(stats.mtimeNs),
    statusChangeTimestamp: datetime(stats.ctimeNs),
  };
}

/** Identity of a file: device and inode, as wasmtime hashes it. */
const hash = (stats) => ({ upper: BigInt.asUintN(64, stats.dev), lower: BigInt.asUintN(64, stats.ino) });

/** A file offset as a Number; past 2^53 Node would silently use the current
 * position instead, so such offsets are refused. */
function position(offset) {
  if (BigInt(offset) > BigInt(Number.MAX_SAFE_INTEGER)) throw 'invalid';
  return Number(offset);
}

/** Components of a guest path, without empty ones and `.`, but for a final
 * `.` (kept: `link/.` names the directory the link leads to, not the link). */
function parts(path) {
  const all = path.split('/');
  const named = all.filter((c) => c !== '' && c !== '.');
  if (all[all.length - 1] === '.' && named.length > 0) named.push('.');
  return named;
}

/** Thrown (as `new Follow(code)`) by a final-component operation that met a
 * symbolic link it may follow: the walk reads the link and goes on; if it is
 * no link after all, the call fails with `code`. */
class Follow {
  constructor(errorCode) {
    this.errorCode = errorCode;
  }
}

/**
 * The import object pieces for one instance, granted `hostDir` under the
 * guest path `guestDir` (read-only if `readOnly`). Every descriptor and
 * directory stream the instance opens (the preopen included) is tracked so
 * that `closeAll` can close them when the instance is discarded.
 */
export function createDirectWasi(hostDir, guestDir, { readOnly = false } = {}) {
  if (process.platform !== 'linux') {
    throw new Error(`uuidlock: the direct WASI filesystem needs Linux (/proc/self/fd); use wasi: 'shim' on ${process.platform}`);
  }
  // The preopen: opened once, here; from now on only through this fd.
  const rootFd = openSync(hostDir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    lstatSync(at(rootFd, '.'));
  } catch (e) {
    closeSync(rootFd);
    throw new Error(`uuidlock: the direct WASI filesystem needs /proc/self/fd (${e.message}); use wasi: 'shim'`);
  }
  const open = new Set();

  class IoError {
    constructor(message, errorCode) {
      this.message = message;
      this.errorCode = errorCode;
    }
    toDebugString() {
      return this.message;
    }
  }

  class Pollable {
    ready() {
      return true;
    }
    block() {}
    [symbolDispose]() {}
  }

  const failed = (e) => ({ tag: 'last-operation-failed', val: new IoError(String(e?.message ?? e), code(e)) });

  class InputStream {
    #read;
    constructor(read) {
      this.#read = read;
    }
    read(len) {
      const n = Math.min(Number(len), CHUNK);
      let bytes;
      try {
        bytes = this.#read(n);
      } catch (e) {
        throw failed(e);
      }
      if (bytes === null) throw { tag: 'closed' };
      return bytes;
    }
    blockingRead(len) {
      return this.read(len);
    }
    skip(len) {
      return BigInt(this.read(len).length);
    }
    blockingSkip(len) {
      return this.skip(len);
    }
    subscribe() {
      return new Pollable();
    }
    [symbolDispose]() {}
  }

  class OutputStream {
    #write;
    constructor(write) {
      this.#write = write;
    }
    checkWrite() {
      return BigInt(CHUNK);
    }
    write(buf) {
      if (buf.length > MAX_WRITE) throw failed('insufficient-memory');
      try {
        this.#write(buf);
      } catch (e) {
        throw failed(e);
      }
    }
    blockingWriteAndFlush(buf) {
      this.write(buf);
    }
    flush() {}
    blockingFlush() {}
    writeZeroes(len) {
      if (BigInt(len) > BigInt(MAX_WRITE)) throw failed('insufficient-memory');
      for (let left = Number(len); left > 0; left -= CHUNK) {
        this.write(left >= CHUNK ? ZEROES : ZEROES.subarray(0, left));
      }
    }
    blockingWriteZeroesAndFlush(len) {
      this.writeZeroes(len);
    }
    splice(src, len) {
      const bytes = src.read(len);
      this.write(bytes);
      return BigInt(bytes.length);
    }
    blockingSplice(src, len) {
      return this.splice(src, len);
    }
    subscribe() {
      return new Pollable();
    }
    [symbolDispose]() {}
  }

  /** Reads from `fd` at `position` onwards; null at the end. */
  const fileReader = (fd, position) => (n) => {
    const buf = new Uint8Array(n);
    const got = readSync(fd, buf, 0, n, position);
    if (got === 0 && n > 0) return null;
    position += got;
    return buf.subarray(0, got);
  };
  /** Writes to `fd` at `position` onwards (null: append). */
  const fileWriter = (fd, position) => (buf) => {
    let off = 0;
    while (off < buf.length) {
      const wrote = writeSync(fd, buf, off, buf.length - off, position);
      off += wrote;
      if (position !== null) position += wrote;
    }
  };

  class DirectoryEntryStream {
    #dir;
    constructor(dir) {
      this.#dir = dir;
      open.add(this);
    }
    readDirectoryEntry() {
      if (this.#dir === null) throw 'bad-descriptor';
      let entry;
      try {
        entry = this.#dir.readSync();
      } catch (e) {
        throw code(e);
      }
      return entry === null ? undefined : { name: entry.name, type: typeOf(entry) };
    }
    [symbolDispose]() {
      this.release();
    }
    release() {
      if (this.#dir) {
        try {
          this.#dir.closeSync();
        } catch {
          // already closed
        }
        open.delete(this);
        this.#dir = null;
      }
    }
  }

  /** A path operation's options for the final component. */
  const DIR_SELF = { self: true };

  class Descriptor {
    #fd; // the open file descriptor (for a directory: O_RDONLY | O_DIRECTORY)
    #type;
    #flags;
    #preopen;

    constructor(fd, type, flags, preopen = false) {
      this.#fd = fd;
      this.#type = type;
      this.#flags = flags;
      this.#preopen = preopen;
      open.add(this);
    }

    #needFd() {
      if (this.#fd === null) throw 'bad-descriptor';
      return this.#fd;
    }

    #needMutate() {
      if (this.#type !== 'directory') throw 'not-directory';
      if (!this.#flags.mutateDirectory) throw 'not-permitted';
    }

    /**
     * Walks `subpath` inside this directory, one component at a time from
     * this descriptor's fd, and returns `final(dirFd, name, how)` for the
     * last component: `name` is '.' when the path names a directory reached
     * by the walk itself ('', '.', 'a/..'); `how.self` when that directory is
     * this descriptor's own; `how.follow` when a final symbolic link is to
     * be followed (the guest asked, or the path ends in '/'), `how.mustDir`
     * when the path ends in '/'. `final` throws `new Follow(code)` to have a
     * final link followed. The walk's own fds are closed before it returns.
     */
    #walk(subpath, follow, final) {
      if (this.#type !== 'directory') throw 'not-directory';
      const base = this.#needFd();
      if (subpath.startsWith('/')) throw 'not-permitted';
      if (subpath.includes('\0')) throw 'invalid';
      const stack = [base];
      let pending = parts(subpath);
      let mustDir = subpath.endsWith('/');
      let followed = 0;
      const link = (dirFd, name, otherwise) => {
        let target;
        try {
          target = readlinkSync(at(dirFd, name));
        } catch {
          throw otherwise; // not a link (any more)
        }
        if (++followed > MAX_SYMLINKS) throw 'loop';
        if (target.startsWith('/') || target.includes('\0')) throw 'not-permitted';
        return target;
      };
      try {
        for (;;) {
          const top = stack[stack.length - 1];
          if (pending.length === 0) return final(top, '.', stack.length === 1 ? DIR_SELF : { self: false });
          const segment = pending.shift();
          if (segment === '.') continue; // a final `.`: the directory reached
          if (segment === '..') {
            if (stack.length === 1) throw 'not-permitted';
            closeSync(stack.pop());
            continue;
          }
          if (pending.length === 0) {
            try {
              return final(top, segment, { self: false, follow: follow || mustDir, mustDir });
            } catch (e) {
              if (!(e instanceof Follow)) throw e;
              const target = link(top, segment, e.errorCode);
              pending = parts(target);
              if (target.endsWith('/')) mustDir = true;
              continue;
            }
          }
          let fd;
          try {
            fd = openSync(at(top, segment), WALK_FLAGS);
          } catch (e) {
            if (e.code !== 'ENOTDIR' && e.code !== 'ELOOP') throw code(e);
            pending = [...parts(link(top, segment, code(e))), ...pending];
            continue;
          }
          stack.push(fd);
          if (stack.length > MAX_DEPTH) throw 'name-too-long';
        }
      } finally {
        for (let i = stack.length - 1; i > 0; i--) closeSync(stack[i]);
      }
    }

    /** lstat of a final component, following a link when asked. */
    static #lstat(dirFd, name, how) {
      let s;
      try {
        s = lstatSync(at(dirFd, name), { bigint: true });
      } catch (e) {
        throw code(e);
      }
      if (s.isSymbolicLink() && how.follow) throw new Follow('loop');
      if (how.mustDir && !s.isDirectory()) throw 'not-directory';
      return s;
    }

    readViaStream(offset) {
      if (this.#type === 'directory') throw 'is-directory';
      return new InputStream(fileReader(this.#needFd(), position(offset)));
    }
    writeViaStream(offset) {
      if (this.#type === 'directory') throw 'is-directory';
      return new OutputStream(fileWriter(this.#needFd(), position(offset)));
    }
    appendViaStream() {
      if (this.#type === 'directory') throw 'is-directory';
      return new OutputStream(fileWriter(this.#needFd(), null));
    }
    advise() {}
    syncData() {
      try {
        fdatasyncSync(this.#needFd());
      } catch (e) {
        if (e?.code !== 'EINVAL') throw code(e);
      }
    }
    sync() {
      try {
        fsyncSync(this.#needFd());
      } catch (e) {
        if (e?.code !== 'EINVAL') throw code(e);
      }
    }
    getFlags() {
      return this.#flags;
    }
    getType() {
      return this.#type;
    }
    setSize(size) {
      if (this.#type === 'directory') throw 'is-directory';
      if (!this.#flags.write) throw 'not-permitted';
      try {
        ftruncateSync(this.#needFd(), position(size));
      } catch (e) {
        throw code(e);
      }
    }
    static #time(t, current) {
      switch (t.tag) {
        case 'no-change':
          return Number(current.seconds) + current.nanoseconds / 1e9;
        case 'now':
          return Date.now() / 1000;
        default:
          return Number(t.val.seconds) + t.val.nanoseconds / 1e9;
      }
    }
    setTimes(atime, mtime) {
      if (this.#preopen) throw 'not-permitted';
      if (this.#type === 'directory' ? !this.#flags.mutateDirectory : !this.#flags.write) throw 'not-permitted';
      const s = this.stat();
      try {
        futimesSync(this.#needFd(), Descriptor.#time(atime, s.dataAccessTimestamp), Descriptor.#time(mtime, s.dataModificationTimestamp));
      } catch (e) {
        throw code(e);
      }
    }
    setTimesAt(pathFlags, path, atime, mtime) {
      this.#needMutate();
      this.#walk(path, pathFlags.symlinkFollow, (dirFd, name, how) => {
        if (how.self && this.#preopen) throw 'not-permitted';
        const s = stat(Descriptor.#lstat(dirFd, name, how));
        try {
          lutimesSync(at(dirFd, name), Descriptor.#time(atime, s.dataAccessTimestamp), Descriptor.#time(mtime, s.dataModificationTimestamp));
        } catch (e) {
          throw code(e);
        }
      });
    }
    read(length, offset) {
      const n = Math.min(Number(length), 1 << 20);
      const buf = new Uint8Array(n);
      let got;
      try {
        got = readSync(this.#needFd(), buf, 0, n, position(offset));
      } catch (e) {
        throw code(e);
      }
      return [buf.subarray(0, got), got === 0 && n > 0];
    }
    write(buffer, offset) {
      if (buffer.length > MAX_WRITE) throw 'insufficient-memory';
      try {
        return BigInt(writeSync(this.#needFd(), buffer, 0, buffer.length, position(offset)));
      } catch (e) {
        throw code(e);
      }
    }
    readDirectory() {
      if (this.#type !== 'directory') throw 'not-directory';
      if (!this.#flags.read) throw 'not-permitted';
      try {
        // Through the fd: the directory this descriptor was opened on.
        return new DirectoryEntryStream(opendirSync(`${PROC_FD}${this.#needFd()}`));
      } catch (e) {
        throw code(e);
      }
    }
    createDirectoryAt(path) {
      this.#needMutate();
      this.#walk(path, false, (dirFd, name) => {
        if (name === '.') throw 'exist';
        try {
          mkdirSync(at(dirFd, name));
        } catch (e) {
          throw code(e);
        }
      });
    }
    stat() {
      try {
        return stat(fstatSync(this.#needFd(), { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    statAt(pathFlags, path) {
      return this.#walk(path, pathFlags.symlinkFollow, (dirFd, name, how) => stat(Descriptor.#lstat(dirFd, name, how)));
    }
    linkAt(oldPathFlags, oldPath, newDescriptor, newPath) {
      this.#needMutate();
      newDescriptor.#needMutate();
      this.#walk(oldPath, oldPathFlags.symlinkFollow, (fromFd, fromName, fromHow) => {
        if (fromName === '.') throw 'not-permitted';
        // A followed link is resolved by the walk; link(2) never follows.
        if (fromHow.follow) Descriptor.#lstat(fromFd, fromName, { follow: true });
        const slash = () => (Descriptor.#lstat(fromFd, fromName, {}).isDirectory() ? 'not-permitted' : 'not-directory');
        if (fromHow.mustDir) throw slash();
        newDescriptor.#walk(newPath, false, (toFd, toName, toHow) => {
          if (toName === '.') throw 'exist';
          if (toHow.mustDir) throw slash();
          try {
            linkSync(at(fromFd, fromName), at(toFd, toName));
          } catch (e) {
            throw code(e);
          }
        });
      });
    }
    openAt(pathFlags, path, openFlags, descriptorFlags) {
      if (descriptorFlags.fileIntegritySync || descriptorFlags.dataIntegritySync || descriptorFlags.requestedWriteSync) {
        throw 'unsupported';
      }
      if (this.#type !== 'directory') throw 'not-directory';
      if (openFlags.create || openFlags.truncate || descriptorFlags.write || descriptorFlags.mutateDirectory) {
        if (!this.#flags.mutateDirectory) throw 'not-permitted';
      }
      if (openFlags.truncate && !descriptorFlags.write) throw 'not-permitted';
      if (openFlags.create && openFlags.directory) throw 'invalid';
      let flags = constants.O_NONBLOCK | constants.O_NOFOLLOW;
      if (openFlags.create) flags |= constants.O_CREAT;
      if (openFlags.exclusive) flags |= constants.O_EXCL;
      if (openFlags.truncate) flags |= constants.O_TRUNC;
      if (descriptorFlags.read && descriptorFlags.write) flags |= constants.O_RDWR;
      else if (descriptorFlags.write) flags |= constants.O_WRONLY;
      else flags |= constants.O_RDONLY;
      // A final link is never followed by the kernel; the walk follows it
      // (exclusive create never does: the link itself exists).
      const mayFollow = !(openFlags.create && openFlags.exclusive);
      const fd = this.#walk(path, pathFlags.symlinkFollow, (dirFd, name, how) => {
        const dirOnly = openFlags.directory || how.mustDir || name === '.';
        try {
          return openSync(at(dirFd, name), flags | (dirOnly ? constants.O_DIRECTORY : 0), 0o666);
        } catch (e) {
          if (mayFollow && how.follow && (e.code === 'ELOOP' || (e.code === 'ENOTDIR' && dirOnly))) throw new Follow(code(e));
          throw code(e);
        }
      });
      let type;
      try {
        type = typeOf(fstatSync(fd));
      } catch (e) {
        closeSync(fd);
        throw code(e);
      }
      if (type === 'directory' && descriptorFlags.write) {
        closeSync(fd);
        throw 'is-directory';
      }
      // A directory may mutate where its parent may (see the top).
      const granted =
        type === 'directory' ? { ...descriptorFlags, mutateDirectory: this.#flags.mutateDirectory } : descriptorFlags;
      return new Descriptor(fd, type, granted);
    }
    readlinkAt(path) {
      return this.#walk(path, false, (dirFd, name) => {
        try {
          return readlinkSync(at(dirFd, name));
        } catch (e) {
          throw code(e);
        }
      });
    }
    removeDirectoryAt(path) {
      this.#needMutate();
      this.#walk(path, false, (dirFd, name, how) => {
        if (name === '.') throw how.self ? 'not-permitted' : 'invalid';
        try {
          rmdirSync(at(dirFd, name));
        } catch (e) {
          throw code(e);
        }
      });
    }
    renameAt(oldPath, newDescriptor, newPath) {
      this.#needMutate();
      newDescriptor.#needMutate();
      this.#walk(oldPath, false, (fromFd, fromName, fromHow) => {
        if (fromName === '.') throw fromHow.self ? 'not-permitted' : 'invalid';
        newDescriptor.#walk(newPath, false, (toFd, toName, toHow) => {
          if (toName === '.') throw toHow.self ? 'not-permitted' : 'invalid';
          if (fromHow.mustDir || toHow.mustDir) Descriptor.#lstat(fromFd, fromName, { mustDir: true });
          try {
            renameSync(at(fromFd, fromName), at(toFd, toName));
          } catch (e) {
            throw code(e);
          }
        });
      });
    }
    symlinkAt(target, path) {
      this.#needMutate();
      if (target.startsWith('/')) throw 'not-permitted';
      if (target.includes('\0')) throw 'invalid';
      this.#walk(path, false, (dirFd, name, how) => {
        if (name === '.') throw 'exist';
        if (how.mustDir) throw 'not-directory';
        try {
          symlinkSync(target, at(dirFd, name));
        } catch (e) {
          throw code(e);
        }
      });
    }
    unlinkFileAt(path) {
      this.#needMutate();
      this.#walk(path, false, (dirFd, name, how) => {
        if (name === '.') throw how.self ? 'not-permitted' : 'is-directory';
        if (how.mustDir) {
          let isDir = false;
          try {
            isDir = lstatSync(at(dirFd, name)).isDirectory();
          } catch {
            // not there
          }
          throw isDir ? 'is-directory' : 'not-directory';
        }
        try {
          unlinkSync(at(dirFd, name));
        } catch (e) {
          throw code(e);
        }
      });
    }
    isSameObject(other) {
      return other === this;
    }
    metadataHash() {
      try {
        return hash(fstatSync(this.#needFd(), { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    metadataHashAt(pathFlags, path) {
      return this.#walk(path, pathFlags.symlinkFollow, (dirFd, name, how) => hash(Descriptor.#lstat(dirFd, name, how)));
    }
    close() {
      // The guest drops its preopen handle(s) (every getDirectories() hands
      // out this one object); the fd lives as long as the instance.
      if (!this.#preopen) this.release();
    }
    /** Closes the fd (closeAll: the instance is being discarded). */
    release() {
      if (this.#fd !== null) {
        try {
          closeSync(this.#fd);
        } catch {
          // already closed
        }
        open.delete(this);
        this.#fd = null;
      }
    }
    [symbolDispose]() {
      this.close();
    }
  }

  const preopen = new Descriptor(rootFd, 'directory', { read: true, mutateDirectory: !readOnly }, true);
  const stdio = (fd) => new OutputStream((buf) => fileWriter(fd, null)(buf));
  const stdout = stdio(1);
  const stderr = stdio(2);
  const stdin = new InputStream(() => null);

  return {
    Pollable,
    imports: {
      'wasi:io/error': { Error: IoError },
      'wasi:io/streams': { InputStream, OutputStream },
      'wasi:filesystem/types': {
        Descriptor,
        DirectoryEntryStream,
        filesystemErrorCode: (err) => (err instanceof IoError ? err.errorCode : undefined),
      },
      'wasi:filesystem/preopens': { getDirectories: () => [[preopen, guestDir]] },
      'wasi:cli/stdin': { getStdin: () => stdin },
      'wasi:cli/stdout': { getStdout: () => stdout },
      'wasi:cli/stderr': { getStderr: () => stderr },
    },
    /** Closes every descriptor the instance opened, the preopen included
     * (after a trap, when the instance is discarded). */
    closeAll() {
      for (const d of [...open]) d.release();
    },
  };
}
