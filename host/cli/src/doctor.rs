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
//!   lifetime, and renewing its heartbeat; where there are no hard links,
//!   **renaming a directory onto a full one** must fail, as the claims of
//!   locks with a lifetime are then directories renamed into place;
//! - **deleting an open file**: SMB refuses it (`EBUSY`), and uuidlock
//!   retries a busy delete for a bounded time;
//! - **the share's clock**: the date a new file gets, against this machine's
//!   clock, and its resolution.
//!
//! Given DIR2, another mount of the same share (another client), it also
//! races exclusive creates of one name through the two mounts, `mkdir`s of
//! one name, and renames of two directories (each holding a file) onto one
//! new name (how a claim is published where a share has no hard links: only
//! one client may win it), and times
//! how long a file created through DIR, and new bytes at a name, take to
//! show through DIR2 (a lookup through DIR2 first, so that a caching client
//! has a negative entry to serve, as a waiting contender's client has). It
//! counts the rounds in which DIR2 still read a replaced file's old bytes
//! (a ghost) and the "stale file handle" answers, and compares the dates
//! DIR2 gives new files with DIR's (a share that dates files by each
//! client's clock shows the clients' skew).
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
//!
//! With DIR2 the verdict also says whether both `mkdir`s ever won.
//!
//! Locks with a lifetime work where hard links and rename over a file do,
//! and where there are no hard links but a directory renamed onto a full
//! one fails (and, with DIR2, no race of two such renames was won by both
//! clients);
//! where a ghost was seen, with lifetimes of at least three times the
//! longest one (point 10 of `src/protocol.rs`), and where the clients'
//! dates disagree by more than a second, with `--max-clock-skew` of twice
//! the difference.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::exit;
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
    /// Rounds of each timed or raced probe (1 to 1000)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Seconds to wait for a file to show through DIR2 before calling the
    /// share unsafe (above 0, at most 600)
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
    /// Races of two `mkdir`s of one name, one through each mount, and how
    /// many both won: whether a directory could stand in for a claim where
    /// there are no hard links.
    pub mkdir_races: u32,
    pub both_mkdired: u32,
    /// Races of two directories, each holding a file, renamed onto one new
    /// name, one through each mount, and how many both won: how a claim is
    /// published where there are no hard links.
    pub dir_rename_races: u32,
    pub both_dir_renamed: u32,
    /// Races that renamed one file to one new name through both mounts, and
    /// how many of them left no file at all (a rename onto an existing name
    /// done as a delete and a rename: smbnetfs).
    pub rename_races: u32,
    pub renames_lost: u32,
    /// A file created through DIR, until DIR2 sees it.
    pub create_seen: Lag,
    /// New bytes at a name written through DIR, until DIR2 reads them.
    pub data_seen: Lag,
    /// Rounds of `data_seen` in which DIR2 read the *old* bytes after the
    /// file was replaced: a ghost, which a lock with a lifetime must outlive
    /// (see `min_lifetime_s`).
    pub ghosts: u32,
    /// "Stale file handle" answers through DIR2 in those rounds (uuidlock
    /// looks the name up again, for up to 1.5 s).
    pub stale_handles: u32,
    /// Deleting through DIR2 a file held open through DIR.
    pub delete_open: Probe,
    /// The date DIR2 gives a new file, minus this machine's clock, seconds:
    /// unlike DIR's, where each client dates files by its own clock.
    pub clock_offset_s: f64,
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
    /// The share's own pace: an exclusive create and a removal of a new
    /// file through DIR, per second (the median of the rounds), to set
    /// uuidlock's acquisitions per second beside.
    pub creates_per_second: f64,
    pub across: Option<Across>,
    pub verdict: Verdict,
    /// Locks with a lifetime (`--stale-after`, `uuidlock run`) work here.
    pub lifetimes: Probe,
    /// The shortest lifetime that is safe here, seconds: three times the
    /// longest a client read a replaced file's old bytes (`None`: no such
    /// ghost seen, or DIR2 not given).
    pub min_lifetime_s: Option<f64>,
    /// The clock skew to declare (`--max-clock-skew`), seconds, where DIR
    /// and DIR2 date new files by clocks more than a second apart.
    pub max_clock_skew_s: Option<f64>,
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
        return exit::USAGE;
    }
    match examine(&config) {
        Ok(report) => {
            if config.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
            } else {
                print!("{}", render(&report));
            }
            match report.verdict.kind {
                VerdictKind::Unsafe => exit::FOUND,
                _ => exit::OK,
            }
        }
        Err(e) if e.is::<UsageError>() => {
            eprintln!("uuidlock doctor: {e:#}");
            exit::USAGE
        }
        Err(e) => {
            eprintln!("uuidlock doctor: {e:#}");
            exit::IO
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
        return Err(UsageError(format!(
            "{} is not a directory; give the directory your locks will live in",
            dir.display()
        ))
        .into());
    }
    if let Some(dir2) = &config.dir2 {
        if !dir2.is_dir() {
            return Err(UsageError(format!(
                "{} is not a directory; give another mount of DIR's share",
                dir2.display()
            ))
            .into());
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
///
/// Made with mode 0700 and opened once, without following a link: every
/// probe is then a call relative to that descriptor that resolves beneath
/// it ([`At`]), so a neighbour who renames it away and puts a link in its
/// place (DIR may be anyone's to write) redirects nothing. The doctor
/// writes nowhere else.
struct ProbeDir {
    /// DIR, opened once.
    parent: At,
    here: At,
    name: String,
}

impl ProbeDir {
    fn make(dir: &Path) -> Result<ProbeDir> {
        let parent = At::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let name = format!(".uuidlock-doctor-{}", uuid_like());
        let mut options = cap_primitives::fs::DirOptions::new();
        cap_primitives::fs::DirBuilderExt::mode(&mut options, 0o700);
        cap_primitives::fs::create_dir(&parent.dir, Path::new(&name), &options).with_context(|| {
            format!("cannot make a probe directory in {}; the doctor needs to write there", dir.display())
        })?;
        let here = parent.enter(&name).with_context(|| format!("cannot open the probe directory {name} just made"))?;
        Ok(ProbeDir { parent, here, name })
    }

    fn remove(&self) {
        // A share that refuses to delete a file still open elsewhere may need
        // a moment after the probes closed theirs.
        for _ in 0..50 {
            if self.here.empty().is_ok() && self.parent.remove_dir_if_same(&self.name, &self.here).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("uuidlock doctor: could not remove {}; delete it by hand", self.parent.path(&self.name).display());
    }

    fn examine(&self, config: &Config) -> Result<Report> {
        let exclusive_create = self.exclusive_create()?;
        let hard_links = self.hard_links()?;
        let rename_over = self.rename_over()?;
        let delete_open = self.delete_open(&self.here)?;
        let (clock_offset_s, subsecond_dates) = clock(&self.here)?;
        let creates_per_second = self.pace(config.rounds)?;
        let across = match &config.dir2 {
            Some(dir2) => Some(self.across(dir2, config)?),
            None => None,
        };
        let min_lifetime_s = across.as_ref().and_then(min_lifetime);
        let max_clock_skew_s = across.as_ref().and_then(|across| clock_skew(clock_offset_s, across));
        let lifetimes = match (hard_links.works, rename_over.works) {
            (false, true) => self.directory_claims(across.as_ref())?,
            (true, true) => {
                let mut needs = Vec::new();
                if let Some(least) = min_lifetime_s {
                    needs.push(format!("--stale-after {least} or more"));
                }
                if let Some(skew) = max_clock_skew_s {
                    needs.push(format!("--max-clock-skew {skew}"));
                }
                Probe::yes(if needs.is_empty() {
                    "yes".to_owned()
                } else {
                    format!("yes, with {}", needs.join(" and "))
                })
            }
            (false, false) => Probe::no(format!(
                "hard links fail ({}), and renaming over a file fails ({}); locks without --stale-after work",
                hard_links.detail, rename_over.detail
            )),
            (true, false) => Probe::no(format!(
                "renaming over a file fails ({}), so a heartbeat cannot be renewed",
                rename_over.detail
            )),
        };
        let mut notes = Vec::new();
        if exclusive_create.works && exclusive_create.detail.contains("EACCES") {
            notes.push(
                "a create of an existing name fails with \"permission denied\"; uuidlock reads it as a busy lock"
                    .into(),
            );
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
        if let (Some(across), Some(least)) = (&across, min_lifetime_s) {
            notes.push(format!(
                "a client reads a replaced file's old bytes for up to {:.0} ms (a ghost, in {} of {} rounds): locks \
                 with a lifetime need at least three times that, {least} s; a hand-off between clients waits as long",
                across.data_seen.max_ms, across.ghosts, across.data_seen.rounds
            ));
        }
        if let Some(stale) = across.as_ref().map(|across| across.stale_handles).filter(|&stale| stale > 0) {
            notes.push(format!(
                "DIR2 was answered \"stale file handle\" {stale} times for files DIR replaced; uuidlock looks the name \
                 up again, for up to {} s",
                uuidlock::stale::BOUND.as_secs_f64()
            ));
        }
        if let (Some(across), Some(skew)) = (&across, max_clock_skew_s) {
            notes.push(format!(
                "files made through DIR2 are dated {:+.1} s from this machine's clock, and through DIR {clock_offset_s:+.1} s: \
                 each client dates files by its own clock; judge dead locks with --max-clock-skew {skew} (or set the \
                 clients' clocks right)",
                across.clock_offset_s
            ));
        }
        if config.dir2.is_none() {
            notes.push(
                "clients were not compared; give DIR2, another mount of the share, to check across machines".into(),
            );
        }
        notes.extend(who_can_write(&config.dir));
        let verdict = judge(&exclusive_create, across.as_ref(), config.max_lag);
        Ok(Report {
            dir: config.dir.clone(),
            exclusive_create,
            hard_links,
            rename_over,
            delete_open,
            clock_offset_s,
            subsecond_dates,
            creates_per_second,
            across,
            verdict,
            lifetimes,
            min_lifetime_s,
            max_clock_skew_s,
            notes,
        })
    }

    /// A second exclusive create of one name must fail as "exists".
    fn exclusive_create(&self) -> Result<Probe> {
        let here = &self.here;
        here.create_new("excl").with_context(|| format!("cannot create {}", here.path("excl").display()))?;
        Ok(match here.create_new("excl") {
            Ok(()) => Probe::no("a second exclusive create of one name succeeded"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Probe::yes("yes"),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Probe::yes("yes, but \"exists\" comes as EACCES"),
            Err(e) => Probe::no(format!("a second create failed with {e}, not \"exists\"")),
        })
    }

    fn hard_links(&self) -> Result<Probe> {
        let here = &self.here;
        here.write("link-source", b"linked")
            .with_context(|| format!("cannot write {}", here.path("link-source").display()))?;
        Ok(match here.link("link-source", "link-target") {
            Err(e) => Probe::no(e.to_string()),
            Ok(()) => match (here.link("link-source", "link-target"), here.read("link-target")) {
                (Ok(()), _) => Probe::no("a link over an existing name succeeded"),
                (Err(_), Ok(bytes)) if bytes == b"linked" => Probe::yes("yes"),
                (Err(_), read) => Probe::no(format!("the link does not read back its source's bytes ({read:?})")),
            },
        })
    }

    fn rename_over(&self) -> Result<Probe> {
        let here = &self.here;
        here.write("rename-from", b"new")
            .with_context(|| format!("cannot write {}", here.path("rename-from").display()))?;
        here.write("rename-to", b"old")
            .with_context(|| format!("cannot write {}", here.path("rename-to").display()))?;
        Ok(match here.rename("rename-from", "rename-to") {
            Err(e) => Probe::no(e.to_string()),
            Ok(()) => match here.read("rename-to") {
                Ok(bytes) if bytes == b"new" => Probe::yes("yes"),
                read => Probe::no(format!("the renamed file reads {read:?}")),
            },
        })
    }

    /// Where there are no hard links: whether claims can be directories (a
    /// directory renamed onto a full one fails, and no two clients both won
    /// such a rename), so that locks may have a lifetime.
    fn directory_claims(&self, across: Option<&Across>) -> Result<Probe> {
        let here = &self.here;
        for name in ["claim-a", "claim-b"] {
            here.mkdir(name).with_context(|| format!("cannot create {}", here.path(name).display()))?;
            here.write(&format!("{name}/marker"), name.as_bytes())
                .with_context(|| format!("cannot write in {}", here.path(name).display()))?;
        }
        let onto_full = here.rename("claim-b", "claim-a");
        let probe = match (onto_full, across) {
            (Ok(()), _) => Probe::no(
                "hard links fail, and a directory renamed onto a full one replaces it, so claims cannot be directories \
                 either; locks without --stale-after work",
            ),
            (Err(_), Some(across)) if across.both_dir_renamed > 0 => Probe::no(format!(
                "hard links fail, and both clients won {} of {} races renaming a directory onto one name, so claims \
                 cannot be directories; locks without --stale-after work",
                across.both_dir_renamed, across.dir_rename_races
            )),
            (Err(_), _) => Probe::yes("yes (no hard links: claims are directories)"),
        };
        for name in ["claim-a", "claim-b"] {
            let _ = here.remove(&format!("{name}/marker"));
            let _ = here.remove_dir(name);
        }
        Ok(probe)
    }

    /// Deletes through `through` (a view of the probe directory) a file held
    /// open through DIR.
    fn delete_open(&self, through: &At) -> Result<Probe> {
        let here = &self.here;
        here.write("open", b"open").with_context(|| format!("cannot write {}", here.path("open").display()))?;
        wait_until(Duration::from_secs(5), || through.exists("open"));
        let held = here.open_read("open").with_context(|| format!("cannot open {}", here.path("open").display()))?;
        let deleted = through.remove("open");
        drop(held);
        Ok(match deleted {
            Ok(()) => Probe::yes("yes"),
            Err(e) => {
                let _ = here.remove("open");
                Probe::no(e.to_string())
            }
        })
    }

    /// Creates (exclusively) and removes a new file `rounds` times; the
    /// median pace, per second.
    fn pace(&self, rounds: u32) -> Result<f64> {
        let mut took = Vec::new();
        for round in 0..rounds.max(5) {
            let name = format!("pace-{round}");
            let start = Instant::now();
            self.here.create_new(&name)?;
            self.here.remove_retrying(&name)?;
            took.push(start.elapsed());
        }
        took.sort();
        Ok(1.0 / percentile(&took, 0.5).as_secs_f64().max(1e-9))
    }

    /// What DIR2 shows of what is done through DIR.
    fn across(&self, dir2: &Path, config: &Config) -> Result<Across> {
        let max_lag = Duration::from_secs_f64(config.max_lag);
        let mut unseen = Across {
            dir2: dir2.to_owned(),
            races: 0,
            both_created: 0,
            mkdir_races: 0,
            both_mkdired: 0,
            dir_rename_races: 0,
            both_dir_renamed: 0,
            rename_races: 0,
            renames_lost: 0,
            create_seen: Lag { median_ms: 0.0, max_ms: 0.0, rounds: 1, unseen: 1 },
            data_seen: Lag { median_ms: 0.0, max_ms: 0.0, rounds: 0, unseen: 0 },
            ghosts: 0,
            stale_handles: 0,
            delete_open: Probe::no("not probed: DIR2 does not show DIR's files"),
            clock_offset_s: 0.0,
        };
        let other = At::open(dir2).with_context(|| format!("cannot open {}", dir2.display()))?;
        if wait_until(max_lag, || other.is_dir(&self.name)).is_none() {
            return Ok(unseen);
        }
        // Opened once too: the same directory through the other mount.
        let view =
            other.enter(&self.name).with_context(|| format!("cannot open {}", other.path(&self.name).display()))?;
        let create_seen = self.create_seen(&view, config.rounds, max_lag)?;
        if create_seen.unseen > 0 {
            unseen.create_seen = create_seen;
            return Ok(unseen);
        }
        let (data_seen, ghosts, stale_handles) = self.data_seen(&view, config.rounds, max_lag)?;
        let (races, both_created) = self.races(&view, config.rounds, "race", |at, name| at.create_new(name))?;
        let mkdirs = self.races(&view, config.rounds, "mkdir", |at, name| at.mkdir(name));
        // Removed before anything can fail (`empty` takes what a slow
        // client still shows).
        for round in 0..config.rounds {
            let _ = self.here.remove_dir(&format!("mkdir-{round}"));
        }
        let (mkdir_races, both_mkdired) = mkdirs?;
        let dir_renames = self.races(&view, config.rounds, "dir-rename", |at, name| at.publish_dir(name));
        for round in 0..config.rounds {
            let name = format!("dir-rename-{round}");
            let _ = self.here.remove(&format!("{name}/marker"));
            let _ = self.here.remove_dir(&name);
        }
        let (dir_rename_races, both_dir_renamed) = dir_renames?;
        let (rename_races, renames_lost) = self.rename_races(&view, config.rounds)?;
        let delete_open = self.delete_open(&view)?;
        let clock_offset_s = clock(&view)?.0;
        Ok(Across {
            dir2: dir2.to_owned(),
            races,
            both_created,
            mkdir_races,
            both_mkdired,
            dir_rename_races,
            both_dir_renamed,
            rename_races,
            renames_lost,
            create_seen,
            data_seen,
            ghosts,
            stale_handles,
            delete_open,
            clock_offset_s,
        })
    }

    /// Creates a name through DIR just after DIR2 looked it up and found
    /// nothing, and times until DIR2 sees it. Stops at the first round that
    /// does not see it within `max_lag`.
    fn create_seen(&self, view: &At, rounds: u32, max_lag: Duration) -> Result<Lag> {
        let mut lags = Vec::new();
        for round in 0..rounds {
            let name = format!("seen-{round}");
            let _ = view.exists(&name); // the negative entry a waiter's client holds
            self.here.write(&name, b"x")?;
            match wait_until(max_lag, || view.exists(&name)) {
                Some(lag) => lags.push(lag),
                None => return Ok(lag(lags, 1)),
            }
        }
        Ok(lag(lags, 0))
    }

    /// Puts new bytes at one name through DIR (deleted and created anew, as
    /// a released and retaken lock is) after DIR2 read the old ones, and
    /// times until DIR2 reads the new ones; with how many rounds DIR2 read
    /// the old bytes after the replacement (a ghost), and how many stale
    /// handles it was answered.
    fn data_seen(&self, view: &At, rounds: u32, max_lag: Duration) -> Result<(Lag, u32, u32)> {
        let (mut lags, mut ghosts, mut stale) = (Vec::new(), 0, 0);
        let mut old = Vec::new();
        for round in 0..rounds {
            let bytes = format!("round {round} {}", uuid_like());
            if let Ok(read) = view.read("data") {
                old = read; // what a contender's client last read
            }
            let _ = self.here.remove_retrying("data");
            self.here.write("data", bytes.as_bytes())?;
            let mut ghost = false;
            let seen = wait_until(max_lag, || match view.read("data") {
                Ok(read) if read == bytes.as_bytes() => true,
                Ok(read) => {
                    ghost |= !old.is_empty() && read == old;
                    false
                }
                Err(e) => {
                    stale += u32::from(uuidlock::stale::is_stale(&e));
                    false
                }
            });
            ghosts += u32::from(ghost);
            match seen {
                Some(lag) => lags.push(lag),
                None => return Ok((lag(lags, 1), ghosts, stale)),
            }
        }
        Ok((lag(lags, 0), ghosts, stale))
    }

    /// Races `step` on one name (`<kind>-<round>`) through DIR and DIR2 at
    /// one instant; returns the races and how many both steps won.
    fn races(&self, view: &At, rounds: u32, kind: &str, step: fn(&At, &str) -> io::Result<()>) -> Result<(u32, u32)> {
        let mut both = 0;
        for round in 0..rounds {
            let name = format!("{kind}-{round}");
            let _ = view.exists(&name);
            let start = Arc::new(Barrier::new(2));
            let theirs = std::thread::scope(|scope| {
                let other = scope.spawn(|| {
                    start.wait();
                    step(view, &name)
                });
                start.wait();
                let mine = step(&self.here, &name);
                (mine, other.join().expect("the racing thread does not panic"))
            });
            if theirs.0.is_ok() && theirs.1.is_ok() {
                both += 1;
            }
        }
        Ok((rounds, both))
    }

    /// Renames `rename-<round>` to a new name through both mounts at once
    /// (as two fencing-number takers do); returns the races and how many
    /// left neither name behind.
    fn rename_races(&self, view: &At, rounds: u32) -> Result<(u32, u32)> {
        for round in 0..rounds {
            self.here.write(&format!("rename-{round}"), b"x")?;
        }
        for round in 0..rounds {
            wait_until(Duration::from_secs(5), || view.exists(&format!("rename-{round}")));
        }
        self.races(view, rounds, "rename", |at, name| at.rename(name, &format!("{name}.renamed")))?;
        let lost = (0..rounds)
            .filter(|round| {
                let name = format!("rename-{round}");
                !self.here.exists(&name) && !self.here.exists(&format!("{name}.renamed"))
            })
            .count();
        Ok((rounds, lost as u32))
    }
}

/// A directory opened once; every step in it is a call relative to its
/// descriptor, resolved beneath it (cap-primitives, as wasmtime-wasi's
/// sandbox resolves), that never follows a link at the name it acts on and
/// never blocks on a FIFO. Reads are bounded.
struct At {
    dir: File,
    /// For messages.
    shown: PathBuf,
}

/// The most bytes a probe reads from a file.
const MAX_READ: u64 = 4096;

impl At {
    /// Opens `dir` (as the user named it: links in it are theirs).
    fn open(dir: &Path) -> io::Result<At> {
        let dir_file = cap_primitives::fs::open_ambient_dir(dir, cap_primitives::ambient_authority())?;
        Ok(At { dir: dir_file, shown: dir.to_owned() })
    }

    /// Opens the directory `name` inside, refusing a link.
    fn enter(&self, name: &str) -> io::Result<At> {
        let dir = cap_primitives::fs::open_dir_nofollow(&self.dir, Path::new(name))?;
        Ok(At { dir, shown: self.path(name) })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.shown.join(name)
    }

    fn options() -> cap_primitives::fs::OpenOptions {
        let mut options = cap_primitives::fs::OpenOptions::new();
        options._cap_fs_ext_follow(cap_primitives::fs::FollowSymlinks::No)._cap_fs_ext_nonblock(true);
        options
    }

    fn open_with(&self, name: &str, options: &cap_primitives::fs::OpenOptions) -> io::Result<File> {
        cap_primitives::fs::open(&self.dir, Path::new(name), options)
    }

    /// Publishes a directory holding a file at `name`, as a claim is
    /// published where there are no hard links: made under a name of this
    /// thread's, then renamed; fails (leaving nothing) if `name` is taken.
    fn publish_dir(&self, name: &str) -> io::Result<()> {
        let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_alphanumeric(), "");
        let staged = format!("{name}.{thread}");
        self.mkdir(&staged)?;
        let published = self.write(&format!("{staged}/marker"), b"x").and_then(|()| self.rename(&staged, name));
        if published.is_err() {
            let _ = self.remove(&format!("{staged}/marker"));
            let _ = self.remove_dir(&staged);
        }
        published
    }

    fn mkdir(&self, name: &str) -> io::Result<()> {
        cap_primitives::fs::create_dir(&self.dir, Path::new(name), &cap_primitives::fs::DirOptions::new())
    }

    fn remove_dir(&self, name: &str) -> io::Result<()> {
        cap_primitives::fs::remove_dir(&self.dir, Path::new(name))
    }

    fn create_new(&self, name: &str) -> io::Result<()> {
        let mut options = At::options();
        options.write(true).create_new(true);
        self.open_with(name, &options)?.write_all(b"x")
    }

    /// Writes `bytes` to `name`, created or truncated.
    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut options = At::options();
        options.write(true).create(true).truncate(true);
        let mut file = self.open_with(name, &options)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", self.path(name).display())));
        }
        file.write_all(bytes)
    }

    fn open_read(&self, name: &str) -> io::Result<File> {
        let mut options = At::options();
        options.read(true);
        let file = self.open_with(name, &options)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", self.path(name).display())));
        }
        Ok(file)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        self.open_read(name)?.take(MAX_READ).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn metadata(&self, name: &str) -> io::Result<cap_primitives::fs::Metadata> {
        cap_primitives::fs::stat(&self.dir, Path::new(name), cap_primitives::fs::FollowSymlinks::No)
    }

    fn exists(&self, name: &str) -> bool {
        self.metadata(name).is_ok()
    }

    fn is_dir(&self, name: &str) -> bool {
        self.metadata(name).is_ok_and(|meta| meta.is_dir())
    }

    fn modified(&self, name: &str) -> io::Result<SystemTime> {
        self.metadata(name)?.modified().map(|time| time.into_std())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        cap_primitives::fs::remove_file(&self.dir, Path::new(name))
    }

    /// As [`At::remove`], retrying a file another client has open (SMB).
    fn remove_retrying(&self, name: &str) -> io::Result<()> {
        let mut tries = 0;
        loop {
            match self.remove(name) {
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }

    fn link(&self, from: &str, to: &str) -> io::Result<()> {
        cap_primitives::fs::hard_link(&self.dir, Path::new(from), &self.dir, Path::new(to))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        cap_primitives::fs::rename(&self.dir, Path::new(from), &self.dir, Path::new(to))
    }

    /// Removes every file and (empty) directory inside: the probes, nobody
    /// else can write here.
    fn empty(&self) -> io::Result<()> {
        for entry in cap_primitives::fs::read_base_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() {
                self.remove_dir(&name)?;
            } else {
                self.remove(&name)?;
            }
        }
        Ok(())
    }

    /// Removes the directory `name` if it is still the one `inside` is
    /// open on (not a link or another directory put in its place).
    fn remove_dir_if_same(&self, name: &str, inside: &At) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let there = self.metadata(name)?;
        let ours = inside.dir.metadata()?;
        if !there.is_dir() || cap_primitives::fs::MetadataExt::ino(&there) != ours.ino() {
            return Err(io::Error::other("the probe directory was replaced"));
        }
        cap_primitives::fs::remove_dir(&self.dir, Path::new(name))
    }
}

/// The date a share gives files made through `at`, against this machine's
/// clock (the median of five), and whether dates have fractions of a
/// second. Through a second mount, another client: a share that dates files
/// by each client's clock shows that client's.
fn clock(at: &At) -> Result<(f64, bool)> {
    let mut offsets = Vec::new();
    let mut subsecond = false;
    for i in 0..5 {
        let name = format!("clock-{}-{i}", uuid_like());
        let before = SystemTime::now();
        at.write(&name, b"")?;
        let after = SystemTime::now();
        let dated = at.modified(&name)?;
        let midpoint = before + after.duration_since(before).unwrap_or_default() / 2;
        offsets.push(signed_seconds(dated, midpoint));
        subsecond |= dated.duration_since(SystemTime::UNIX_EPOCH).is_ok_and(|d| d.subsec_nanos() != 0);
        let _ = at.remove(&name);
        std::thread::sleep(Duration::from_millis(3));
    }
    offsets.sort_by(f64::total_cmp);
    Ok((offsets[offsets.len() / 2], subsecond))
}

/// What the directory's mode means for locks in it: who else can delete
/// them, or roll their fences back (README, "Shared directories").
fn who_can_write(dir: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir).ok()?.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    let others = if mode & 0o002 != 0 {
        "anyone on this machine"
    } else if mode & 0o020 != 0 {
        "its group"
    } else {
        return None;
    };
    Some(if sticky {
        format!(
            "{others} can write this directory (it has the sticky bit): they can hold a lock for ever or roll its \
             fences back, and only a lock's owner, the directory's owner or root can break another user's dead \
             lock; for locks that matter, use a directory only the cooperating accounts can write"
        )
    } else {
        format!(
            "{others} can write this directory, without the sticky bit: they can delete or rename anyone's lock \
             file and roll fences back; for locks that matter, use a directory only the cooperating accounts can \
             write"
        )
    })
}

/// The shortest safe lifetime: three times the longest a replaced file's
/// old bytes were read through DIR2 (point 10 of the exclusion argument,
/// `src/protocol.rs`), rounded up to a tenth of a second.
fn min_lifetime(across: &Across) -> Option<f64> {
    (across.ghosts > 0).then(|| ((3.0 * across.data_seen.max_ms / 100.0).ceil() / 10.0).max(1.0))
}

/// The clock skew to declare where DIR and DIR2 date files more than a
/// second apart: twice the difference, rounded up to a second.
fn clock_skew(report_offset: f64, across: &Across) -> Option<f64> {
    let apart = (report_offset - across.clock_offset_s).abs();
    (apart > 1.0).then(|| (2.0 * apart).ceil())
}

/// The verdict from the probes (see the module docs).
fn judge(exclusive_create: &Probe, across: Option<&Across>, max_lag: f64) -> Verdict {
    let unsafe_because =
        |reason: String| Verdict { kind: VerdictKind::Unsafe, verification_delay_s: None, reasons: vec![reason] };
    if !exclusive_create.works {
        return unsafe_because(format!("exclusive create does not exclude: {}", exclusive_create.detail));
    }
    let Some(across) = across else {
        return Verdict {
            kind: VerdictKind::Safe,
            verification_delay_s: None,
            reasons: vec!["exclusive create excludes".into()],
        };
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
            reasons: [format!(
                "exclusive create is atomic across the two clients ({} races, each won once)",
                across.races
            )]
            .into_iter()
            .chain(mkdir_atomic(across))
            .chain(dir_renames_exclusive(across))
            .collect(),
        };
    }
    let largest = across.create_seen.max_ms.max(across.data_seen.max_ms) / 1000.0;
    let delay = ((2.0 * largest * 100.0).ceil() / 100.0).max(DEFAULT_DELAY.as_secs_f64());
    Verdict {
        kind: VerdictKind::SafeWithDelay,
        verification_delay_s: Some(delay),
        reasons: [
            format!(
                "exclusive create is not atomic across clients (both creates won {} of {} races), so only the verification delay protects",
                across.both_created, across.races
            ),
            format!(
                "it must exceed the time one client takes to see another's file (at most {:.1} ms here); use twice that, at least {} s",
                largest * 1000.0,
                DEFAULT_DELAY.as_secs_f64()
            ),
        ]
        .into_iter()
        .chain(mkdir_atomic(across))
        .chain(dir_renames_exclusive(across))
        .collect(),
    }
}

