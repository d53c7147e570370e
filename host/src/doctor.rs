//! `uuidlock doctor DIR [DIR2]`: whether a directory, usually on a network
//! share, is safe for uuidlock, and with which settings.
//!
//! The doctor works natively on a probe directory it makes inside DIR
//! (`.uuidlock-doctor-<UUID>`, removed at the end) and never touches
//! anything else. It asks the filesystem what the protocol relies on
//! ([`crate`]'s guest, `src/protocol.rs`):
//!
//! - **exclusive create**: a second `O_EXCL` create of a name must fail with
//!   "exists" (`EACCES` while the file exists, as davfs2 answers, counts:
//!   uuidlock reads it as a busy lock);
//! - **hard links** and **rename over a file**: publishing a lock with a
//!   lifetime, and renewing its heartbeat;
//! - **deleting an open file**: SMB refuses it (`EBUSY`), and uuidlock
//!   retries a busy delete for a bounded time;
//! - **the share's clock**: the date a new file gets, against this machine's
//!   clock, and its resolution.
//!
//! Given DIR2, another mount of the same share (another client), it also
//! races exclusive creates of one name through the two mounts, and times
//! how long a file created through DIR, and new bytes at a name, take to
//! show through DIR2 (a lookup through DIR2 first, so that a caching client
//! has a negative entry to serve, as a waiting contender's client has).
//!
//! # The verdict
//!
//! - *unsafe* when a second exclusive create succeeds on DIR, or when a
//!   create or new bytes made through DIR were not seen through DIR2 within
//!   `--max-lag`: no verification delay can then be trusted;
//! - *safe with `--verification-delay` ≥ X* when exclusive create is not
//!   atomic across the two clients (both won a race). Only the verification
//!   delay then protects, and it must exceed the time one client takes to
//!   see another's create and bytes (the seed's rule). X is twice the largest
//!   lag seen, rounded up to 10 ms, and never below the default 0.1 s;
//! - *safe* otherwise. Without DIR2 this holds for the processes of one
//!   client; the report says that the clients were not compared.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli;
use crate::stats::percentile;

/// `uuidlock doctor`'s arguments.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Exit codes: 0 safe (perhaps with a verification delay: see the verdict), 1 unsafe, \
    2 usage error, 4 DIR cannot be written or read.\n\n\
    Examples:\n  uuidlock doctor /mnt/share/locks\n  \
    uuidlock doctor /mnt/share/locks /mnt/share-again/locks --json")]
pub struct Config {
    /// The directory to check (where your lock files will live)
    pub dir: PathBuf,
    /// The same directory through another mount or client of the share, to
    /// check what one client sees of another's files
    pub dir2: Option<PathBuf>,
    /// Rounds of each timed or raced probe
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Seconds to wait for a file to show through DIR2 before calling the
    /// share unsafe
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub max_lag: f64,
    /// Print the report as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// One capability: whether it works, and what the filesystem said.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Probe {
    pub works: bool,
    pub detail: String,
}

impl Probe {
    fn yes(detail: impl Into<String>) -> Probe {
        Probe { works: true, detail: detail.into() }
    }
    fn no(detail: impl Into<String>) -> Probe {
        Probe { works: false, detail: detail.into() }
    }
}

/// Lags in milliseconds over the rounds that saw the change, and how many
/// rounds did not see it within `--max-lag`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Lag {
    pub median_ms: f64,
    pub max_ms: f64,
    pub rounds: u32,
    pub unseen: u32,
}

/// What DIR2 showed of DIR's files.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Across {
    pub dir2: PathBuf,
    /// Races of two exclusive creates of one name, one through each mount.
    pub races: u32,
    /// Races that both creates won.
    pub both_created: u32,
    /// Races that renamed one file to one new name through both mounts, and
    /// how many of them left no file at all (a rename onto an existing name
    /// done as a delete and a rename: smbnetfs).
    pub rename_races: u32,
    pub renames_lost: u32,
    /// A file created through DIR, until DIR2 sees it.
    pub create_seen: Lag,
    /// New bytes at a name written through DIR, until DIR2 reads them.
    pub data_seen: Lag,
    /// Deleting through DIR2 a file held open through DIR.
    pub delete_open: Probe,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Safe,
    SafeWithDelay,
    Unsafe,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// The least verification delay to use, in seconds (safe-with-delay).
    pub verification_delay_s: Option<f64>,
    /// Why, one line each.
    pub reasons: Vec<String>,
}

