//! Loopback network-share test beds.
//!
//! Each bed runs one server (sshd, smbd or glusterd) on 127.0.0.1 exporting ONE directory
//! of a fresh temp dir, and mounts it through TWO independent FUSE clients
//! (sshfs or smbnetfs), so tests can observe what two machines sharing a
//! directory would see: propagation delay, non-atomic O_EXCL, EBUSY, etc.
//!
//! Everything (server dir, configs, keys, pid files, logs, mount points) lives
//! in the temp dir, so beds never clash with each other or with the host.
//! Teardown only ever signals processes this module started (by pid, by the
//! process group it created, or by descent from them) — never by name.
//!
//! Only std, libc and tempfile are used.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long to wait for a server port or a mount to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often to poll while waiting.
const POLL: Duration = Duration::from_millis(20);
/// Lock file shared by every process using this module, so that two test
/// binaries don't run apt-get at the same time.
const APT_LOCK_FILE: &str = "/tmp/.share-beds-apt.lock";

/// Which protocol a bed speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareKind {
    /// sshd + internal-sftp, mounted twice with sshfs.
    Sshfs,
    /// smbd, mounted twice with smbnetfs.
    Smb,
    /// sshd + internal-sftp, mounted twice with `rclone mount`, whose VFS
    /// serves directory entries from a cache (the unsafe case).
    Rclone,
    /// glusterd with a one-brick volume, mounted twice with the GlusterFS
    /// FUSE client, with GlusterFS's default caches (a removed file is
    /// still read through the other mount for about a second).
    Gluster,
    /// The same with every cache off: the volume's open-behind, quick-read,
    /// stat-prefetch and write-behind, and the client's entry, attribute
    /// and negative timeouts and fopen-keep-cache.
    GlusterStrict,
}

impl ShareKind {
    pub fn name(self) -> &'static str {
        match self {
            ShareKind::Sshfs => "sshfs",
            ShareKind::Smb => "smb",
            ShareKind::Rclone => "rclone",
            ShareKind::Gluster => "gluster",
            ShareKind::GlusterStrict => "gluster-strict",
        }
    }

    /// Binaries that must exist, and the Debian packages that provide them.
    fn requirements(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ShareKind::Sshfs => (
                &["sshd", "ssh-keygen", "ssh", "sshfs", "fusermount3"],
                &["openssh-server", "openssh-client", "sshfs", "fuse3"],
            ),
            ShareKind::Smb => {
                (&["smbd", "smbpasswd", "smbnetfs", "fusermount3"], &["samba", "smbnetfs", "smbclient", "fuse3"])
            }
            ShareKind::Rclone => (
                &["sshd", "ssh-keygen", "rclone", "fusermount3"],
                &["openssh-server", "openssh-client", "rclone", "fuse3"],
            ),
            ShareKind::Gluster | ShareKind::GlusterStrict => (
                &["glusterd", "gluster", "glusterfs", "fusermount3"],
                &["glusterfs-server", "glusterfs-client", "fuse3"],
            ),
        }
    }
}

/// A running bed. Dropping it unmounts both clients, stops every process it
/// started and removes the temp dir.
pub struct Share {
    kind: ShareKind,
    /// `None` only after teardown decided to leak it (a mount would not go away).
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    server_dir: PathBuf,
    /// FUSE mount points (what fusermount unmounts).
    mountpoints: Vec<PathBuf>,
    /// The server dir as seen through each client (for SMB a subpath of the mount).
    views: Vec<PathBuf>,
    server: Option<Child>,
    clients: Vec<Child>,
    /// Pid files of daemons the server spawns on its own (samba-dcerpcd).
    side_pidfiles: Vec<PathBuf>,
    /// A GlusterFS volume to stop and delete before glusterd stops.
    volume: Option<String>,
    /// Held while glusterd runs: one per machine (its socket is fixed).
    _machine: Option<FileLock>,
}

