//! The simulated share: one server's namespace of files and directories,
//! each client's view of it (its caches, as its profile says), and the
//! clocks: the true time of the run, the server's clock and each client's.
//!
//! Everything is kept in ordered maps, never hashed ones, so that nothing
//! depends on the process's hash seed: a run is a function of its seed.

use std::collections::BTreeMap;

use super::profile::Profile;

/// WASI preview 1 error numbers the simulated share answers with.
pub mod errno {
    pub const ACCES: u16 = 2;
    pub const BADF: u16 = 8;
    pub const BUSY: u16 = 10;
    pub const EXIST: u16 = 20;
    pub const INVAL: u16 = 28;
    pub const IO: u16 = 29;
    pub const ISDIR: u16 = 31;
    pub const NOENT: u16 = 44;
    pub const NOSPC: u16 = 51;
    pub const NOTDIR: u16 = 54;
    pub const NOTEMPTY: u16 = 55;
    pub const PERM: u16 = 63;
    pub const STALE: u16 = 72;
    pub const NOTCAPABLE: u16 = 76;

    pub fn name(code: u16) -> &'static str {
        match code {
            0 => "ok",
            ACCES => "EACCES",
            BADF => "EBADF",
            BUSY => "EBUSY",
            EXIST => "EEXIST",
            INVAL => "EINVAL",
            IO => "EIO",
            ISDIR => "EISDIR",
            NOENT => "ENOENT",
            NOSPC => "ENOSPC",
            NOTDIR => "ENOTDIR",
            NOTEMPTY => "ENOTEMPTY",
            PERM => "EPERM",
            STALE => "ESTALE",
            NOTCAPABLE => "ENOTCAPABLE",
            _ => "E?",
        }
    }
}

pub type Errno = u16;
pub type Node = usize;
/// A directory's entries: name, node, kind.
pub type Listing = Vec<(String, Node, Kind)>;

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct How {
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    /// An exclusive create that finds the name taken opens what is there
    /// (the second step of a create that is not atomic).
    pub racing: bool,
}

/// The realtime clock's reading at the start of every run (2026-01-01),
/// in nanoseconds since the Unix epoch.
pub const EPOCH_NS: i64 = 1_767_225_600_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

#[derive(Clone, Debug)]
struct Inode {
    kind: Kind,
    data: Vec<u8>,
    entries: BTreeMap<String, Node>,
    /// Realtime date, in nanoseconds since the epoch.
    mtime: i64,
    /// Names that link here.
    links: u32,
    /// Open descriptors, per client.
    open: BTreeMap<usize, u32>,
    /// The client that created it.
    creator: usize,
}

/// What a stat answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub node: Node,
    pub kind: Kind,
    pub size: u64,
    pub links: u32,
    pub mtime: i64,
}

/// One client's caches.
#[derive(Clone, Debug, Default)]
struct View {
    /// (directory, name) -> (attributes, when fetched).
    attrs: BTreeMap<(Node, String), (Attr, u64)>,
    /// (directory, name) -> (node, when looked up): GlusterFS's entry cache.
    names: BTreeMap<(Node, String), (Node, u64)>,
    /// directory -> (listing, when listed).
    listings: BTreeMap<Node, (Listing, u64)>,
}

/// Who may see an entry: rclone's invisible creates.
#[derive(Clone, Copy, Debug)]
struct Fresh {
    by: usize,
    until: u64,
}

/// A removal (or replacement) of a named file, for the checker: which
/// client did it, which name (in which directory of the share's root), and
/// the bytes the file held.
#[derive(Clone, Debug)]
pub struct Removal {
    pub client: usize,
    /// Who created the file removed.
    pub creator: usize,
    /// The name of the directory it was in, as the root names it (empty for
    /// the root itself): `job.lock.shared` for a shared holder's entry.
    pub dir: String,
    pub name: String,
    pub bytes: Vec<u8>,
}