/// The doctor's findings (`--json` prints this).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub dir: PathBuf,
    pub exclusive_create: Probe,
    pub hard_links: Probe,
    pub rename_over: Probe,
    pub delete_open: Probe,
    /// The share's date of a new file minus this machine's clock, seconds.
    pub clock_offset_s: f64,
    /// Whether the share's file dates carry fractions of a second.
    pub subsecond_dates: bool,
    pub across: Option<Across>,
    pub verdict: Verdict,
    /// Locks with a lifetime (`--lifetime`, `uuidlock run`) work here.
    pub lifetimes: Probe,
    /// What else a user should know, one line each.
    pub notes: Vec<String>,
}

/// The default verification delay, the least the doctor recommends.
const DEFAULT_DELAY: Duration = Duration::from_millis(100);
/// Between two looks for a change through DIR2.
const POLL: Duration = Duration::from_micros(200);

/// Runs `uuidlock doctor`; returns the exit code.
pub fn main(config: Config) -> i32 {
    if !(config.max_lag.is_finite() && config.max_lag > 0.0 && config.max_lag <= 600.0) {
        eprintln!("uuidlock doctor: --max-lag must be a number of seconds above 0 and at most 600");
        return cli::exit::USAGE;
    }
    match examine(&config) {
        Ok(report) => {
            if config.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
            } else {
                print!("{}", render(&report));
            }
            match report.verdict.kind {
                VerdictKind::Unsafe => cli::exit::TIMEOUT_OR_FREE,
                _ => cli::exit::OK,
            }
        }
        Err(e) if e.is::<UsageError>() => {
            eprintln!("uuidlock doctor: {e:#}");
            cli::exit::USAGE
        }
        Err(e) => {
            eprintln!("uuidlock doctor: {e:#}");
            cli::exit::IO
        }
    }
}

/// A mistake in the arguments, as opposed to a filesystem that fails.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Probes `config.dir` (and `dir2`) and judges.
pub fn examine(config: &Config) -> Result<Report> {
    let dir = &config.dir;
    if !dir.is_dir() {
        return Err(UsageError(format!("{} is not a directory; give the directory your locks will live in", dir.display())).into());
    }
    if let Some(dir2) = &config.dir2 {
        if !dir2.is_dir() {
            return Err(UsageError(format!("{} is not a directory; give another mount of DIR's share", dir2.display())).into());
        }
        if fs::canonicalize(dir)? == fs::canonicalize(dir2)? {
            return Err(UsageError(format!(
                "{} and {} are the same directory; DIR2 must be another mount or client of the share",
                dir.display(),
                dir2.display()
            ))
            .into());
        }
    }
    let probe = ProbeDir::make(dir)?;
    let report = probe.examine(config);
    probe.remove();
    report
}

/// The probe directory inside DIR, removed when the doctor is done.
struct ProbeDir {
    path: PathBuf,
    name: String,
}