impl Share {
    /// Starts the bed. `Err(reason)` when it cannot (no /dev/fuse, install
    /// failed, server or client didn't start); the caller should print
    /// `SKIPPED: <reason>`. Anything already started is torn down first.
    pub fn start(kind: ShareKind) -> Result<Share, String> {
        check_dev_fuse()?;
        let (bins, pkgs) = kind.requirements();
        ensure_installed(bins, pkgs)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("share-bed-{}-", kind.name()))
            .tempdir_in(super::scratch())
            .map_err(|e| format!("create temp dir: {e}"))?;
        let root = tmp.path().to_path_buf();
        let server_dir = root.join("server");
        mkdir(&server_dir)?;
        let mut share = Share {
            kind,
            tmp: Some(tmp),
            root,
            server_dir,
            mountpoints: Vec::new(),
            views: Vec::new(),
            server: None,
            clients: Vec::new(),
            side_pidfiles: Vec::new(),
            volume: None,
            _machine: None,
        };
        // On error `share` is dropped here, which tears down the partial bed.
        match kind {
            ShareKind::Sshfs => share.start_sshfs()?,
            ShareKind::Smb => share.start_smb()?,
            ShareKind::Rclone => share.start_rclone()?,
            ShareKind::Gluster => share.start_gluster(false)?,
            ShareKind::GlusterStrict => share.start_gluster(true)?,
        }
        Ok(share)
    }

    /// The exported directory on the server's local disk.
    pub fn server_dir(&self) -> &Path {
        &self.server_dir
    }

    /// The same directory as seen through client A and client B.
    pub fn mounts(&self) -> [PathBuf; 2] {
        [self.views[0].clone(), self.views[1].clone()]
    }

    /// "sshfs" or "smb".
    pub fn name(&self) -> &str {
        self.kind.name()
    }

    pub fn kind(&self) -> ShareKind {
        self.kind
    }

    /// The bed's temp dir (configs and logs live here; useful when a test fails).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pids of the processes started directly (server first, then clients).
    pub fn pids(&self) -> Vec<u32> {
        self.server.iter().chain(&self.clients).map(Child::id).collect()
    }

    // ---------------------------------------------------------------- sshfs

    fn start_sshfs(&mut self) -> Result<(), String> {
        let (port, ssh_config) = self.start_sshd()?;
        let root = self.root.clone();
        // A: no caching at all; B: sshfs directory cache on, like a lazy client.
        let opts =
            ["dir_cache=no,attr_timeout=0,entry_timeout=0,negative_timeout=0", "dir_cache=yes,dcache_timeout=10"];
        for (label, opt) in ["a", "b"].iter().zip(opts) {
            let mnt = root.join(format!("mnt-{label}"));
            mkdir(&mnt)?;
            let mut cmd = Command::new("sshfs");
            cmd.arg("-f")
                .arg("-F")
                .arg(&ssh_config)
                .arg("-p")
                .arg(port.to_string())
                .arg(format!("root@127.0.0.1:{}", self.server_dir.display()))
                .arg(&mnt)
                .arg("-o")
                .arg(opt);
            let log = root.join(format!("sshfs-{label}.log"));
            self.spawn_client(cmd, &log, &mnt, &mnt)?;
        }
        Ok(())
    }

    /// Two `rclone mount`s of the sftp directory, with rclone's defaults
    /// (no file cache, directory entries cached for 5 minutes).
    fn start_rclone(&mut self) -> Result<(), String> {
        let (port, _) = self.start_sshd()?;
        let root = self.root.clone();
        for label in ["a", "b"] {
            let mnt = root.join(format!("mnt-{label}"));
            mkdir(&mnt)?;
            let mut cmd = Command::new("rclone");
            cmd.arg("mount")
                .arg(format!(":sftp:{}", self.server_dir.display()))
                .arg(&mnt)
                .args(["--sftp-host", "127.0.0.1", "--sftp-user", "root", "--sftp-port"])
                .arg(port.to_string())
                .arg("--sftp-key-file")
                .arg(root.join("client_ed25519"))
                .arg("--config")
                .arg(root.join("rclone.conf"));
            let log = root.join(format!("rclone-{label}.log"));
            self.spawn_client(cmd, &log, &mnt, &mnt)?;
        }
        Ok(())
    }

    /// sshd with throwaway keys on a free port; the port, and an ssh client
    /// config that logs in with the client key.
    fn start_sshd(&mut self) -> Result<(u16, PathBuf), String> {
        let root = self.root.clone();
        fs::create_dir_all("/run/sshd").map_err(|e| format!("mkdir /run/sshd: {e}"))?;
        let _ = fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755));
        let host_key = root.join("ssh_host_ed25519_key");
        let client_key = root.join("client_ed25519");
        keygen(&host_key)?;
        keygen(&client_key)?;
        let authorized = root.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).map_err(|e| format!("write authorized_keys: {e}"))?;

        let log = root.join("sshd.log");
        let port = self.start_server_with_retry(&log, |port| {
            let conf = root.join("sshd_config");
            write_file(&conf, &sshd_config(&root, port, &host_key, &authorized))?;
            // sshd re-executes itself, so it needs an absolute path.
            let mut cmd = Command::new(find_bin("sshd").unwrap_or_else(|| "/usr/sbin/sshd".into()));
            cmd.args(["-D", "-e", "-f"]).arg(&conf);
            Ok(Spawn { cmd, own_group: true })
        })?;

        let ssh_config = root.join("ssh_config");
        write_file(&ssh_config, &ssh_client_config(&root, &client_key))?;
        Ok((port, ssh_config))
    }

    // ------------------------------------------------------------------ smb

    fn start_smb(&mut self) -> Result<(), String> {
        let root = self.root.clone();
        for d in ["lock", "state", "cache", "private", "pid", "ncalrpc"] {
            mkdir(&root.join("samba").join(d))?;
        }
        let conf = root.join("smb.conf");
        let password = format!("pw{}x{}", std::process::id(), now_nanos() % 1_000_000);
        self.side_pidfiles.push(root.join("samba/pid/samba-dcerpcd.pid"));

        // The passdb path does not depend on the port, so seed it once.
        write_file(&conf, &smb_config(&root, &self.server_dir, 445))?;
        run_with_stdin(
            Command::new("smbpasswd").arg("-c").arg(&conf).args(["-a", "-s", "root"]),
            &format!("{password}\n{password}\n"),
            "smbpasswd",
        )?;

        let log = root.join("smbd.log");
        let server_dir = self.server_dir.clone();
        let port = self.start_server_with_retry(&log, |port| {
            write_file(&conf, &smb_config(&root, &server_dir, port))?;
            // --foreground keeps the pid ours. smbd calls setsid() itself,
            // which fails if we already made it a group leader, so it is not
            // put in its own group here; after setsid its pgid is its pid all
            // the same. Never pass --no-process-group.
            let mut cmd = Command::new("smbd");
            cmd.args(["--foreground", "--debug-stdout", "-s"]).arg(&conf);
            Ok(Spawn { cmd, own_group: false })
        })?;

        for label in ["a", "b"] {
            let home = root.join(format!("client-{label}"));
            let dot_smb = home.join(".smb");
            mkdir(&dot_smb)?;
            let nconf = dot_smb.join("smbnetfs.conf");
            write_file(&nconf, &smbnetfs_config(&password))?;
            fs::set_permissions(&nconf, fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod smbnetfs.conf: {e}"))?;
            write_file(&dot_smb.join("smb.conf"), &smb_client_config(&home))?;
            let mnt = root.join(format!("mnt-{label}"));
            mkdir(&mnt)?;
            let mut cmd = Command::new("smbnetfs");
            cmd.arg("-f").arg(&mnt).env("HOME", &home);
            let view = mnt.join(format!("127.0.0.1:{port}")).join("share");
            let log = root.join(format!("smbnetfs-{label}.log"));
            self.spawn_client(cmd, &log, &mnt, &view)?;
        }
        Ok(())
    }

    // -------------------------------------------------------------- gluster

    /// glusterd bound to 127.0.0.1 with its working directory in the bed,
    /// a one-brick volume, and two FUSE clients. One glusterd per machine:
    /// the CLI's socket, /var/run/glusterd.socket, is fixed, so beds take
    /// turns (a file lock, across test binaries).
    fn start_gluster(&mut self, strict: bool) -> Result<(), String> {
        self._machine = Some(FileLock::acquire(Path::new(GLUSTERD_LOCK_FILE))?);
        if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], 24007)), POLL).is_ok() {
            return Err("another glusterd listens on 127.0.0.1:24007; stop it first".into());
        }
        let root = self.root.clone();
        // The CLI refuses 127.0.0.1 and localhost as a brick's host, even
        // with `force`: this machine's name, if it resolves to 127.0.0.1.
        let host = loopback_name()?;
        let work = root.join("glusterd");
        mkdir(&work)?;
        for shared in ["groups", "hooks"] {
            let from = Path::new("/var/lib/glusterd").join(shared);
            if from.is_dir() {
                copy_tree(&from, &work.join(shared))?;
            }
        }
        let conf = root.join("glusterd.vol");
        write_file(&conf, &glusterd_config(&work))?;
        let log = root.join("glusterd.log");
        // -N: glusterd stays in the foreground, so its pid is ours.
        let mut cmd = Command::new(find_bin("glusterd").unwrap_or_else(|| "glusterd".into()));
        cmd.arg("-N").arg("-f").arg(&conf).arg(format!("--log-file={}", log.display()));
        self.server = Some(spawn_logged(&mut cmd, &root.join("glusterd.out"), true)?);
        wait_until(READY_TIMEOUT, || gluster(&["pool", "list"]).is_ok())
            .map_err(|()| format!("glusterd did not answer: {}", log_tail(&log)))?;
        let volume = format!("uuidlock{}", std::process::id());
        let brick = root.join("brick");
        mkdir(&brick)?;
        gluster(&["volume", "create", &volume, &format!("{host}:{}", brick.display()), "force"])?;
        self.volume = Some(volume.clone());
        if strict {
            for option in [
                "performance.open-behind",
                "performance.quick-read",
                "performance.stat-prefetch",
                "performance.write-behind",
            ] {
                gluster(&["volume", "set", &volume, option, "off"])?;
            }
        }
        gluster(&["volume", "start", &volume])?;
        for label in ["a", "b"] {
            let mnt = root.join(format!("mnt-{label}"));
            mkdir(&mnt)?;
            let mut cmd = Command::new(find_bin("glusterfs").unwrap_or_else(|| "glusterfs".into()));
            cmd.arg("-N")
                .arg("--volfile-server=127.0.0.1")
                .arg(format!("--volfile-id={volume}"))
                .arg(format!("--log-file={}", root.join(format!("glusterfs-{label}.log")).display()));
            if strict {
                cmd.args([
                    "--entry-timeout=0",
                    "--attribute-timeout=0",
                    "--negative-timeout=0",
                    "--fopen-keep-cache=off",
                ]);
            }
            cmd.arg(&mnt);
            let log = root.join(format!("glusterfs-{label}.out"));
            self.spawn_client(cmd, &log, &mnt, &mnt)?;
        }
        Ok(())
    }

    /// A third GlusterFS client whose clock runs `offset_s` seconds off
    /// (libfaketime): how a client on another machine with a wrong clock
    /// dates files. Returns the directory as it sees it.
    pub fn mount_with_clock(&mut self, offset_s: i64) -> Result<PathBuf, String> {
        let volume = self.volume.clone().ok_or("only a GlusterFS bed mounts a client with its own clock")?;
        ensure_installed(&["faketime"], &["faketime"])?;
        let root = self.root.clone();
        let label = format!("clock{offset_s:+}");
        let mnt = root.join(format!("mnt-{label}"));
        mkdir(&mnt)?;
        let mut cmd = Command::new(find_bin("faketime").unwrap_or_else(|| "faketime".into()));
        cmd.arg("-f")
            .arg(format!("{offset_s:+}s"))
            .arg(find_bin("glusterfs").unwrap_or_else(|| "glusterfs".into()))
            .arg("-N")
            .arg("--volfile-server=127.0.0.1")
            .arg(format!("--volfile-id={volume}"))
            .arg(format!("--log-file={}", root.join(format!("glusterfs-{label}.log")).display()))
            .arg(&mnt);
        let log = root.join(format!("glusterfs-{label}.out"));
        self.spawn_client(cmd, &log, &mnt, &mnt)?;
        Ok(mnt)
    }

    // --------------------------------------------------------------- common

    /// Starts the server on a free port and waits until it accepts
    /// connections. Picking a port by binding :0 and releasing it is racy when
    /// beds start in parallel, so a server that dies early is retried on a new
    /// port.
    fn start_server_with_retry(
        &mut self,
        log: &Path,
        mut make: impl FnMut(u16) -> Result<Spawn, String>,
    ) -> Result<u16, String> {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port()?;
            let Spawn { mut cmd, own_group } = make(port)?;
            let child = spawn_logged(&mut cmd, log, own_group)?;
            self.server = Some(child);
            match wait_for_port(port, self.server.as_mut().unwrap(), log) {
                Ok(()) => return Ok(port),
                Err(e) => {
                    last_err = e;
                    if let Some(c) = self.server.take() {
                        stop_child(c);
                    }
                }
            }
        }
        Err(last_err)
    }

    /// Spawns one FUSE client in its own process group and waits until `mnt`
    /// is mounted and `view` is listable.
    fn spawn_client(&mut self, mut cmd: Command, log: &Path, mnt: &Path, view: &Path) -> Result<(), String> {
        let child = spawn_logged(&mut cmd, log, true)?;
        self.clients.push(child);
        // Record it before waiting so a half-mounted client still gets unmounted.
        self.mountpoints.push(mnt.to_path_buf());
        let child = self.clients.last_mut().unwrap();
        wait_for_mount(mnt, view, child, log)?;
        self.views.push(view.to_path_buf());
        Ok(())
    }

    fn teardown(&mut self) {
        for mnt in &self.mountpoints {
            unmount(mnt);
        }
        // Clients normally exit by themselves once unmounted.
        for c in self.clients.drain(..) {
            stop_child(c);
        }
        // glusterd stops the volume's brick process itself.
        if let Some(volume) = self.volume.take() {
            let _ = gluster(&["volume", "stop", &volume, "force"]);
            let _ = gluster(&["volume", "delete", &volume]);
        }
        if let Some(s) = self.server.take() {
            stop_child(s);
        }
        for pf in &self.side_pidfiles {
            stop_pidfile_daemon(pf, &self.root);
        }
        // Last resort for anything still naming our temp dir (e.g. an rpcd
        // worker that lost its parent): these are ours by construction.
        kill_referencing(&self.root);
        let still_mounted = self.mountpoints.iter().any(|m| is_mounted(m));
        if still_mounted {
            // Never let remove_dir_all walk into a live mount.
            if let Some(t) = self.tmp.take() {
                let _ = t.keep();
            }
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.teardown();
    }
}

