//! WASI preview 1, answered by the simulated share: the 23 functions the
//! guest command (`uuidlock.wasm`) imports, each a scheduling point where
//! it reaches the share or sleeps.
//!
//! Every call that would reach the filesystem first waits for its turn
//! ([`turn`]): the scheduler lets one client at a time go, in the order of
//! the virtual times at which their calls arrive, so the calls of all
//! clients interleave as the seed says. Sleeps wait for their turn at
//! their end time and cost no real time. Calls that stay inside a process
//! (clocks, randomness, arguments, stdout) do not wait. Layouts and error
//! numbers are those of `wasi_snapshot_preview1` (wasi-libc's `api.h`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::{bail, format_err, Caller, Extern, Linker, Memory, Result};

use super::profile::Injected;
use super::rng::Rng;
use super::sched::{turn, Shared};
use super::world::{errno, names_itself, Attr, Errno, How, Kind, Listing, Node, ROOT};

/// Where the share appears in the guest: the one preopened directory.
pub const MOUNT: &str = "/share";
const PREOPEN_FD: u32 = 3;

const OFLAGS_CREAT: i32 = 1;
const OFLAGS_DIRECTORY: i32 = 2;
const OFLAGS_EXCL: i32 = 4;
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_APPEND: i32 = 1;
const RIGHT_FD_WRITE: i64 = 1 << 6;
const FILETYPE_CHAR: u8 = 2;
const FILETYPE_DIR: u8 = 3;
const FILETYPE_FILE: u8 = 4;
/// The most a guest may print, per stream, before the rest is dropped.
const OUTPUT_CAP: usize = 64 * 1024;

/// The guest called `proc_exit`.
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

enum Fd {
    Stdio,
    Preopen,
    File { node: Node, name: String, pos: u64, append: bool },
    Dir { node: Node, listing: Option<Listing> },
}

/// One guest instance's state: one run of the command by one client.
pub struct Process {
    pub shared: Arc<Mutex<Shared>>,
    pub client: usize,
    args: Vec<String>,
    env: Vec<String>,
    fds: BTreeMap<u32, Fd>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    rng: Rng,
    /// The calls this process made, by import name ([`super::calls`]).
    pub counts: BTreeMap<&'static str, u32>,
}

impl Process {
    pub fn new(shared: Arc<Mutex<Shared>>, client: usize, args: Vec<String>, env: Vec<String>, rng: Rng) -> Process {
        let mut fds = BTreeMap::new();
        for fd in 0..3 {
            fds.insert(fd, Fd::Stdio);
        }
        fds.insert(PREOPEN_FD, Fd::Preopen);
        Process { shared, client, args, env, fds, stdout: Vec::new(), stderr: Vec::new(), rng, counts: BTreeMap::new() }
    }

    fn count(&mut self, call: &'static str) {
        *self.counts.entry(call).or_default() += 1;
    }

    fn dir(&self, fd: i32) -> Result<Node, Errno> {
        match self.fds.get(&(fd as u32)) {
            Some(Fd::Preopen) => Ok(ROOT),
            Some(Fd::Dir { node, .. }) => Ok(*node),
            Some(_) => Err(errno::NOTDIR),
            None => Err(errno::BADF),
        }
    }

    fn add_fd(&mut self, fd: Fd) -> u32 {
        let n = (PREOPEN_FD + 1..).find(|n| !self.fds.contains_key(n)).expect("a free descriptor");
        self.fds.insert(n, fd);
        n
    }
}

impl Drop for Process {
    /// A process that ends (or is killed) closes its files.
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            for fd in self.fds.values() {
                if let Fd::File { node, .. } | Fd::Dir { node, .. } = fd {
                    shared.world.close(self.client, *node);
                }
            }
        }
    }
}

fn memory(caller: &mut Caller<'_, Process>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => bail!("the guest exports no memory"),
    }
}

fn read_bytes(caller: &mut Caller<'_, Process>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(ptr..ptr + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("guest pointer out of bounds"))
}