pub struct World {
    pub profile: Profile,
    /// True time since the run began, in nanoseconds.
    pub now: u64,
    /// The server's clock minus true time, in nanoseconds.
    pub server_offset: i64,
    /// Each client's realtime clock minus true time.
    pub client_offset: Vec<i64>,
    nodes: Vec<Inode>,
    views: Vec<View>,
    fresh: BTreeMap<(Node, String), Fresh>,
    /// The last true time each UUID-named file was written: a holder's
    /// signs of life (its staged marker and its heartbeats).
    pub signs: BTreeMap<String, u64>,
    /// Files removed or replaced since the checker last looked.
    pub removals: Vec<Removal>,
    /// Claims (`*.claim`) each client took in its current call and has not
    /// removed itself.
    pub claims: Vec<Vec<String>>,
    /// The lifetime of the run's locks, in nanoseconds (none: no lifetime).
    pub lifetime: Option<u64>,
    /// Per UUID, its lapses: from a lifetime after a sign of life to the
    /// next sign, where that came later (the lease broken meanwhile).
    pub lapses: BTreeMap<String, Vec<(u64, u64)>>,
    /// When each claim now linked (by directory and name) was made.
    claims_made: BTreeMap<(Node, String), u64>,
}

pub const ROOT: Node = 0;

impl World {
    pub fn new(profile: Profile, clients: usize) -> World {
        let root = Inode {
            kind: Kind::Dir,
            data: Vec::new(),
            entries: BTreeMap::new(),
            mtime: EPOCH_NS,
            links: 1,
            open: BTreeMap::new(),
            creator: usize::MAX,
        };
        World {
            profile,
            now: 0,
            server_offset: 0,
            client_offset: vec![0; clients],
            nodes: vec![root],
            views: vec![View::default(); clients],
            fresh: BTreeMap::new(),
            signs: BTreeMap::new(),
            removals: Vec::new(),
            claims: vec![Vec::new(); clients],
            lifetime: None,
            lapses: BTreeMap::new(),
            claims_made: BTreeMap::new(),
        }
    }

    /// A client's realtime clock, in nanoseconds since the epoch.
    pub fn client_clock(&self, client: usize) -> i64 {
        EPOCH_NS + self.now as i64 + self.client_offset[client]
    }

    /// The date a write by `client` gets.
    fn date(&self, client: usize) -> i64 {
        if self.profile.dates_from_client_clock {
            self.client_clock(client)
        } else {
            EPOCH_NS + self.now as i64 + self.server_offset
        }
    }

    fn caches(&self, client: usize) -> bool {
        client % 2 == 1
    }

    fn visible(&self, client: usize, dir: Node, name: &str) -> bool {
        match self.fresh.get(&(dir, name.to_owned())) {
            Some(fresh) => fresh.by == client || self.now >= fresh.until,
            None => true,
        }
    }

    /// What `name` in `dir` is on the server, as `client` may see it.
    fn server_lookup(&self, client: usize, dir: Node, name: &str) -> Option<Node> {
        let node = *self.nodes[dir].entries.get(name)?;
        self.visible(client, dir, name).then_some(node)
    }

    /// What `name` in `dir` is to `client`, through its entry cache: a
    /// ghost (a node no name links any more) or a stale handle (a node the
    /// name no longer links) while cached.
    fn lookup(&mut self, client: usize, dir: Node, name: &str) -> Result<Option<Node>, Errno> {
        let now = self.now;
        let current = self.server_lookup(client, dir, name);
        if !self.profile.lookup_cache.is_zero() {
            let key = (dir, name.to_owned());
            if let Some(&(cached, at)) = self.views[client].names.get(&key) {
                if now.saturating_sub(at) < self.profile.lookup_cache.as_nanos() as u64 && Some(cached) != current {
                    // A file gone from every name shows its old bytes (a
                    // ghost), whether the name is empty or names a new file;
                    // one in five such handles (by a fixed rule, not by
                    // chance) and every handle to a file that lives on under
                    // another name is answered "stale file handle" once. The
                    // GlusterFS bed saw both: old bytes after 19 of 20
                    // replacements, and stale handles.
                    let gone = self.nodes[cached].links == 0;
                    if gone && (current.is_none() || !(cached + client).is_multiple_of(5)) {
                        return Ok(Some(cached));
                    }
                    self.views[client].names.remove(&key);
                    return Err(errno::STALE);
                }
            }
            match current {
                Some(node) => {
                    self.views[client].names.insert(key, (node, now));
                }
                None => {
                    self.views[client].names.remove(&key);
                }
            }
        }
        Ok(current)
    }