// ====================================================================== config

/// Held while a bed's glusterd runs.
const GLUSTERD_LOCK_FILE: &str = "/tmp/.share-beds-glusterd.lock";

/// glusterd's own configuration, with its state in `work` and its port
/// bound to 127.0.0.1.
fn glusterd_config(work: &Path) -> String {
    format!(
        "volume management\n\
         \x20   type mgmt/glusterd\n\
         \x20   option working-directory {}\n\
         \x20   option transport-type socket\n\
         \x20   option transport.socket.listen-port 24007\n\
         \x20   option transport.socket.bind-address 127.0.0.1\n\
         \x20   option transport.socket.keepalive-time 10\n\
         \x20   option transport.socket.keepalive-interval 2\n\
         \x20   option transport.socket.read-fail-log off\n\
         \x20   option ping-timeout 0\n\
         \x20   option event-threads 1\n\
         \x20   option max-port 60999\n\
         end-volume\n",
        work.display()
    )
}

/// Runs the gluster CLI in script mode; Err carries its output.
fn gluster(args: &[&str]) -> Result<(), String> {
    let out = Command::new(find_bin("gluster").unwrap_or_else(|| "gluster".into()))
        .arg("--mode=script")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("gluster {}: cannot run: {e}", args.join(" ")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Err(format!("gluster {} failed: {}", args.join(" "), tail_of(&text, 3)))
}

/// A name of this machine that resolves to 127.0.0.1 and is not
/// `localhost`.
fn loopback_name() -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let mut names = Vec::new();
    if let Ok(name) = fs::read_to_string("/etc/hostname") {
        names.push(name.trim().to_owned());
    }
    if let Ok(hosts) = fs::read_to_string("/etc/hosts") {
        for line in hosts.lines().filter(|line| line.trim_start().starts_with("127.0.0.1")) {
            names.extend(line.split_whitespace().skip(1).map(str::to_owned));
        }
    }
    names
        .into_iter()
        .filter(|name| !name.is_empty() && name != "localhost" && !name.starts_with("localhost."))
        .find(|name| {
            (name.as_str(), 0).to_socket_addrs().is_ok_and(|mut addrs| addrs.any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST))
        })
        .ok_or_else(|| "no name of this machine but localhost resolves to 127.0.0.1 (the gluster CLI refuses 127.0.0.1 and localhost as a brick's host)".into())
}