fn write_bytes(caller: &mut Caller<'_, Process>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    let ptr = ptr as u32 as usize;
    memory
        .data_mut(caller)
        .get_mut(ptr..ptr + bytes.len())
        .ok_or_else(|| format_err!("guest pointer out of bounds"))?
        .copy_from_slice(bytes);
    Ok(())
}

fn read_str(caller: &mut Caller<'_, Process>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read_bytes(caller, ptr, len)?).into_owned())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(caller: &mut Caller<'_, Process>, ptr: i32, count: i32) -> Result<Vec<(i32, i32)>> {
    let raw = read_bytes(caller, ptr, count.checked_mul(8).ok_or_else(|| format_err!("too many iovecs"))?)?;
    Ok((0..count as usize).map(|i| (u32_at(&raw, i * 8) as i32, u32_at(&raw, i * 8 + 4) as i32)).collect())
}

fn filestat(attr: Option<Attr>) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[0..8].copy_from_slice(&1u64.to_le_bytes()); // dev
    match attr {
        Some(attr) => {
            out[8..16].copy_from_slice(&(attr.node as u64 + 1).to_le_bytes());
            out[16] = if attr.kind == Kind::Dir { FILETYPE_DIR } else { FILETYPE_FILE };
            out[24..32].copy_from_slice(&u64::from(attr.links).to_le_bytes());
            out[32..40].copy_from_slice(&attr.size.to_le_bytes());
            for at in [40, 48, 56] {
                out[at..at + 8].copy_from_slice(&(attr.mtime.max(0) as u64).to_le_bytes());
            }
        }
        None => out[16] = FILETYPE_CHAR,
    }
    out
}

/// Where a list of strings goes in the guest: `args_get`, `environ_get`.
fn put_strings(caller: &mut Caller<'_, Process>, strings: &[String], ptrs: i32, buf: i32) -> Result<i32> {
    let mut offset = buf as u32;
    for (i, s) in strings.iter().enumerate() {
        write_bytes(caller, ptrs + (i as i32) * 4, &offset.to_le_bytes())?;
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        write_bytes(caller, offset as i32, &bytes)?;
        offset += bytes.len() as u32;
    }
    Ok(0)
}

fn sizes(strings: &[String]) -> (u32, u32) {
    (strings.len() as u32, strings.iter().map(|s| s.len() as u32 + 1).sum())
}

/// Waits for the caller's turn at the share, then asks the fault plan
/// whether this call fails with one of `may_fail`.
async fn share_call(caller: &Caller<'_, Process>, may_fail: &[Injected]) -> Option<Errno> {
    let (shared, client) = (caller.data().shared.clone(), caller.data().client);
    turn(&shared, client, None).await;
    let mut shared = shared.lock().expect("one thread");
    shared.inject(client, may_fail)
}

/// Records a call for the trace and returns its answer.
fn answer(caller: &Caller<'_, Process>, call: &'static str, path: &str, code: Errno) -> Result<i32> {
    let mut shared = caller.data().shared.lock().expect("one thread");
    shared.record(caller.data().client, call, path, code);
    Ok(i32::from(code))
}

const READS: &[Injected] = &[Injected::Eio, Injected::Estale, Injected::Eacces];
const WRITES: &[Injected] = &[Injected::Eio, Injected::Estale, Injected::Eacces, Injected::Enospc];
const REMOVES: &[Injected] = &[Injected::Eio, Injected::Estale, Injected::Eacces, Injected::Ebusy];
const MOVES: &[Injected] = &[Injected::Eio, Injected::Estale, Injected::Eacces, Injected::Ebusy, Injected::Enospc];