impl ProbeDir {
    fn make(dir: &Path) -> Result<ProbeDir> {
        let name = format!(".uuidlock-doctor-{}", uuid_like());
        let path = dir.join(&name);
        fs::create_dir(&path).with_context(|| {
            format!("cannot make a probe directory in {}; the doctor needs to write there", dir.display())
        })?;
        Ok(ProbeDir { path, name })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn remove(&self) {
        // A share that refuses to delete a file still open elsewhere may need
        // a moment after the probes closed theirs.
        for _ in 0..50 {
            if fs::remove_dir_all(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("uuidlock doctor: could not remove {}; delete it by hand", self.path.display());
    }

    fn examine(&self, config: &Config) -> Result<Report> {
        let exclusive_create = self.exclusive_create()?;
        let hard_links = self.hard_links()?;
        let rename_over = self.rename_over()?;
        let delete_open = self.delete_open(&self.path)?;
        let (clock_offset_s, subsecond_dates) = self.clock()?;
        let across = match &config.dir2 {
            Some(dir2) => Some(self.across(dir2, config)?),
            None => None,
        };
        let lifetimes = match (hard_links.works, rename_over.works) {
            (true, true) => Probe::yes("yes"),
            (false, _) => Probe::no(format!("hard links fail ({}); locks without --lifetime work", hard_links.detail)),
            (true, false) => Probe::no(format!(
                "renaming over a file fails ({}), so a heartbeat cannot be renewed",
                rename_over.detail
            )),
        };
        let mut notes = Vec::new();
        if exclusive_create.works && exclusive_create.detail.contains("EACCES") {
            notes.push("a create of an existing name fails with \"permission denied\"; uuidlock reads it as a busy lock".into());
        }
        if !delete_open.works || across.as_ref().is_some_and(|a| !a.delete_open.works) {
            notes.push(format!(
                "deleting a file that another client has open fails; uuidlock retries it for up to {} s (a tenth \
                 of a lock's lifetime if it has one)",
                uuidlock::busy_retry(None).as_secs()
            ));
        }
        if across.as_ref().is_some_and(|a| a.renames_lost > 0) {
            notes.push(
                "two clients renaming one file at once can lose it (a rename onto an existing name done as a delete \
                 and a rename); uuidlock's fencing counter survives only because, after a verification delay, \
                 publishers that lost do not take a number: keep the delay"
                    .into(),
            );
        }
        if clock_offset_s.abs() > 1.0 {
            notes.push(format!(
                "the share dates files {clock_offset_s:+.1} s from this machine's clock; uuidlock never compares the two"
            ));
        }
        if !subsecond_dates {
            notes.push("file dates have whole seconds; stale locks are judged with a 2 s margin".into());
        }
        if config.dir2.is_none() {
            notes.push("clients were not compared; give DIR2, another mount of the share, to check across machines".into());
        }
        let verdict = judge(&exclusive_create, across.as_ref(), config.max_lag);
        Ok(Report {
            dir: config.dir.clone(),
            exclusive_create,
            hard_links,
            rename_over,
            delete_open,
            clock_offset_s,
            subsecond_dates,
            across,
            verdict,
            lifetimes,
            notes,
        })
    }

    /// A second exclusive create of one name must fail as "exists".
    fn exclusive_create(&self) -> Result<Probe> {
        let path = self.file("excl");
        create_new(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(match create_new(&path) {
            Ok(()) => Probe::no("a second exclusive create of one name succeeded"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Probe::yes("yes"),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Probe::yes("yes, but \"exists\" comes as EACCES"),
            Err(e) => Probe::no(format!("a second create failed with {e}, not \"exists\"")),
        })
    }

    fn hard_links(&self) -> Result<Probe> {
        let (source, target) = (self.file("link-source"), self.file("link-target"));
        fs::write(&source, b"linked").with_context(|| format!("cannot write {}", source.display()))?;
        Ok(match fs::hard_link(&source, &target) {
            Err(e) => Probe::no(e.to_string()),
            Ok(()) => match (fs::hard_link(&source, &target), fs::read(&target)) {
                (Ok(()), _) => Probe::no("a link over an existing name succeeded"),
                (Err(_), Ok(bytes)) if bytes == b"linked" => Probe::yes("yes"),
                (Err(_), read) => Probe::no(format!("the link does not read back its source's bytes ({read:?})")),
            },
        })
    }

    fn rename_over(&self) -> Result<Probe> {
        let (from, to) = (self.file("rename-from"), self.file("rename-to"));
        fs::write(&from, b"new").with_context(|| format!("cannot write {}", from.display()))?;
        fs::write(&to, b"old").with_context(|| format!("cannot write {}", to.display()))?;
        Ok(match fs::rename(&from, &to) {
            Err(e) => Probe::no(e.to_string()),
            Ok(()) => match fs::read(&to) {
                Ok(bytes) if bytes == b"new" => Probe::yes("yes"),
                read => Probe::no(format!("the renamed file reads {read:?}")),
            },
        })
    }

    /// Deletes through `through` (a view of the probe directory) a file held
    /// open through DIR.
    fn delete_open(&self, through: &Path) -> Result<Probe> {
        let path = self.file("open");
        fs::write(&path, b"open").with_context(|| format!("cannot write {}", path.display()))?;
        let other = through.join("open");
        wait_until(Duration::from_secs(5), || other.exists());
        let held = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let deleted = fs::remove_file(&other);
        drop(held);
        Ok(match deleted {
            Ok(()) => Probe::yes("yes"),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Probe::no(e.to_string())
            }
        })
    }

    /// The share's date of new files against this machine's clock.
    fn clock(&self) -> Result<(f64, bool)> {
        let mut offsets = Vec::new();
        let mut subsecond = false;
        for i in 0..5 {
            let path = self.file(&format!("clock-{i}"));
            let before = SystemTime::now();
            fs::write(&path, b"")?;
            let after = SystemTime::now();
            let dated = fs::metadata(&path)?.modified()?;
            let midpoint = before + after.duration_since(before).unwrap_or_default() / 2;
            offsets.push(signed_seconds(dated, midpoint));
            subsecond |= dated.duration_since(SystemTime::UNIX_EPOCH).map_or(false, |d| d.subsec_nanos() != 0);
            std::thread::sleep(Duration::from_millis(3));
        }
        offsets.sort_by(f64::total_cmp);
        Ok((offsets[offsets.len() / 2], subsecond))
    }

    /// What DIR2 shows of what is done through DIR.
    fn across(&self, dir2: &Path, config: &Config) -> Result<Across> {
        let max_lag = Duration::from_secs_f64(config.max_lag);
        let view = dir2.join(&self.name);
        let mut unseen = Across {
            dir2: dir2.to_owned(),
            races: 0,
            both_created: 0,
            rename_races: 0,
            renames_lost: 0,
            create_seen: Lag { median_ms: 0.0, max_ms: 0.0, rounds: 1, unseen: 1 },
            data_seen: Lag { median_ms: 0.0, max_ms: 0.0, rounds: 0, unseen: 0 },
            delete_open: Probe::no("not probed: DIR2 does not show DIR's files"),
        };
        if wait_until(max_lag, || view.is_dir()).is_none() {
            return Ok(unseen);
        }
        let create_seen = self.create_seen(&view, config.rounds, max_lag)?;
        if create_seen.unseen > 0 {
            unseen.create_seen = create_seen;
            return Ok(unseen);
        }
        let data_seen = self.data_seen(&view, config.rounds, max_lag)?;
        let (races, both_created) = self.races(&view, config.rounds, "race", |path| create_new(path))?;
        let (rename_races, renames_lost) = self.rename_races(&view, config.rounds)?;
        let delete_open = self.delete_open(&view)?;
        Ok(Across {
            dir2: dir2.to_owned(),
            races,
            both_created,
            rename_races,
            renames_lost,
            create_seen,
            data_seen,
            delete_open,
        })
    }

    /// Creates a name through DIR just after DIR2 looked it up and found
    /// nothing, and times until DIR2 sees it. Stops at the first round that
    /// does not see it within `max_lag`.
    fn create_seen(&self, view: &Path, rounds: u32, max_lag: Duration) -> Result<Lag> {
        let mut lags = Vec::new();
        for round in 0..rounds {
            let name = format!("seen-{round}");
            let there = view.join(&name);
            let _ = fs::symlink_metadata(&there); // the negative entry a waiter's client holds
            fs::write(self.file(&name), b"x")?;
            match wait_until(max_lag, || fs::symlink_metadata(&there).is_ok()) {
                Some(lag) => lags.push(lag),
                None => return Ok(lag(lags, 1)),
            }
        }
        Ok(lag(lags, 0))
    }

    /// Puts new bytes at one name through DIR (deleted and created anew, as
    /// a released and retaken lock is) after DIR2 read the old ones, and
    /// times until DIR2 reads the new ones.
    fn data_seen(&self, view: &Path, rounds: u32, max_lag: Duration) -> Result<Lag> {
        let (here, there) = (self.file("data"), view.join("data"));
        let mut lags = Vec::new();
        for round in 0..rounds {
            let bytes = format!("round {round} {}", uuid_like());
            let _ = fs::read(&there); // what a contender's client last read
            let _ = remove_retrying(&here);
            fs::write(&here, &bytes)?;
            match wait_until(max_lag, || fs::read(&there).is_ok_and(|read| read == bytes.as_bytes())) {
                Some(lag) => lags.push(lag),
                None => return Ok(lag(lags, 1)),
            }
        }
        Ok(lag(lags, 0))
    }

    /// Races `step` on one name (`<kind>-<round>`) through DIR and DIR2 at
    /// one instant; returns the races and how many both steps won.
    fn races(&self, view: &Path, rounds: u32, kind: &str, step: fn(&Path) -> io::Result<()>) -> Result<(u32, u32)> {
        let mut both = 0;
        for round in 0..rounds {
            let name = format!("{kind}-{round}");
            let (here, there) = (self.file(&name), view.join(&name));
            let _ = fs::symlink_metadata(&there);
            let start = Arc::new(Barrier::new(2));
            let other = {
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    step(&there)
                })
            };
            start.wait();
            let mine = step(&here);
            let theirs = other.join().expect("the racing thread does not panic");
            if mine.is_ok() && theirs.is_ok() {
                both += 1;
            }
        }
        Ok((rounds, both))
    }

    /// Renames `from-<round>` to `<round>`'s new name through both mounts at
    /// once (as two fencing-number takers do); returns the races and how
    /// many left neither name behind.
    fn rename_races(&self, view: &Path, rounds: u32) -> Result<(u32, u32)> {
        for round in 0..rounds {
            fs::write(self.file(&format!("rename-{round}")), b"x")?;
        }
        for round in 0..rounds {
            wait_until(Duration::from_secs(5), || view.join(format!("rename-{round}")).exists());
        }
        self.races(view, rounds, "rename", |path| fs::rename(path, path.with_extension("renamed")))?;
        let lost = (0..rounds)
            .filter(|round| {
                let name = self.file(&format!("rename-{round}"));
                !name.exists() && !name.with_extension("renamed").exists()
            })
            .count();
        Ok((rounds, lost as u32))
    }
}

/// The verdict from the probes (see the module docs).
fn judge(exclusive_create: &Probe, across: Option<&Across>, max_lag: f64) -> Verdict {
    let unsafe_because = |reason: String| Verdict { kind: VerdictKind::Unsafe, verification_delay_s: None, reasons: vec![reason] };
    if !exclusive_create.works {
        return unsafe_because(format!("exclusive create does not exclude: {}", exclusive_create.detail));
    }
    let Some(across) = across else {
        return Verdict { kind: VerdictKind::Safe, verification_delay_s: None, reasons: vec!["exclusive create excludes".into()] };
    };
    for (what, lag) in [("a file created", &across.create_seen), ("new bytes written", &across.data_seen)] {
        if lag.unseen > 0 {
            return unsafe_because(format!(
                "{what} through DIR did not show through DIR2 within {max_lag} s; no verification delay can be trusted"
            ));
        }
    }
    if across.both_created == 0 {
        return Verdict {
            kind: VerdictKind::Safe,
            verification_delay_s: None,
            reasons: vec![format!("exclusive create is atomic across the two clients ({} races, each won once)", across.races)],
        };
    }
    let largest = across.create_seen.max_ms.max(across.data_seen.max_ms) / 1000.0;
    let delay = ((2.0 * largest * 100.0).ceil() / 100.0).max(DEFAULT_DELAY.as_secs_f64());
    Verdict {
        kind: VerdictKind::SafeWithDelay,
        verification_delay_s: Some(delay),
        reasons: vec![
            format!(
                "exclusive create is not atomic across clients (both creates won {} of {} races), so only the verification delay protects",
                across.both_created, across.races
            ),
            format!(
                "it must exceed the time one client takes to see another's file (at most {:.1} ms here); use twice that, at least {} s",
                largest * 1000.0,
                DEFAULT_DELAY.as_secs_f64()
            ),
        ],
    }
}

/// The report as a person reads it.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let yes_no = |probe: &Probe| if probe.works { probe.detail.clone() } else { format!("no: {}", probe.detail) };
    let _ = writeln!(out, "uuidlock doctor: {}", report.dir.display());
    let _ = writeln!(out, "  exclusive create     {}", yes_no(&report.exclusive_create));
    let _ = writeln!(out, "  hard links           {}", yes_no(&report.hard_links));
    let _ = writeln!(out, "  rename over a file   {}", yes_no(&report.rename_over));
    let _ = writeln!(out, "  delete an open file  {}", yes_no(&report.delete_open));
    let dates = if report.subsecond_dates { "fractions of a second" } else { "whole seconds" };
    let _ = writeln!(out, "  share clock          {:+.3} s from this machine's; dates in {dates}", report.clock_offset_s);
    if let Some(across) = &report.across {
        let _ = writeln!(out, "across clients, through {}:", across.dir2.display());
        let _ = writeln!(out, "  both creates won     {} of {} races", across.both_created, across.races);
        let _ = writeln!(out, "  renames lost a file  {} of {} races", across.renames_lost, across.rename_races);
        let _ = writeln!(out, "  a create seen after  {}", render_lag(&across.create_seen));
        let _ = writeln!(out, "  new bytes read after {}", render_lag(&across.data_seen));
        let _ = writeln!(out, "  delete a file open on the other client  {}", yes_no(&across.delete_open));
    }
    let verdict = match report.verdict.kind {
        VerdictKind::Safe => "safe".to_owned(),
        VerdictKind::SafeWithDelay => format!(
            "safe with --verification-delay {} or more",
            report.verdict.verification_delay_s.unwrap_or(DEFAULT_DELAY.as_secs_f64())
        ),
        VerdictKind::Unsafe => "UNSAFE".to_owned(),
    };
    let _ = writeln!(out, "verdict: {verdict}");
    for reason in &report.verdict.reasons {
        let _ = writeln!(out, "  {reason}");
    }
    let _ = writeln!(out, "lifetimes: {}", yes_no(&report.lifetimes));
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn render_lag(lag: &Lag) -> String {
    if lag.unseen > 0 {
        return format!("never, in {} of {} rounds", lag.unseen, lag.rounds);
    }
    format!("median {:.2} ms, max {:.2} ms ({} rounds)", lag.median_ms, lag.max_ms, lag.rounds)
}

fn lag(mut lags: Vec<Duration>, unseen: u32) -> Lag {
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rounds = lags.len() as u32 + unseen;
    match lags.last() {
        None => Lag { median_ms: 0.0, max_ms: 0.0, rounds, unseen },
        Some(&max) => Lag { median_ms: ms(percentile(&lags, 0.5)), max_ms: ms(max), rounds, unseen },
    }
}

/// Polls `seen` until it holds; how long that took, or `None` after `limit`.
fn wait_until(limit: Duration, mut seen: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if seen() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn create_new(path: &Path) -> io::Result<()> {
    File::options().write(true).create_new(true).open(path)?.write_all(b"x")
}

fn remove_retrying(path: &Path) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

/// `a - b` in seconds, negative when `a` is earlier.
fn signed_seconds(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(later) => later.as_secs_f64(),
        Err(earlier) => -earlier.duration().as_secs_f64(),
    }
}

/// A random name part (the guest's token generator, without a prefix).
fn uuid_like() -> String {
    uuidlock::Token::generate("").map(|token| token.to_string()).unwrap_or_else(|_| {
        format!("{}", SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn across(both_created: u32, create_max_ms: f64, unseen: u32) -> Across {
        Across {
            dir2: PathBuf::from("/b"),
            races: 20,
            both_created,
            rename_races: 20,
            renames_lost: 0,
            create_seen: Lag { median_ms: 1.0, max_ms: create_max_ms, rounds: 20, unseen },
            data_seen: Lag { median_ms: 1.0, max_ms: 2.0, rounds: 20, unseen: 0 },
            delete_open: Probe::yes("yes"),
        }
    }

    #[test]
    fn a_share_whose_creates_both_win_needs_twice_the_largest_lag() {
        let verdict = judge(&Probe::yes("yes"), Some(&across(3, 80.0, 0)), 5.0);
        assert_eq!(verdict.kind, VerdictKind::SafeWithDelay);
        assert_eq!(verdict.verification_delay_s, Some(0.16));
        // Never below the default delay.
        let verdict = judge(&Probe::yes("yes"), Some(&across(3, 1.0, 0)), 5.0);
        assert_eq!(verdict.verification_delay_s, Some(0.1));
    }

    #[test]
    fn unseen_creates_and_failed_exclusion_are_unsafe() {
        assert_eq!(judge(&Probe::yes("yes"), Some(&across(0, 1.0, 1)), 5.0).kind, VerdictKind::Unsafe);
        assert_eq!(judge(&Probe::no("x"), None, 5.0).kind, VerdictKind::Unsafe);
        assert_eq!(judge(&Probe::yes("yes"), Some(&across(0, 1.0, 0)), 5.0).kind, VerdictKind::Safe);
    }
}