    /// Walks `path` (relative, `/`-separated) from `dir` to its parent
    /// directory and last name.
    pub fn walk(&mut self, client: usize, dir: Node, path: &str) -> Result<(Node, String), Errno> {
        let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        if parts.contains(&"..") {
            return Err(errno::NOTCAPABLE);
        }
        let last = parts.pop().ok_or(errno::INVAL)?.to_owned();
        let mut at = dir;
        for part in parts {
            let parent = at;
            at = self.lookup(client, at, part)?.ok_or(errno::NOENT)?;
            if self.nodes[at].kind != Kind::Dir {
                return Err(errno::NOTDIR);
            }
            if self.nodes[at].links == 0 {
                // A removed directory, reached through a cached name: the
                // server knows its handle no more and answers "stale file
                // handle", on which the kernel walks the path again with
                // every name looked up afresh (Linux's `retry_estale`), so
                // the call goes to what the name is now. Never into a
                // removed directory.
                self.views[client].names.remove(&(parent, part.to_owned()));
                at = self.lookup(client, parent, part)?.ok_or(errno::NOENT)?;
                if self.nodes[at].kind != Kind::Dir {
                    return Err(errno::NOTDIR);
                }
            }
        }
        if self.nodes[at].kind != Kind::Dir {
            return Err(errno::NOTDIR);
        }
        Ok((at, last))
    }

    fn attr(&self, node: Node) -> Attr {
        let inode = &self.nodes[node];
        let mut mtime = inode.mtime;
        if self.profile.whole_second_dates {
            mtime -= mtime.rem_euclid(1_000_000_000);
        }
        Attr { node, kind: inode.kind, size: inode.data.len() as u64, links: inode.links, mtime }
    }

    /// `stat` of a path, through the client's attribute cache.
    pub fn stat(&mut self, client: usize, dir: Node, path: &str) -> Result<Attr, Errno> {
        if names_itself(path) {
            return Ok(self.attr(dir));
        }
        let (parent, name) = self.walk(client, dir, path)?;
        let key = (parent, name.clone());
        if self.caches(client) && !self.profile.attr_cache.is_zero() {
            if let Some(&(attr, at)) = self.views[client].attrs.get(&key) {
                if self.now.saturating_sub(at) < self.profile.attr_cache.as_nanos() as u64 {
                    return Ok(attr);
                }
            }
        }
        let node = self.lookup(client, parent, &name)?.ok_or(errno::NOENT)?;
        let attr = self.attr(node);
        if self.caches(client) && !self.profile.attr_cache.is_zero() {
            self.views[client].attrs.insert(key, (attr, self.now));
        }
        Ok(attr)
    }

    /// `fstat`: always fresh (close-to-open), also for a ghost.
    pub fn fstat(&self, node: Node) -> Attr {
        self.attr(node)
    }

    pub fn kind(&self, node: Node) -> Kind {
        self.nodes[node].kind
    }

    fn new_node(&mut self, kind: Kind, client: usize) -> Node {
        let date = self.date(client);
        self.nodes.push(Inode {
            kind,
            data: Vec::new(),
            entries: BTreeMap::new(),
            mtime: date,
            links: 0,
            open: BTreeMap::new(),
            creator: client,
        });
        self.nodes.len() - 1
    }

    /// Whether `client` answers a create of `name` in `dir` "exists" from
    /// its attribute cache ([`Profile::creates_checked_in_cache`]).
    fn cached_as_there(&self, client: usize, dir: Node, name: &str) -> bool {
        self.profile.creates_checked_in_cache
            && self.caches(client)
            && self.views[client]
                .attrs
                .get(&(dir, name.to_owned()))
                .is_some_and(|&(_, at)| self.now.saturating_sub(at) < self.profile.attr_cache.as_nanos() as u64)
    }