/// Copies the directory tree `from` to `to` (glusterd's groups and hooks).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    mkdir(to)?;
    for entry in fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(|e| format!("copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Polls `ready` until it holds, for at most `limit`.
fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            return Err(());
        }
        sleep(POLL * 5);
    }
    Ok(())
}

fn sshd_config(root: &Path, port: u16, host_key: &Path, authorized: &Path) -> String {
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {hk}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {ak}\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin yes\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UseDNS no\n\
         PrintMotd no\n\
         MaxStartups 100\n\
         Subsystem sftp internal-sftp\n",
        hk = host_key.display(),
        pid = root.join("sshd.pid").display(),
        ak = authorized.display(),
    )
}

fn ssh_client_config(root: &Path, key: &Path) -> String {
    format!(
        "Host *\n\
         \tIdentityFile {key}\n\
         \tIdentitiesOnly yes\n\
         \tUserKnownHostsFile {kh}\n\
         \tGlobalKnownHostsFile /dev/null\n\
         \tStrictHostKeyChecking no\n\
         \tBatchMode yes\n\
         \tLogLevel ERROR\n",
        key = key.display(),
        kh = root.join("known_hosts").display(),
    )
}

/// Every path smbd writes is redirected into the temp dir so parallel beds
/// and the host's own samba state never interact.
fn smb_config(root: &Path, share_dir: &Path, port: u16) -> String {
    let s = root.join("samba");
    let d = |n: &str| s.join(n).display().to_string();
    format!(
        "[global]\n\
         interfaces = lo\n\
         bind interfaces only = yes\n\
         smb ports = {port}\n\
         disable netbios = yes\n\
         server role = standalone server\n\
         passdb backend = tdbsam:{passdb}\n\
         lock directory = {lock}\n\
         state directory = {state}\n\
         cache directory = {cache}\n\
         private dir = {private}\n\
         pid directory = {pid}\n\
         ncalrpc dir = {ncalrpc}\n\
         log file = {log}\n\
         load printers = no\n\
         printing = bsd\n\
         printcap name = /dev/null\n\
         disable spoolss = yes\n\
         map to guest = never\n\
         \n\
         [share]\n\
         path = {share}\n\
         read only = no\n\
         force user = root\n",
        passdb = s.join("private/passdb.tdb").display(),
        lock = d("lock"),
        state = d("state"),
        cache = d("cache"),
        private = d("private"),
        pid = d("pid"),
        ncalrpc = d("ncalrpc"),
        log = root.join("smbd-%m.log").display(),
        share = share_dir.display(),
    )
}