/// Whether `mkdir` excluded across the clients: where exclusive create does
/// not, a directory is what a claim could stand on instead.
fn mkdir_atomic(across: &Across) -> Option<String> {
    let (races, both) = (across.mkdir_races, across.both_mkdired);
    (races > 0).then(|| match both {
        0 => format!("mkdir is atomic across the two clients ({races} races, each won once)"),
        _ => format!("mkdir is not atomic across clients (both won {both} of {races} races)"),
    })
}

/// Whether two directories renamed onto one name excluded across the
/// clients: how claims are published where there are no hard links.
fn dir_renames_exclusive(across: &Across) -> Option<String> {
    let (races, both) = (across.dir_rename_races, across.both_dir_renamed);
    (races > 0).then(|| match both {
        0 => format!("renaming a directory onto one name is exclusive across the two clients ({races} races)"),
        _ => format!(
            "renaming a directory onto one name is not exclusive across clients (both won {both} of {races} races)"
        ),
    })
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
    let _ =
        writeln!(out, "  share clock          {:+.3} s from this machine's; dates in {dates}", report.clock_offset_s);
    let _ = writeln!(out, "  create+remove        {:.0} per second", report.creates_per_second);
    if let Some(across) = &report.across {
        let _ = writeln!(out, "across clients, through {}:", across.dir2.display());
        let _ = writeln!(out, "  both creates won     {} of {} races", across.both_created, across.races);
        let _ = writeln!(out, "  both mkdirs won      {} of {} races", across.both_mkdired, across.mkdir_races);
        let _ =
            writeln!(out, "  both dir renames won {} of {} races", across.both_dir_renamed, across.dir_rename_races);
        let _ = writeln!(out, "  renames lost a file  {} of {} races", across.renames_lost, across.rename_races);
        let _ = writeln!(out, "  a create seen after  {}", render_lag(&across.create_seen));
        let _ = writeln!(out, "  new bytes read after {}", render_lag(&across.data_seen));
        let _ = writeln!(
            out,
            "  old bytes read after a replacement  {} of {} rounds",
            across.ghosts, across.data_seen.rounds
        );
        let _ = writeln!(out, "  stale file handles   {}", across.stale_handles);
        let _ = writeln!(out, "  its clock            {:+.3} s from this machine's", across.clock_offset_s);
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
            mkdir_races: 20,
            both_mkdired: 0,
            dir_rename_races: 20,
            both_dir_renamed: 0,
            rename_races: 20,
            renames_lost: 0,
            create_seen: Lag { median_ms: 1.0, max_ms: create_max_ms, rounds: 20, unseen },
            data_seen: Lag { median_ms: 1.0, max_ms: 2.0, rounds: 20, unseen: 0 },
            ghosts: 0,
            stale_handles: 0,
            delete_open: Probe::yes("yes"),
            clock_offset_s: 0.0,
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

    // A client that reads a replaced file's old bytes for a second needs
    // lifetimes of three; clients whose dates disagree, a skew to declare.
    #[test]
    fn ghosts_ask_for_longer_lifetimes_and_clocks_for_a_skew() {
        let mut seen = across(0, 1.0, 0);
        assert_eq!(min_lifetime(&seen), None);
        seen.ghosts = 5;
        seen.data_seen.max_ms = 1003.0;
        assert_eq!(min_lifetime(&seen), Some(3.1));
        assert_eq!(clock_skew(0.01, &seen), None);
        seen.clock_offset_s = 3600.2;
        assert_eq!(clock_skew(0.01, &seen), Some(7201.0));
    }

    // The verdict says what mkdir did across the clients, either way.
    #[test]
    fn the_verdict_says_whether_mkdir_excludes() {
        let reasons = |raced: &Across| judge(&Probe::yes("yes"), Some(raced), 5.0).reasons.join("\n");
        let mut raced = across(3, 1.0, 0);
        assert!(reasons(&raced).contains("mkdir is atomic across the two clients (20 races"), "{}", reasons(&raced));
        raced.both_mkdired = 7;
        assert!(
            reasons(&raced).contains("mkdir is not atomic across clients (both won 7 of 20"),
            "{}",
            reasons(&raced)
        );
        raced.both_created = 0;
        assert!(reasons(&raced).contains("mkdir is not atomic"), "{}", reasons(&raced));
        raced.mkdir_races = 0; // not raced: nothing said
        assert!(!reasons(&raced).contains("mkdir"), "{}", reasons(&raced));
    }

    #[test]
    fn unseen_creates_and_failed_exclusion_are_unsafe() {
        assert_eq!(judge(&Probe::yes("yes"), Some(&across(0, 1.0, 1)), 5.0).kind, VerdictKind::Unsafe);
        assert_eq!(judge(&Probe::no("x"), None, 5.0).kind, VerdictKind::Unsafe);
        assert_eq!(judge(&Probe::yes("yes"), Some(&across(0, 1.0, 0)), 5.0).kind, VerdictKind::Safe);
    }
}