    fn exists_error(&self) -> Errno {
        if self.profile.exists_as_eperm {
            errno::PERM
        } else {
            errno::EXIST
        }
    }

    /// Links `node` as `name` in `dir`, replacing what is there (whose
    /// removal is recorded).
    fn link_name(&mut self, client: usize, dir: Node, name: &str, node: Node) {
        if let Some(old) = self.nodes[dir].entries.insert(name.to_owned(), node) {
            self.unlinked(client, dir, name, old);
        }
        self.nodes[node].links += 1;
        self.forget(client, dir, name);
        if !self.profile.invisible_creates.is_zero() {
            let until = self.now + self.profile.invisible_creates.as_nanos() as u64;
            self.fresh.insert((dir, name.to_owned()), Fresh { by: client, until });
        }
        if name.ends_with(".claim") {
            self.claims_made.insert((dir, name.to_owned()), self.now);
            if !self.claims[client].iter().any(|c| c == name) {
                self.claims[client].push(name.to_owned());
            }
        }
    }

    fn unlinked(&mut self, client: usize, dir: Node, name: &str, node: Node) {
        self.nodes[node].links -= 1;
        let (creator, bytes) = (self.nodes[node].creator, self.nodes[node].data.clone());
        let dir = self.name_in_root(dir);
        self.removals.push(Removal { client, creator, dir, name: name.to_owned(), bytes });
        // A claimant whose claim someone else broke still believes it holds
        // it, until its call ends (`sched` clears the list then).
        self.claims[client].retain(|c| c != name);
    }

    /// A client that changes a name sees its own change next: its caches
    /// of that name (and of the directory's listing) are dropped. Other
    /// clients' caches stay, as on a real share.
    fn forget(&mut self, client: usize, dir: Node, name: &str) {
        let key = (dir, name.to_owned());
        let view = &mut self.views[client];
        view.attrs.remove(&key);
        view.names.remove(&key);
        view.listings.remove(&dir);
    }

    /// The first step of an exclusive create where it is not atomic: only
    /// the check.
    pub fn exists(&mut self, client: usize, dir: Node, name: &str) -> Result<bool, Errno> {
        Ok(self.lookup(client, dir, name)?.is_some())
    }

    /// Opens (and perhaps creates) the file or directory `name` in `dir`.
    pub fn open(&mut self, client: usize, dir: Node, name: &str, how: How) -> Result<Node, Errno> {
        let How { create, exclusive, truncate, racing } = how;
        if create && exclusive && self.cached_as_there(client, dir, name) {
            return Err(errno::EXIST);
        }
        let found = if create && exclusive {
            // An exclusive create goes to the server, past every cache.
            self.server_lookup(client, dir, name)
        } else {
            self.lookup(client, dir, name)?
        };
        // rclone: a name another client created moments ago is not there yet
        // for this one, so its exclusive create succeeds and replaces it.
        let node = match found {
            Some(_) if create && exclusive && !racing => return Err(self.exists_error()),
            Some(node) => node,
            None if !create => return Err(errno::NOENT),
            None => {
                self.not_removed(dir)?;
                let node = self.new_node(Kind::File, client);
                self.link_name(client, dir, name, node);
                self.sign(name);
                return Ok(self.opened(client, node));
            }
        };
        if truncate && self.nodes[node].kind == Kind::File {
            self.nodes[node].data.clear();
            self.nodes[node].mtime = self.date(client);
        }
        Ok(self.opened(client, node))
    }

    fn opened(&mut self, client: usize, node: Node) -> Node {
        *self.nodes[node].open.entry(client).or_default() += 1;
        node
    }