fn smbnetfs_config(password: &str) -> String {
    format!(
        "auth \"root\" \"{password}\"\n\
         smb_query_browsers \"false\"\n\
         show_hidden_hosts \"true\"\n\
         stat_workaround_enable_default_entries \"false\"\n\
         use_libsecret \"false\"\n"
    )
}

/// libsmbclient reads `$HOME/.smb/smb.conf`; keep its state per client.
fn smb_client_config(home: &Path) -> String {
    let d = |n: &str| home.join("samba").join(n).display().to_string();
    format!(
        "[global]\n\
         client min protocol = SMB2\n\
         disable netbios = yes\n\
         lock directory = {}\n\
         state directory = {}\n\
         cache directory = {}\n\
         private dir = {}\n",
        d("lock"),
        d("state"),
        d("cache"),
        d("private"),
    )
}

// ===================================================================== install

/// Serialises installs between threads of one process; the flock on
/// APT_LOCK_FILE serialises between processes.
static INSTALL: Mutex<bool> = Mutex::new(false); // true once apt-get update ran

/// Installs `packages` unless every binary in `bins` is already present.
pub fn ensure_installed(bins: &[&str], packages: &[&str]) -> Result<(), String> {
    if bins.iter().all(|b| find_bin(b).is_some()) {
        return Ok(());
    }
    let mut updated = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let _flock = FileLock::acquire(Path::new(APT_LOCK_FILE))?;
    // Another thread or process may have installed them while we waited.
    if bins.iter().all(|b| find_bin(b).is_some()) {
        return Ok(());
    }
    if !*updated {
        apt_get(&["update", "-q"])?;
        *updated = true;
    }
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt_get(&args)?;
    match bins.iter().find(|b| find_bin(b).is_none()) {
        Some(missing) => Err(format!("install: `{missing}` still missing after apt-get install")),
        None => Ok(()),
    }
}