/// Adds the simulated `wasi_snapshot_preview1` to `linker`.
pub fn link(linker: &mut Linker<Process>) -> Result<()> {
    const M: &str = "wasi_snapshot_preview1";

    linker.func_wrap(M, "args_sizes_get", |mut caller: Caller<'_, Process>, count: i32, size: i32| {
        caller.data_mut().count("args_sizes_get");
        let (n, bytes) = sizes(&caller.data().args);
        write_bytes(&mut caller, count, &n.to_le_bytes())?;
        write_bytes(&mut caller, size, &bytes.to_le_bytes())?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "args_get", |mut caller: Caller<'_, Process>, ptrs: i32, buf: i32| {
        caller.data_mut().count("args_get");
        let args = caller.data().args.clone();
        put_strings(&mut caller, &args, ptrs, buf)
    })?;
    linker.func_wrap(M, "environ_sizes_get", |mut caller: Caller<'_, Process>, count: i32, size: i32| {
        caller.data_mut().count("environ_sizes_get");
        let (n, bytes) = sizes(&caller.data().env);
        write_bytes(&mut caller, count, &n.to_le_bytes())?;
        write_bytes(&mut caller, size, &bytes.to_le_bytes())?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "environ_get", |mut caller: Caller<'_, Process>, ptrs: i32, buf: i32| {
        caller.data_mut().count("environ_get");
        let env = caller.data().env.clone();
        put_strings(&mut caller, &env, ptrs, buf)
    })?;
    linker.func_wrap(M, "random_get", |mut caller: Caller<'_, Process>, buf: i32, len: i32| {
        caller.data_mut().count("random_get");
        let mut bytes = vec![0u8; len as u32 as usize];
        caller.data_mut().rng.fill(&mut bytes);
        write_bytes(&mut caller, buf, &bytes)?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "clock_time_get", |mut caller: Caller<'_, Process>, id: i32, _precision: i64, out: i32| {
        caller.data_mut().count("clock_time_get");
        let time = {
            let shared = caller.data().shared.lock().expect("one thread");
            match id {
                0 => shared.world.client_clock(caller.data().client) as u64,
                // Monotonic (and CPU) clocks: true time since the run began,
                // plus a day, so that no guest sees an instant near zero.
                1..=3 => shared.world.now + 86_400_000_000_000,
                _ => return Ok(i32::from(errno::INVAL)),
            }
        };
        write_bytes(&mut caller, out, &time.to_le_bytes())?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "proc_exit", |mut caller: Caller<'_, Process>, code: i32| -> Result<()> {
        caller.data_mut().count("proc_exit");
        Err(wasmtime::Error::new(Exit(code)))
    })?;
    linker.func_wrap(M, "fd_prestat_get", |mut caller: Caller<'_, Process>, fd: i32, out: i32| {
        caller.data_mut().count("fd_prestat_get");
        if fd as u32 != PREOPEN_FD {
            return Ok(i32::from(errno::BADF));
        }
        let mut prestat = [0u8; 8];
        prestat[4..8].copy_from_slice(&(MOUNT.len() as u32).to_le_bytes());
        write_bytes(&mut caller, out, &prestat)?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "fd_prestat_dir_name", |mut caller: Caller<'_, Process>, fd: i32, out: i32, len: i32| {
        caller.data_mut().count("fd_prestat_dir_name");
        if fd as u32 != PREOPEN_FD {
            return Ok(i32::from(errno::BADF));
        }
        let name = &MOUNT.as_bytes()[..(len as usize).min(MOUNT.len())];
        write_bytes(&mut caller, out, name)?;
        Ok(0i32)
    })?;
    linker.func_wrap(M, "fd_fdstat_get", |mut caller: Caller<'_, Process>, fd: i32, out: i32| {
        caller.data_mut().count("fd_fdstat_get");
        let filetype = match caller.data().fds.get(&(fd as u32)) {
            Some(Fd::Stdio) => FILETYPE_CHAR,
            Some(Fd::Preopen | Fd::Dir { .. }) => FILETYPE_DIR,
            Some(Fd::File { .. }) => FILETYPE_FILE,
            None => return Ok(i32::from(errno::BADF)),
        };
        let mut stat = [0u8; 24];
        stat[0] = filetype;
        stat[8..16].copy_from_slice(&0x1fff_ffffu64.to_le_bytes());
        stat[16..24].copy_from_slice(&0x1fff_ffffu64.to_le_bytes());
        write_bytes(&mut caller, out, &stat)?;
        Ok(0i32)
    })?;

    linker.func_wrap_async(
        M,
        "fd_write",
        |mut caller: Caller<'_, Process>, (fd, iovs, count, out): (i32, i32, i32, i32)| {
            let to_stdio = matches!(caller.data().fds.get(&(fd as u32)), Some(Fd::Stdio));
            caller.data_mut().count(if to_stdio { "fd_write (stdio)" } else { "fd_write" });
            Box::new(async move {
                let mut bytes = Vec::new();
                for (ptr, len) in iovecs(&mut caller, iovs, count)? {
                    bytes.extend(read_bytes(&mut caller, ptr, len)?);
                }
                let (node, name, pos, append) = match caller.data_mut().fds.get(&(fd as u32)) {
                    Some(Fd::Stdio) => {
                        let process = caller.data_mut();
                        let stream = if fd == 1 { &mut process.stdout } else { &mut process.stderr };
                        let room = OUTPUT_CAP.saturating_sub(stream.len());
                        stream.extend_from_slice(&bytes[..bytes.len().min(room)]);
                        write_bytes(&mut caller, out, &(bytes.len() as u32).to_le_bytes())?;
                        return Ok(0);
                    }
                    Some(Fd::File { node, name, pos, append }) => (*node, name.clone(), *pos, *append),
                    Some(_) => return Ok(i32::from(errno::ISDIR)),
                    None => return Ok(i32::from(errno::BADF)),
                };
                if let Some(code) = share_call(&caller, WRITES).await {
                    return answer(&caller, "fd_write", &name, code);
                }
                let at = {
                    let mut shared = caller.data().shared.lock().expect("one thread");
                    let at = if append { shared.world.size(node) } else { pos };
                    let client = caller.data().client;
                    // A full disk refuses a write that needs a new block.
                    if at + bytes.len() as u64 > shared.world.size(node) && shared.disk_full(client) {
                        drop(shared);
                        return answer(&caller, "fd_write", &name, errno::NOSPC);
                    }
                    shared.world.write(client, node, &name, at, &bytes);
                    at
                };
                if let Some(Fd::File { pos, .. }) = caller.data_mut().fds.get_mut(&(fd as u32)) {
                    *pos = at + bytes.len() as u64;
                }
                write_bytes(&mut caller, out, &(bytes.len() as u32).to_le_bytes())?;
                answer(&caller, "fd_write", &name, 0)
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "fd_read",
        |mut caller: Caller<'_, Process>, (fd, iovs, count, out): (i32, i32, i32, i32)| {
            caller.data_mut().count("fd_read");
            Box::new(async move {
                let (node, name, pos) = match caller.data().fds.get(&(fd as u32)) {
                    Some(Fd::File { node, name, pos, .. }) => (*node, name.clone(), *pos),
                    Some(Fd::Stdio) => {
                        write_bytes(&mut caller, out, &0u32.to_le_bytes())?;
                        return Ok(0);
                    }
                    Some(_) => return Ok(i32::from(errno::ISDIR)),
                    None => return Ok(i32::from(errno::BADF)),
                };
                let iovs = iovecs(&mut caller, iovs, count)?;
                if let Some(code) = share_call(&caller, READS).await {
                    return answer(&caller, "fd_read", &name, code);
                }
                let want: usize = iovs.iter().map(|(_, len)| *len as u32 as usize).sum();
                let data = caller.data().shared.lock().expect("one thread").world.read(node, pos, want);
                let mut done = 0;
                for (ptr, len) in iovs {
                    let take = (len as usize).min(data.len() - done);
                    write_bytes(&mut caller, ptr, &data[done..done + take])?;
                    done += take;
                }
                if let Some(Fd::File { pos, .. }) = caller.data_mut().fds.get_mut(&(fd as u32)) {
                    *pos += done as u64;
                }
                write_bytes(&mut caller, out, &(done as u32).to_le_bytes())?;
                answer(&caller, "fd_read", &name, 0)
            })
        },
    )?;

    linker.func_wrap_async(M, "fd_close", |mut caller: Caller<'_, Process>, (fd,): (i32,)| {
        caller.data_mut().count("fd_close");
        Box::new(async move {
            let node = match caller.data().fds.get(&(fd as u32)) {
                Some(Fd::File { node, .. } | Fd::Dir { node, .. }) => Some(*node),
                Some(_) => None,
                None => return Ok(i32::from(errno::BADF)),
            };
            if node.is_some() {
                // The close itself always succeeds; NFS flushes here. The
                // descriptor stays in the table until then, so that a
                // process killed at this turn still closes it as it ends
                // (it stayed open for good, and deletes of the file were
                // busy for good on SMB).
                share_call(&caller, &[]).await;
            }
            caller.data_mut().fds.remove(&(fd as u32));
            if let Some(node) = node {
                let client = caller.data().client;
                caller.data().shared.lock().expect("one thread").world.close(client, node);
            }
            Ok(0)
        })
    })?;

    linker.func_wrap_async(M, "fd_filestat_get", |mut caller: Caller<'_, Process>, (fd, out): (i32, i32)| {
        caller.data_mut().count("fd_filestat_get");
        Box::new(async move {
            let node = match caller.data().fds.get(&(fd as u32)) {
                Some(Fd::File { node, .. } | Fd::Dir { node, .. }) => *node,
                Some(Fd::Preopen) => ROOT,
                Some(Fd::Stdio) => {
                    write_bytes(&mut caller, out, &filestat(None))?;
                    return Ok(0);
                }
                None => return Ok(i32::from(errno::BADF)),
            };
            if let Some(code) = share_call(&caller, READS).await {
                return answer(&caller, "fd_filestat_get", "", code);
            }
            let attr = caller.data().shared.lock().expect("one thread").world.fstat(node);
            write_bytes(&mut caller, out, &filestat(Some(attr)))?;
            answer(&caller, "fd_filestat_get", "", 0)
        })
    })?;

    linker.func_wrap_async(
        M,
        "fd_readdir",
        |mut caller: Caller<'_, Process>, (fd, buf, len, cookie, used): (i32, i32, i32, i64, i32)| {
            caller.data_mut().count("fd_readdir");
            Box::new(async move {
                let node = match caller.data().fds.get(&(fd as u32)) {
                    Some(Fd::Dir { node, .. }) => *node,
                    Some(_) => return Ok(i32::from(errno::NOTDIR)),
                    None => return Ok(i32::from(errno::BADF)),
                };
                let fresh =
                    cookie == 0 || matches!(caller.data().fds.get(&(fd as u32)), Some(Fd::Dir { listing: None, .. }));
                if fresh {
                    if let Some(code) = share_call(&caller, READS).await {
                        return answer(&caller, "fd_readdir", "", code);
                    }
                    let client = caller.data().client;
                    let listing = caller.data().shared.lock().expect("one thread").world.list(client, node);
                    if let Some(Fd::Dir { listing: slot, .. }) = caller.data_mut().fds.get_mut(&(fd as u32)) {
                        *slot = Some(listing);
                    }
                }
                let mut bytes = Vec::new();
                if let Some(Fd::Dir { listing: Some(listing), .. }) = caller.data().fds.get(&(fd as u32)) {
                    for (i, (name, node, kind)) in listing.iter().enumerate().skip(cookie as u64 as usize) {
                        bytes.extend_from_slice(&(i as u64 + 1).to_le_bytes());
                        bytes.extend_from_slice(&(*node as u64 + 1).to_le_bytes());
                        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(&[
                            if *kind == Kind::Dir { FILETYPE_DIR } else { FILETYPE_FILE },
                            0,
                            0,
                            0,
                        ]);
                        bytes.extend_from_slice(name.as_bytes());
                    }
                }
                bytes.truncate(len as u32 as usize);
                write_bytes(&mut caller, buf, &bytes)?;
                write_bytes(&mut caller, used, &(bytes.len() as u32).to_le_bytes())?;
                answer(&caller, "fd_readdir", "", 0)
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "path_filestat_get",
        |mut caller: Caller<'_, Process>, (fd, _flags, ptr, len, out): (i32, i32, i32, i32, i32)| {
            caller.data_mut().count("path_filestat_get");
            Box::new(async move {
                let path = read_str(&mut caller, ptr, len)?;
                let dir = match caller.data().dir(fd) {
                    Ok(dir) => dir,
                    Err(code) => return Ok(i32::from(code)),
                };
                if let Some(code) = share_call(&caller, READS).await {
                    return answer(&caller, "stat", &path, code);
                }
                let client = caller.data().client;
                let attr = caller.data().shared.lock().expect("one thread").world.stat(client, dir, &path);
                match attr {
                    Ok(attr) => {
                        write_bytes(&mut caller, out, &filestat(Some(attr)))?;
                        answer(&caller, "stat", &path, 0)
                    }
                    Err(code) => answer(&caller, "stat", &path, code),
                }
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "path_open",
        |mut caller: Caller<'_, Process>,
         (fd, _dirflags, ptr, len, oflags, rights, _inheriting, fdflags, out): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i64,
            i64,
            i32,
            i32,
        )| {
            caller.data_mut().count("path_open");
            Box::new(async move {
                let path = read_str(&mut caller, ptr, len)?;
                let dir = match caller.data().dir(fd) {
                    Ok(dir) => dir,
                    Err(code) => return Ok(i32::from(code)),
                };
                let create = oflags & OFLAGS_CREAT != 0;
                let exclusive = oflags & OFLAGS_EXCL != 0;
                let truncate = oflags & OFLAGS_TRUNC != 0;
                if let Some(code) = share_call(&caller, if create { WRITES } else { READS }).await {
                    return answer(&caller, "open", &path, code);
                }
                let client = caller.data().client;
                let shared = caller.data().shared.clone();
                if names_itself(&path) {
                    let node = shared.lock().expect("one thread").world.open_itself(client, dir);
                    let n = caller.data_mut().add_fd(Fd::Dir { node, listing: None });
                    write_bytes(&mut caller, out, &n.to_le_bytes())?;
                    return answer(&caller, "open", &path, 0);
                }
                let step = {
                    let mut guard = shared.lock().expect("one thread");
                    let world = &mut guard.world;
                    world.walk(client, dir, &path)
                };
                let (parent, name) = match step {
                    Ok(found) => found,
                    Err(code) => return answer(&caller, "open", &path, code),
                };
                let racing = create && exclusive && shared.lock().expect("one thread").world.profile.create_not_atomic;
                if racing {
                    let taken = shared.lock().expect("one thread").world.exists(client, parent, &name);
                    match taken {
                        Ok(true) => return answer(&caller, "open", &path, errno::EXIST),
                        Err(code) => return answer(&caller, "open", &path, code),
                        Ok(false) => turn(&shared, client, None).await,
                    }
                }
                let result = {
                    let mut guard = shared.lock().expect("one thread");
                    let lost = exclusive && create && guard.lost_reply();
                    let world = &mut guard.world;
                    match world.open(client, parent, &name, How { create, exclusive, truncate, racing }) {
                        Ok(node) if lost => {
                            // Done on the server; the retransmission finds it there.
                            world.close(client, node);
                            Err(errno::EXIST)
                        }
                        Ok(node) => {
                            let kind = world.kind(node);
                            if oflags & OFLAGS_DIRECTORY != 0 && kind != Kind::Dir {
                                world.close(client, node);
                                Err(errno::NOTDIR)
                            } else if kind == Kind::Dir && rights & RIGHT_FD_WRITE != 0 && create {
                                world.close(client, node);
                                Err(errno::ISDIR)
                            } else {
                                Ok((node, kind))
                            }
                        }
                        Err(code) => Err(code),
                    }
                };
                match result {
                    Ok((node, kind)) => {
                        let new = if kind == Kind::Dir {
                            Fd::Dir { node, listing: None }
                        } else {
                            Fd::File { node, name: name.clone(), pos: 0, append: fdflags & FDFLAGS_APPEND != 0 }
                        };
                        let n = caller.data_mut().add_fd(new);
                        write_bytes(&mut caller, out, &n.to_le_bytes())?;
                        answer(&caller, "open", &path, 0)
                    }
                    Err(code) => answer(&caller, "open", &path, code),
                }
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "path_create_directory",
        |mut caller: Caller<'_, Process>, (fd, ptr, len): (i32, i32, i32)| {
            caller.data_mut().count("path_create_directory");
            Box::new(async move {
                let path = read_str(&mut caller, ptr, len)?;
                let client = caller.data().client;
                if caller.data().shared.lock().expect("one thread").disk_full(client) {
                    return answer(&caller, "mkdir", &path, errno::NOSPC);
                }
                mutate(&mut caller, "mkdir", fd, &path, WRITES, errno::EXIST, |world, client, parent, name| {
                    world.mkdir(client, parent, name)
                })
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_remove_directory",
        |mut caller: Caller<'_, Process>, (fd, ptr, len): (i32, i32, i32)| {
            caller.data_mut().count("path_remove_directory");
            Box::new(async move {
                let path = read_str(&mut caller, ptr, len)?;
                mutate(&mut caller, "rmdir", fd, &path, REMOVES, errno::NOENT, |world, client, parent, name| {
                    world.rmdir(client, parent, name)
                })
                .await
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_unlink_file",
        |mut caller: Caller<'_, Process>, (fd, ptr, len): (i32, i32, i32)| {
            caller.data_mut().count("path_unlink_file");
            Box::new(async move {
                let path = read_str(&mut caller, ptr, len)?;
                mutate(&mut caller, "unlink", fd, &path, REMOVES, errno::NOENT, |world, client, parent, name| {
                    world.unlink(client, parent, name)
                })
                .await
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "path_link",
        |mut caller: Caller<'_, Process>,
         (from_fd, _flags, from_ptr, from_len, to_fd, to_ptr, to_len): (i32, i32, i32, i32, i32, i32, i32)| {
            caller.data_mut().count("path_link");
            Box::new(async move {
                let from = read_str(&mut caller, from_ptr, from_len)?;
                let to = read_str(&mut caller, to_ptr, to_len)?;
                two_paths(&mut caller, "link", (from_fd, &from), (to_fd, &to), WRITES, errno::EXIST, false).await
            })
        },
    )?;
    linker.func_wrap_async(
        M,
        "path_rename",
        |mut caller: Caller<'_, Process>,
         (from_fd, from_ptr, from_len, to_fd, to_ptr, to_len): (i32, i32, i32, i32, i32, i32)| {
            caller.data_mut().count("path_rename");
            Box::new(async move {
                let from = read_str(&mut caller, from_ptr, from_len)?;
                let to = read_str(&mut caller, to_ptr, to_len)?;
                two_paths(&mut caller, "rename", (from_fd, &from), (to_fd, &to), MOVES, errno::NOENT, true).await
            })
        },
    )?;

    linker.func_wrap_async(
        M,
        "poll_oneoff",
        |mut caller: Caller<'_, Process>, (subs, events, count, out): (i32, i32, i32, i32)| {
            caller.data_mut().count("poll_oneoff");
            Box::new(async move {
                if count <= 0 {
                    return Ok(i32::from(errno::INVAL));
                }
                let raw = read_bytes(&mut caller, subs, count * 48)?;
                let client = caller.data().client;
                let (now, wall) = {
                    let shared = caller.data().shared.lock().expect("one thread");
                    (shared.world.now + 86_400_000_000_000, shared.world.client_clock(client) as u64)
                };
                // The earliest clock subscription; the guest only ever sleeps.
                let mut first: Option<(u64, u64)> = None;
                for i in 0..count as usize {
                    let sub = &raw[i * 48..(i + 1) * 48];
                    if sub[8] != 0 {
                        bail!("the guest polled a descriptor; the simulator only sleeps");
                    }
                    let (id, timeout, flags) =
                        (u32_at(sub, 16), u64_at(sub, 24), u16::from_le_bytes([sub[40], sub[41]]));
                    let base = if id == 0 { wall } else { now };
                    let wait = if flags & 1 != 0 { timeout.saturating_sub(base) } else { timeout };
                    if first.is_none_or(|(w, _)| wait < w) {
                        first = Some((wait, u64_at(sub, 0)));
                    }
                }
                let (wait, userdata) = first.expect("count > 0");
                let shared = caller.data().shared.clone();
                turn(&shared, client, Some(wait)).await;
                let mut event = [0u8; 32];
                event[0..8].copy_from_slice(&userdata.to_le_bytes());
                write_bytes(&mut caller, events, &event)?;
                write_bytes(&mut caller, out, &1u32.to_le_bytes())?;
                Ok(0)
            })
        },
    )?;
    Ok(())
}

/// A call on one path that changes the share: mkdir, rmdir, unlink. A lost
/// reply (the work done, the answer lost) answers `lost` instead.
async fn mutate(
    caller: &mut Caller<'_, Process>,
    call: &'static str,
    fd: i32,
    path: &str,
    may_fail: &[Injected],
    lost: Errno,
    op: impl FnOnce(&mut super::world::World, usize, Node, &str) -> Result<(), Errno>,
) -> Result<i32> {
    let dir = match caller.data().dir(fd) {
        Ok(dir) => dir,
        Err(code) => return Ok(i32::from(code)),
    };
    if let Some(code) = share_call(caller, may_fail).await {
        return answer(caller, call, path, code);
    }
    let client = caller.data().client;
    let code = {
        let mut shared = caller.data().shared.lock().expect("one thread");
        let lost_reply = shared.lost_reply();
        let world = &mut shared.world;
        match world.walk(client, dir, path).and_then(|(parent, name)| op(world, client, parent, &name)) {
            Ok(()) if lost_reply => lost,
            Ok(()) => 0,
            Err(code) => code,
        }
    };
    answer(caller, call, path, code)
}

/// `link` and `rename`.
async fn two_paths(
    caller: &mut Caller<'_, Process>,
    call: &'static str,
    (from_fd, from): (i32, &str),
    (to_fd, to): (i32, &str),
    may_fail: &[Injected],
    lost: Errno,
    rename: bool,
) -> Result<i32> {
    let (from_dir, to_dir) = match (caller.data().dir(from_fd), caller.data().dir(to_fd)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(code), _) | (_, Err(code)) => return Ok(i32::from(code)),
    };
    if let Some(code) = share_call(caller, may_fail).await {
        return answer(caller, call, to, code);
    }
    let client = caller.data().client;
    let shared = caller.data().shared.clone();
    let walked = {
        let mut guard = shared.lock().expect("one thread");
        let world = &mut guard.world;
        world.walk(client, from_dir, from).and_then(|a| world.walk(client, to_dir, to).map(|b| (a, b)))
    };
    let ((from_parent, from_name), (to_parent, to_name)) = match walked {
        Ok(found) => found,
        Err(code) => return answer(caller, call, to, code),
    };
    if rename && shared.lock().expect("one thread").world.profile.rename_deletes_first {
        // smbnetfs: the target is deleted first, a round trip before the rename.
        shared.lock().expect("one thread").world.rename_clear_target(client, (to_parent, &to_name));
        turn(&shared, client, None).await;
    }
    let code = {
        let mut guard = shared.lock().expect("one thread");
        let lost_reply = guard.lost_reply();
        let world = &mut guard.world;
        let done = if rename {
            world.rename(client, (from_parent, &from_name), (to_parent, &to_name))
        } else {
            world.link(client, (from_parent, &from_name), (to_parent, &to_name))
        };
        match done {
            Ok(()) if lost_reply => lost,
            Ok(()) => 0,
            Err(code) => code,
        }
    };
    answer(caller, call, to, code)
}