    pub fn close(&mut self, client: usize, node: Node) {
        if let Some(count) = self.nodes[node].open.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.nodes[node].open.remove(&client);
            }
        }
    }

    pub fn read(&self, node: Node, at: u64, len: usize) -> Vec<u8> {
        let data = &self.nodes[node].data;
        let start = (at as usize).min(data.len());
        data[start..(start + len).min(data.len())].to_vec()
    }

    pub fn size(&self, node: Node) -> u64 {
        self.nodes[node].data.len() as u64
    }

    /// Writes through a descriptor opened as `name`.
    pub fn write(&mut self, client: usize, node: Node, name: &str, at: u64, bytes: &[u8]) {
        let date = self.date(client);
        let inode = &mut self.nodes[node];
        let at = at as usize;
        if inode.data.len() < at + bytes.len() {
            inode.data.resize(at + bytes.len(), 0);
        }
        inode.data[at..at + bytes.len()].copy_from_slice(bytes);
        inode.mtime = date;
        self.sign(name);
    }

    /// A write of a holder's staged marker or heartbeat is its sign of
    /// life: its lease runs a lifetime from the last one.
    fn sign(&mut self, name: &str) {
        if let Some(uuid) = sign_of(name) {
            let last = self.signs.insert(uuid.to_owned(), self.now);
            if let (Some(last), Some(lifetime)) = (last, self.lifetime) {
                if self.now - last > lifetime {
                    self.lapses.entry(uuid.to_owned()).or_default().push((last + lifetime, self.now));
                }
            }
        }
    }

    /// Nothing is created in a directory that was removed (one a stale
    /// cached name still reaches, as on GlusterFS): "no such file", as
    /// POSIX answers a create in a deleted directory.
    fn not_removed(&self, dir: Node) -> Result<(), Errno> {
        if dir != ROOT && self.nodes[dir].links == 0 {
            return Err(errno::NOENT);
        }
        Ok(())
    }

    /// Whether `name` in the root is an empty file that `client` created: a
    /// lock file created and not yet written (without hard links).
    pub fn empty_file_made_by(&self, name: &str, client: usize) -> bool {
        self.nodes[ROOT].entries.get(name).is_some_and(|&node| {
            let inode = &self.nodes[node];
            inode.kind == Kind::File && inode.data.is_empty() && inode.creator == client
        })
    }

    pub fn mkdir(&mut self, client: usize, dir: Node, name: &str) -> Result<(), Errno> {
        if self.cached_as_there(client, dir, name) {
            return Err(errno::EXIST);
        }
        self.not_removed(dir)?;
        if self.server_lookup(client, dir, name).is_some() {
            return Err(self.exists_error());
        }
        let node = self.new_node(Kind::Dir, client);
        self.link_name(client, dir, name, node);
        Ok(())
    }

    pub fn rmdir(&mut self, client: usize, dir: Node, name: &str) -> Result<(), Errno> {
        let node = self.server_lookup(client, dir, name).ok_or(errno::NOENT)?;
        if self.nodes[node].kind != Kind::Dir {
            return Err(errno::NOTDIR);
        }
        if !self.nodes[node].entries.is_empty() {
            return Err(errno::NOTEMPTY);
        }
        self.nodes[dir].entries.remove(name);
        self.unlinked(client, dir, name, node);
        self.forget(client, dir, name);
        Ok(())
    }

    /// The name the root links `dir` as (empty for the root, or for a
    /// directory no longer there).
    fn name_in_root(&self, dir: Node) -> String {
        if dir == ROOT {
            return String::new();
        }
        self.nodes[ROOT].entries.iter().find(|(_, &node)| node == dir).map_or(String::new(), |(name, _)| name.clone())
    }

    pub fn unlink(&mut self, client: usize, dir: Node, name: &str) -> Result<(), Errno> {
        let node = self.server_lookup(client, dir, name).ok_or(errno::NOENT)?;
        if self.nodes[node].kind == Kind::Dir {
            return Err(errno::ISDIR);
        }
        if self.profile.busy_delete && self.nodes[node].open.keys().any(|&c| c != client) {
            return Err(errno::BUSY);
        }
        self.nodes[dir].entries.remove(name);
        self.fresh.remove(&(dir, name.to_owned()));
        self.unlinked(client, dir, name, node);
        self.forget(client, dir, name);
        Ok(())
    }

    pub fn link(&mut self, client: usize, from: (Node, &str), to: (Node, &str)) -> Result<(), Errno> {
        if !self.profile.hard_links {
            return Err(errno::PERM);
        }
        let node = self.lookup(client, from.0, from.1)?.ok_or(errno::NOENT)?;
        if self.nodes[node].kind == Kind::Dir {
            return Err(errno::PERM);
        }
        if self.cached_as_there(client, to.0, to.1) {
            return Err(errno::EXIST);
        }
        self.not_removed(to.0)?;
        if self.server_lookup(client, to.0, to.1).is_some() {
            return Err(self.exists_error());
        }
        self.link_name(client, to.0, to.1, node);
        Ok(())
    }

    /// The first step of a rename that deletes its target first (smbnetfs).
    pub fn rename_clear_target(&mut self, client: usize, to: (Node, &str)) {
        if let Some(node) = self.server_lookup(client, to.0, to.1) {
            if self.nodes[node].kind == Kind::File {
                let _ = self.unlink(client, to.0, to.1);
            }
        }
    }

    pub fn rename(&mut self, client: usize, from: (Node, &str), to: (Node, &str)) -> Result<(), Errno> {
        let node = self.server_lookup(client, from.0, from.1).ok_or(errno::NOENT)?;
        if from == to {
            return Ok(());
        }
        // SMB refuses to rename a directory with a file open inside it by
        // another client (Samba answers "access denied").
        if self.profile.busy_delete && self.nodes[node].kind == Kind::Dir {
            let open_inside =
                self.nodes[node].entries.values().any(|&inside| self.nodes[inside].open.keys().any(|&c| c != client));
            if open_inside {
                return Err(errno::ACCES);
            }
        }
        self.not_removed(to.0)?;
        if let Some(target) = self.server_lookup(client, to.0, to.1) {
            match (self.nodes[node].kind, self.nodes[target].kind) {
                (Kind::File, Kind::Dir) => return Err(errno::ISDIR),
                (Kind::Dir, Kind::File) => return Err(errno::NOTDIR),
                (Kind::Dir, Kind::Dir) if !self.nodes[target].entries.is_empty() => return Err(errno::NOTEMPTY),
                _ => {}
            }
        }
        self.nodes[from.0].entries.remove(from.1);
        self.fresh.remove(&(from.0, from.1.to_owned()));
        self.nodes[node].links -= 1;
        self.forget(client, from.0, from.1);
        self.claims[client].retain(|c| c != from.1);
        self.link_name(client, to.0, to.1, node);
        Ok(())
    }

    /// A directory's entries as `client` sees them (through its listing
    /// cache).
    pub fn list(&mut self, client: usize, dir: Node) -> Listing {
        if self.caches(client) && !self.profile.dir_cache.is_zero() {
            if let Some((listing, at)) = self.views[client].listings.get(&dir) {
                if self.now.saturating_sub(*at) < self.profile.dir_cache.as_nanos() as u64 {
                    return listing.clone();
                }
            }
        }
        let listing: Listing = self.nodes[dir]
            .entries
            .iter()
            .filter(|(name, _)| self.visible(client, dir, name))
            .map(|(name, &node)| (name.clone(), node, self.nodes[node].kind))
            .collect();
        if self.caches(client) && !self.profile.dir_cache.is_zero() {
            self.views[client].listings.insert(dir, (listing.clone(), self.now));
        }
        listing
    }
}