/// Runs apt-get, waiting for the dpkg lock and retrying a few times since
/// something outside this module may hold it.
fn apt_get(args: &[&str]) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            sleep(Duration::from_secs(5));
        }
        let out = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=120"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("apt-get {}: cannot run: {e}", args[0]))?;
        if out.status.success() {
            return Ok(());
        }
        last = tail_of(&String::from_utf8_lossy(&out.stderr), 3);
    }
    Err(format!("apt-get {} failed: {last}", args.join(" ")))
}

/// An exclusive flock, released on drop.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, String> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o666)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: valid fd owned by `f`.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: valid fd owned by self.0.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Looks a binary up on PATH plus the sbin dirs (which a test runner's PATH
/// may lack).
fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.mode() & 0o111 != 0).unwrap_or(false))
}

fn fusermount() -> PathBuf {
    find_bin("fusermount3").or_else(|| find_bin("fusermount")).unwrap_or_else(|| "fusermount3".into())
}

fn check_dev_fuse() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| format!("/dev/fuse unusable: {e}"))
}

// =================================================================== processes

/// A server command line, and whether to start it as its own process-group
/// leader (false for daemons that call setsid() themselves).
struct Spawn {
    cmd: Command,
    own_group: bool,
}

/// Spawns `cmd` with stdout+stderr appended to `log`, optionally in a new
/// process group (so teardown can signal it together with its helpers, e.g.
/// sshfs's ssh).
fn spawn_logged(cmd: &mut Command, log: &Path, own_group: bool) -> Result<Child, String> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open log {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
    if own_group {
        cmd.process_group(0);
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))
}

