// A direct, synchronous implementation of the WASI 0.2 filesystem and the
// stream and poll resources the uuidlock guest uses, for the worker thread
// that runs it.
//
// preview2-shim 0.26.1 serves every file open, stream read and write, and
// descriptor close through its own I/O worker thread, one blocking message
// round trip each (about 25 µs here), and its file streams are Node
// streams; that is most of the cost of an acquire. Our worker may block, so
// here each call is the one synchronous fs call it stands for. The guest
// sees the same sandbox rules as under the shim (paths relative to a
// preopen, `..` never above it, symbolic links followed only inside it and
// never to an absolute target), plus one rule of the uuidlock host's own:
// opens never wait for the other end of a FIFO (O_NONBLOCK).
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
  realpathSync,
  renameSync,
  rmdirSync,
  statSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { posix } from 'node:path';

const symbolDispose = Symbol.dispose || Symbol.for('dispose');
const MAX_SYMLINKS = 40;
const CHUNK = 65536;

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

/**
 * The import object pieces for one instance, granted `hostDir` under the
 * guest path `guestDir`. `track` holds every descriptor the instance opened,
 * so that a trapped instance's files can be closed.
 */
export function createDirectWasi(hostDir, guestDir) {
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
      this.write(new Uint8Array(Number(len)));
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
    }
    readDirectoryEntry() {
      let entry;
      try {
        entry = this.#dir.readSync();
      } catch (e) {
        throw code(e);
      }
      return entry === null ? undefined : { name: entry.name, type: typeOf(entry) };
    }
    [symbolDispose]() {
      if (this.#dir) {
        try {
          this.#dir.closeSync();
        } catch {
          // already closed
        }
        this.#dir = null;
      }
    }
  }

  class Descriptor {
    #root; // host path of the preopen this descriptor lives under
    #path; // host path of this descriptor (its directory, for path calls)
    #fd = null;
    #type;
    #flags;

    constructor(root, path, fd, type, flags) {
      this.#root = root;
      this.#path = path;
      this.#fd = fd;
      this.#type = type;
      this.#flags = flags;
      if (fd !== null) open.add(this);
    }

    /** The host path of `subpath`, resolved inside this descriptor's
     * directory as preview2-shim resolves it. */
    #resolve(subpath, followFinal) {
      if (this.#type !== 'directory') throw 'not-directory';
      subpath = subpath.replace(/\/\/+/g, '/');
      if (subpath.startsWith('/')) throw 'not-permitted';
      if (subpath.includes('\0')) throw 'invalid';
      const trailingSlash = subpath.endsWith('/');
      const segments = [];
      for (const segment of subpath.split('/')) {
        if (segment === '' || segment === '.') continue;
        if (segment === '..') {
          if (segments.pop() === undefined) throw 'not-permitted';
        } else segments.push(segment);
      }
      let base;
      try {
        base = realpathSync.native(this.#path);
      } catch (e) {
        throw code(e);
      }
      let current = base;
      let pending = segments;
      let followed = 0;
      while (pending.length > 0) {
        const segment = pending.shift();
        const candidate = posix.join(current, segment);
        let st;
        try {
          st = lstatSync(candidate);
        } catch (e) {
          if (e.code === 'ENOENT') {
            const rest = posix.join(candidate, ...pending);
            return trailingSlash ? `${rest}/` : rest;
          }
          throw code(e);
        }
        const last = pending.length === 0;
        if (!st.isSymbolicLink() || (last && !followFinal && !trailingSlash)) {
          current = candidate;
          continue;
        }
        if (++followed > MAX_SYMLINKS) throw 'loop';
        let target;
        try {
          target = readlinkSync(candidate);
        } catch (e) {
          throw code(e);
        }
        if (posix.isAbsolute(target)) throw 'not-permitted';
        const rel = posix.relative(base, current);
        const next = rel ? rel.split('/') : [];
        for (const t of target.split('/')) {
          if (t === '' || t === '.') continue;
          if (t === '..') {
            if (next.pop() === undefined) throw 'not-permitted';
          } else next.push(t);
        }
        pending = [...next, ...pending];
        current = base;
      }
      return trailingSlash && current !== base ? `${current}/` : current;
    }

    #needFd() {
      if (this.#fd === null) throw 'bad-descriptor';
      return this.#fd;
    }

    readViaStream(offset) {
      if (this.#type === 'directory') throw 'is-directory';
      return new InputStream(fileReader(this.#needFd(), Number(offset)));
    }
    writeViaStream(offset) {
      if (this.#type === 'directory') throw 'is-directory';
      return new OutputStream(fileWriter(this.#needFd(), Number(offset)));
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
      try {
        ftruncateSync(this.#needFd(), Number(size));
      } catch (e) {
        throw code(e);
      }
    }
    #time(t, current) {
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
      const s = this.stat();
      try {
        if (this.#fd === null) utimesSync(this.#path, this.#time(atime, s.dataAccessTimestamp), this.#time(mtime, s.dataModificationTimestamp));
        else futimesSync(this.#fd, this.#time(atime, s.dataAccessTimestamp), this.#time(mtime, s.dataModificationTimestamp));
      } catch (e) {
        throw code(e);
      }
    }
    setTimesAt(pathFlags, path, atime, mtime) {
      const full = this.#resolve(path, pathFlags.symlinkFollow);
      const s = this.statAt(pathFlags, path);
      try {
        (pathFlags.symlinkFollow ? utimesSync : lutimesSync)(full, this.#time(atime, s.dataAccessTimestamp), this.#time(mtime, s.dataModificationTimestamp));
      } catch (e) {
        throw code(e);
      }
    }
    read(length, offset) {
      const n = Math.min(Number(length), 1 << 20);
      const buf = new Uint8Array(n);
      let got;
      try {
        got = readSync(this.#needFd(), buf, 0, n, Number(offset));
      } catch (e) {
        throw code(e);
      }
      return [buf.subarray(0, got), got === 0 && n > 0];
    }
    write(buffer, offset) {
      try {
        return BigInt(writeSync(this.#needFd(), buffer, 0, buffer.length, Number(offset)));
      } catch (e) {
        throw code(e);
      }
    }
    readDirectory() {
      if (this.#type !== 'directory') throw 'not-directory';
      try {
        return new DirectoryEntryStream(opendirSync(this.#path));
      } catch (e) {
        throw code(e);
      }
    }
    createDirectoryAt(path) {
      const full = this.#resolve(path, false);
      try {
        mkdirSync(full);
      } catch (e) {
        throw code(e);
      }
    }
    stat() {
      try {
        return stat(this.#fd === null ? statSync(this.#path, { bigint: true }) : fstatSync(this.#fd, { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    statAt(pathFlags, path) {
      const full = this.#resolve(path, pathFlags.symlinkFollow);
      try {
        return stat((pathFlags.symlinkFollow ? statSync : lstatSync)(full, { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    linkAt(oldPathFlags, oldPath, newDescriptor, newPath) {
      const from = this.#resolve(oldPath, oldPathFlags.symlinkFollow);
      const to = newDescriptor.#resolve(newPath, false);
      try {
        linkSync(from, to);
      } catch (e) {
        throw code(e);
      }
    }
    openAt(pathFlags, path, openFlags, descriptorFlags) {
      const full = this.#resolve(path, pathFlags.symlinkFollow);
      let flags = constants.O_NONBLOCK | constants.O_CLOEXEC;
      if (openFlags.create) flags |= constants.O_CREAT;
      if (openFlags.directory) flags |= constants.O_DIRECTORY;
      if (openFlags.exclusive) flags |= constants.O_EXCL;
      if (openFlags.truncate) flags |= constants.O_TRUNC;
      if (descriptorFlags.read && descriptorFlags.write) flags |= constants.O_RDWR;
      else if (descriptorFlags.write) flags |= constants.O_WRONLY;
      else flags |= constants.O_RDONLY;
      if (!pathFlags.symlinkFollow) flags |= constants.O_NOFOLLOW;
      if (descriptorFlags.fileIntegritySync || descriptorFlags.dataIntegritySync || descriptorFlags.requestedWriteSync) {
        throw 'unsupported';
      }
      const target = full.endsWith('/') ? full.slice(0, -1) : full;
      let fd;
      try {
        fd = openSync(target, flags, 0o666);
      } catch (e) {
        throw code(e);
      }
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
      if (full.endsWith('/') && type !== 'directory') {
        closeSync(fd);
        throw 'not-directory';
      }
      return new Descriptor(this.#root, target, fd, type, descriptorFlags);
    }
    readlinkAt(path) {
      const full = this.#resolve(path, false);
      try {
        return readlinkSync(full);
      } catch (e) {
        throw code(e);
      }
    }
    removeDirectoryAt(path) {
      const full = this.#resolve(path, false);
      try {
        rmdirSync(full);
      } catch (e) {
        throw code(e);
      }
    }
    renameAt(oldPath, newDescriptor, newPath) {
      const from = this.#resolve(oldPath, false);
      const to = newDescriptor.#resolve(newPath, false);
      try {
        renameSync(from, to);
      } catch (e) {
        throw code(e);
      }
    }
    symlinkAt(target, path) {
      const full = this.#resolve(path, false);
      if (target.startsWith('/')) throw 'not-permitted';
      try {
        symlinkSync(target, full);
      } catch (e) {
        throw code(e);
      }
    }
    unlinkFileAt(path) {
      const full = this.#resolve(path, false);
      if (full.endsWith('/')) {
        let isDir = false;
        try {
          isDir = statSync(full).isDirectory();
        } catch {
          // not there
        }
        throw isDir ? 'is-directory' : 'not-directory';
      }
      try {
        unlinkSync(full);
      } catch (e) {
        throw code(e);
      }
    }
    isSameObject(other) {
      return other === this;
    }
    metadataHash() {
      try {
        return hash(this.#fd === null ? statSync(this.#path, { bigint: true }) : fstatSync(this.#fd, { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    metadataHashAt(pathFlags, path) {
      const full = this.#resolve(path, pathFlags.symlinkFollow);
      try {
        return hash((pathFlags.symlinkFollow ? statSync : lstatSync)(full, { bigint: true }));
      } catch (e) {
        throw code(e);
      }
    }
    close() {
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

  const preopen = new Descriptor(hostDir, hostDir, null, 'directory', { read: true, mutateDirectory: true });
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
    /** Closes every file the instance left open (after a trap). */
    closeAll() {
      for (const d of [...open]) d.close();
    },
  };
}