impl World {
    /// Whether the lock file `lock` holds the token with `uuid` now, on the
    /// server.
    pub fn lock_holds(&self, lock: &str, uuid: &str) -> bool {
        self.nodes[ROOT].entries.get(lock).is_some_and(|&node| self.file_holds(node, uuid))
    }

    /// The entries of the shared holders' directory of `lock` that hold the
    /// token with `uuid` now, on the server, by index, each with whether
    /// its heartbeat (`K.<uuid>.beat`) is there.
    pub fn entries_holding(&self, lock: &str, uuid: &str) -> Vec<(u32, bool)> {
        let Some(&dir) = self.nodes[ROOT].entries.get(&format!("{lock}.shared")) else { return Vec::new() };
        let entries = &self.nodes[dir].entries;
        entries
            .iter()
            .filter(|(_, &node)| self.file_holds(node, uuid))
            .filter_map(|(name, _)| name.parse::<u32>().ok().filter(|_| name.bytes().all(|b| b.is_ascii_digit())))
            .map(|index| (index, entries.contains_key(&format!("{index}.{uuid}.beat"))))
            .collect()
    }

    /// When the claim at `path` (from the share's root) was made, if one
    /// is there now, on the server.
    pub fn claim_made(&self, path: &str) -> Option<u64> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => {
                (dir.split('/').try_fold(ROOT, |at, part| self.nodes[at].entries.get(part).copied())?, name)
            }
            None => (ROOT, path),
        };
        self.nodes[dir].entries.get(name)?;
        self.claims_made.get(&(dir, name.to_owned())).copied()
    }

    fn file_holds(&self, node: Node, uuid: &str) -> bool {
        self.nodes[node].kind == Kind::File && uuid_in(&self.nodes[node].data).is_some_and(|u| u == uuid)
    }
}