/// Runs a short command feeding `input` on stdin; Err carries its output tail.
fn run_with_stdin(cmd: &mut Command, input: &str, what: &str) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Err(format!("{what} failed ({}): {}", out.status, tail_of(&text, 3)))
}

fn keygen(path: &Path) -> Result<(), String> {
    run_with_stdin(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "share-bed", "-f"]).arg(path),
        "",
        "ssh-keygen",
    )
}

/// True when `pid` (our child) has exited, without reaping it: while it is a
/// zombie its pid, and so its process-group id, cannot be reused, which keeps
/// `kill(-pid)` safe.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
        r != 0 || info.si_pid() != 0
    }
}

/// Stops a child we spawned: SIGTERM to it, its descendants and its process
/// group, then SIGKILL after a grace period, then reap it.
fn stop_child(mut child: Child) {
    let pid = child.id();
    let descendants = descendants_of(pid);
    signal_all(pid, &descendants, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !exited_unreaped(pid) && Instant::now() < deadline {
        sleep(POLL);
    }
    // Catch stragglers (including ones forked after our snapshot) before the
    // leader is reaped and its pid could be recycled.
    let mut all = descendants;
    all.extend(descendants_of(pid));
    signal_all(pid, &all, libc::SIGKILL);
    let _ = child.wait();
    wait_gone(&all, Duration::from_secs(2));
}

fn signal_all(leader: u32, others: &[u32], sig: libc::c_int) {
    // SAFETY: plain syscalls; the group id is our unreaped child's pid.
    unsafe {
        libc::kill(-(leader as libc::pid_t), sig);
        libc::kill(leader as libc::pid_t, sig);
        for &p in others {
            libc::kill(p as libc::pid_t, sig);
        }
    }
}

/// Stops a daemon the server spawned itself (samba-dcerpcd), identified by
/// the pid file in our temp dir; the pid is trusted only if its command line
/// names our temp dir, so a recycled pid is never hit.
fn stop_pidfile_daemon(pidfile: &Path, root: &Path) {
    let Some(pid) = fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) else {
        return;
    };
    if !cmdline_mentions(pid, root) {
        return;
    }
    let mut all = descendants_of(pid);
    all.push(pid);
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        for &p in &all {
            // SAFETY: plain syscall.
            unsafe { libc::kill(p as libc::pid_t, sig) };
        }
        if wait_gone(&all, Duration::from_secs(2)) {
            break;
        }
    }
}