/// Whether `path` names the directory it is relative to (`.`, or empty).
pub fn names_itself(path: &str) -> bool {
    path.split('/').all(|part| part.is_empty() || part == ".")
}

/// Opens a directory itself (`.`), for a listing.
impl World {
    pub fn open_itself(&mut self, client: usize, dir: Node) -> Node {
        self.opened(client, dir)
    }
}

fn is_uuid(part: &str) -> bool {
    part.len() == 36 && part.bytes().filter(|&b| b == b'-').count() == 4
}

/// The UUID whose sign of life a write to `name` is: a staged marker
/// (`<PATH>.<UUID>.new`) or a heartbeat (`<PATH>.<UUID>.beat`, or a
/// staging name after it). Claims are not: a breaker writes the claim on
/// someone else's instance.
pub fn sign_of(name: &str) -> Option<&str> {
    let parts: Vec<&str> = name.split('.').collect();
    (0..parts.len().saturating_sub(1)).rev().find_map(|i| {
        let next = parts[i + 1];
        (is_uuid(parts[i]) && ((next == "new" && i + 2 == parts.len()) || next == "beat")).then_some(parts[i])
    })
}

/// The UUID that names a heartbeat or a claim: `<PATH>.<UUID>.beat`,
/// `<PATH>.<UUID>.claim`.
pub fn owner_of(name: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    (n >= 3 && is_uuid(parts[n - 2]) && matches!(parts[n - 1], "beat" | "claim")).then(|| (parts[n - 2], parts[n - 1]))
}

/// The first UUID in some bytes (a lock file's marker).
pub fn uuid_in(bytes: &[u8]) -> Option<String> {
    let shaped = |w: &[u8]| {
        w.iter().enumerate().all(|(i, b)| if [8, 13, 18, 23].contains(&i) { *b == b'-' } else { b.is_ascii_hexdigit() })
    };
    bytes.windows(36).find(|w| shaped(w)).map(|w| String::from_utf8_lossy(w).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(name: &str) -> World {
        World::new(Profile::named(name).unwrap(), 2)
    }

    #[test]
    fn exclusive_create_and_link_are_atomic_locally() {
        let mut w = world("local");
        w.open(0, ROOT, "a", How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert_eq!(w.open(1, ROOT, "a", How { create: true, exclusive: true, ..How::default() }), Err(errno::EXIST));
        assert_eq!(w.link(1, (ROOT, "a"), (ROOT, "b")), Ok(()));
        assert_eq!(w.link(0, (ROOT, "a"), (ROOT, "b")), Err(errno::EXIST));
        assert_eq!(w.stat(0, ROOT, "b").unwrap().links, 2);
    }

    #[test]
    fn a_ghost_shows_old_bytes_and_a_replaced_name_is_stale_once() {
        let mut w = world("gluster");
        let node = w.open(0, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).unwrap();
        w.write(0, node, "lock", 0, b"old");
        assert_eq!(w.stat(1, ROOT, "lock").unwrap().node, node);
        w.unlink(0, ROOT, "lock").unwrap();
        let ghost = w.open(1, ROOT, "lock", How::default()).unwrap();
        assert_eq!(w.read(ghost, 0, 10), b"old");
        let new = w.open(0, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert_ne!(new, node);
        w.now += 2_000_000_000;
        assert_eq!(w.stat(1, ROOT, "lock").unwrap().node, new);
        // Moved away and replaced: the handle names a file that lives on
        // elsewhere, so it is stale, once.
        w.rename(0, (ROOT, "lock"), (ROOT, "moved")).unwrap();
        let newer = w.open(0, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert_eq!(w.stat(1, ROOT, "lock"), Err(errno::STALE));
        assert_eq!(w.stat(1, ROOT, "lock").unwrap().node, newer);
    }

    #[test]
    fn nothing_is_made_in_a_removed_directory_a_cached_name_still_reaches() {
        let mut w = world("gluster");
        w.mkdir(0, ROOT, "d").unwrap();
        let old = w.stat(1, ROOT, "d").unwrap().node;
        w.rmdir(0, ROOT, "d").unwrap();
        w.mkdir(0, ROOT, "d").unwrap();
        // c1 still caches "d" as the removed directory: its create goes to
        // the new one (the kernel walks again on "stale file handle").
        let (dir, name) = w.walk(1, ROOT, "d/f").unwrap();
        assert_ne!(dir, old);
        w.open(1, dir, &name, How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert!(w.stat(0, ROOT, "d/f").is_ok());
        assert_eq!(w.open(1, old, "g", How { create: true, ..How::default() }), Err(errno::NOENT));
        assert_eq!(w.mkdir(1, old, "g"), Err(errno::NOENT));
    }

    #[test]
    fn rclone_hides_creates_and_sshfs_says_eperm() {
        let mut w = world("rclone");
        w.open(0, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert_eq!(w.stat(1, ROOT, "lock"), Err(errno::NOENT));
        assert!(w.open(1, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).is_ok());
        let mut s = world("sshfs");
        s.open(0, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }).unwrap();
        assert_eq!(s.open(1, ROOT, "lock", How { create: true, exclusive: true, ..How::default() }), Err(errno::PERM));
    }

    #[test]
    fn a_caching_sshfs_client_answers_creates_from_its_cache() {
        let mut w = world("sshfs");
        let exclusive = How { create: true, exclusive: true, ..How::default() };
        w.mkdir(0, ROOT, "d").unwrap();
        w.open(0, ROOT, "span1", exclusive).unwrap();
        assert!(w.stat(1, ROOT, "d").is_ok() && w.stat(1, ROOT, "span1").is_ok());
        w.rmdir(0, ROOT, "d").unwrap();
        w.unlink(0, ROOT, "span1").unwrap();
        // c1 caches both as there: "exists", from the cache, not sftp's EPERM.
        assert_eq!(w.open(1, ROOT, "span1", exclusive), Err(errno::EXIST));
        assert_eq!(w.mkdir(1, ROOT, "d"), Err(errno::EXIST));
        assert_eq!(w.walk(1, ROOT, "d/0").map(|_| ()), Err(errno::NOENT));
        // c0 caches nothing, and its creates reach the server.
        assert!(w.open(0, ROOT, "span1", exclusive).is_ok());
    }

    #[test]
    fn uuids_are_found_in_names() {
        let u = "0b7f2a64-8ad1-4a8f-9d55-6b3f0e2c9b71";
        let v = "1c7f2a64-8ad1-4a8f-9d55-6b3f0e2c9b72";
        assert_eq!(sign_of(&format!("job.lock.{u}.beat")), Some(u));
        assert_eq!(sign_of(&format!("job.lock.{u}.new")), Some(u));
        assert_eq!(sign_of(&format!("job.lock.{u}.claim.{v}.new")), Some(v));
        assert_eq!(sign_of(&format!("job.lock.{u}.claim")), None);
        assert_eq!(owner_of(&format!("job.lock.{u}.claim")), Some((u, "claim")));
        assert_eq!(uuid_in(format!("uuidlock/1?token=c1-{u}&x\n").as_bytes()), Some(u.to_owned()));
    }
}