/// SIGKILLs any live process whose command line names `root`.
fn kill_referencing(root: &Path) {
    let me = std::process::id();
    let pids: Vec<u32> =
        all_pids().into_iter().filter(|&p| p != me && is_alive(p) && cmdline_mentions(p, root)).collect();
    for &p in &pids {
        // SAFETY: plain syscall.
        unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    }
    wait_gone(&pids, Duration::from_secs(2));
}

/// Waits until none of `pids` is alive (gone or zombie). Returns success.
fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| is_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// (state, ppid) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and ')' — parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Alive = exists and is not a zombie (zombies of orphans wait for init).
pub fn is_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// All transitive children of `pid`, by parent links in /proc.
fn descendants_of(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = all_pids().into_iter().filter_map(|p| proc_stat(p).map(|(_, pp)| (p, pp))).collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(cur) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == cur && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

pub fn cmdline_mentions(pid: u32, needle: &Path) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = needle.as_os_str().as_encoded_bytes();
    raw.windows(needle.len()).any(|w| w == needle)
}

// ================================================================ ports/mounts

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("pick free port: {e}"))
}

/// Waits until 127.0.0.1:port accepts, failing fast if the server exits.
fn wait_for_port(port: u16, server: &mut Child, log: &Path) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if exited_unreaped(server.id()) {
            return Err(format!("server exited before listening on {port}: {}", log_tail(log)));
        }
        if Instant::now() >= deadline {
            return Err(format!("server not listening on {port} after {READY_TIMEOUT:?}: {}", log_tail(log)));
        }
        sleep(POLL);
    }
}

/// Waits until `mnt` is a mount point and `view` (inside it) can be listed.
fn wait_for_mount(mnt: &Path, view: &Path, client: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if is_mounted(mnt) && fs::read_dir(view).is_ok() {
            return Ok(());
        }
        if exited_unreaped(client.id()) {
            return Err(format!("client for {} exited: {}", mnt.display(), log_tail(log)));
        }
        if Instant::now() >= deadline {
            let state = if is_mounted(mnt) { "mounted but view not listable" } else { "not mounted" };
            return Err(format!("{} {state} after {READY_TIMEOUT:?}: {}", view.display(), log_tail(log)));
        }
        sleep(POLL);
    }
}

/// True if /proc/self/mountinfo lists `mnt` as a mount point.
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    info.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape_mountinfo(m) == want)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `fusermount3 -u`, retried while the mount is busy, then a lazy `-uz` so a
/// stuck mount can never outlive the bed.
fn unmount(mnt: &Path) {
    let fm = fusermount();
    let run = |flag: &str| {
        Command::new(&fm)
            .arg(flag)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    for _ in 0..20 {
        if !is_mounted(mnt) || run("-u") {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    run("-uz");
}

// ======================================================================= misc

fn mkdir(p: &Path) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn write_file(p: &Path, text: &str) -> Result<(), String> {
    fs::write(p, text).map_err(|e| format!("write {}: {e}", p.display()))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Last lines of a log file plus its path, for one-line error messages.
fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    format!("[{}] {}", log.display(), tail_of(&text, 4))
}

fn tail_of(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
