//! What the workers of a contention run reported, judged (overlaps, fences
//! in order, evictions) and rendered: text, JSON, a plot.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Config;
use crate::plot;
use crate::stats::percentile;

/// One critical section, as a worker reported it.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub worker: usize,
    pub enter_ns: u128,
    pub exit_ns: u128,
    pub wait: Duration,
    /// The acquisition's fencing number (0: the worker has none).
    pub fence: u64,
    /// The worker learnt at release that its lock had been broken.
    pub evicted: bool,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub config: Config,
    /// The directories the workers used: one, or mounts of one share.
    pub dirs: Vec<PathBuf>,
    pub elapsed: Duration,
    /// Sorted by entry time.
    pub sections: Vec<Section>,
    pub counter: u64,
    pub overlaps: usize,
    /// When workers were killed (wall clock, ns since the epoch).
    pub kills: Vec<u128>,
    /// The CPU time (user + system) the workers used from their start
    /// signal on, as the OS counts it.
    pub cpu: Duration,
}

impl Report {
    pub fn expected(&self) -> u64 {
        (self.config.processes * self.config.iterations) as u64
    }

    /// Overlapping sections, fence inversions, and (in one directory) lost
    /// counter updates; see [`Report::counter_off`].
    pub fn violations(&self) -> usize {
        let counted = if self.dirs.len() == 1 { self.counter_off() } else { 0 };
        self.overlaps + counted as usize + self.fence_inversions()
    }

    /// How far the counter is from the sections reported. A killed holder
    /// may have written its update without living to report it, so the
    /// counter may exceed them by up to one per kill. Across several mounts a
    /// caching client may also lose updates with no overlap (module docs).
    pub fn counter_off(&self) -> u64 {
        let (low, high) = (self.expected(), self.expected() + self.kills.len() as u64);
        if self.counter < low {
            low - self.counter
        } else {
            self.counter.saturating_sub(high)
        }
    }

    /// Sections whose holder learnt at release that its lock had been broken
    /// as stale while it held it.
    pub fn evictions(&self) -> usize {
        self.sections.iter().filter(|s| s.evicted).count()
    }

    /// Sections whose fencing number was not larger than every earlier one's.
    pub fn fence_inversions(&self) -> usize {
        count_fence_inversions(&self.sections)
    }

    /// The longest time from a kill to the next acquisition by anyone: how
    /// long a dead holder's lock kept the others out.
    pub fn longest_gap_after_a_kill(&self) -> Duration {
        self.kills
            .iter()
            .filter_map(|&killed| self.sections.iter().find(|s| s.enter_ns > killed).map(|s| s.enter_ns - killed))
            .max()
            .map_or(Duration::ZERO, |ns| Duration::from_nanos(ns as u64))
    }

    /// Waits (from asking for the lock to holding it), sorted.
    pub fn waits(&self) -> Vec<Duration> {
        let mut waits: Vec<Duration> = self.sections.iter().map(|s| s.wait).collect();
        waits.sort();
        waits
    }

    /// The fraction of consecutive acquisitions made by different processes.
    pub fn handoff_ratio(&self) -> f64 {
        let changes = self.sections.windows(2).filter(|pair| pair[0].worker != pair[1].worker).count();
        changes as f64 / self.sections.len().saturating_sub(1).max(1) as f64
    }

    pub fn per_second(&self) -> f64 {
        self.sections.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The workers' CPU time per acquisition.
    pub fn cpu_per_acquisition(&self) -> Duration {
        self.cpu / (self.sections.len().max(1) as u32)
    }

    /// The workers' CPU time over the run's, in cores kept busy.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(super) fn to_text(&self) -> String {
        let c = &self.config;
        let waits = self.waits();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "uuidlock contend: {} processes x {} acquisitions, hold {:?}, runner {}, verification delay {:?}, retry interval {:?}",
            c.processes, c.iterations, c.hold, c.runner_name(), c.verification_delay, c.retry_interval
        );
        for dir in &self.dirs {
            let _ = writeln!(text, "  directory         {}", dir.display());
        }
        let _ = writeln!(
            text,
            "  acquisitions      {} in {:.2} s ({:.0}/s)",
            self.sections.len(),
            self.elapsed.as_secs_f64(),
            self.per_second()
        );
        let _ = writeln!(
            text,
            "  wait p50/p99/max  {} / {} / {}",
            ms(percentile(&waits, 0.50)),
            ms(percentile(&waits, 0.99)),
            ms(waits.last().copied().unwrap_or_default())
        );
        let _ = writeln!(text, "  hand-off ratio    {:.2}", self.handoff_ratio());
        let _ = writeln!(
            text,
            "  workers' cpu      {:.2} s ({} per acquisition, {:.2} cores)",
            self.cpu.as_secs_f64(),
            ms(self.cpu_per_acquisition()),
            self.cores()
        );
        if self.dirs.len() > 1 {
            let _ = writeln!(
                text,
                "  counter           {} (expected {}; across mounts only overlaps count: a caching client may lose updates)",
                self.counter,
                self.expected()
            );
        } else if self.kills.is_empty() {
            let _ = writeln!(text, "  counter           {} (expected {})", self.counter, self.expected());
        } else {
            let _ = writeln!(
                text,
                "  counter           {} (expected {} to {}: a killed holder may have written without reporting)",
                self.counter,
                self.expected(),
                self.expected() + self.kills.len() as u64
            );
            let _ = writeln!(
                text,
                "  kills             {} (longest gap from a kill to the next acquisition: {})",
                self.kills.len(),
                ms(self.longest_gap_after_a_kill())
            );
        }
        let _ = writeln!(text, "  overlaps          {}", self.overlaps);
        let fenced = self.sections.iter().filter(|s| s.fence > 0).count();
        if fenced > 0 {
            let _ = writeln!(text, "  fences            {} of {fenced} out of order", self.fence_inversions());
        }
        let _ = writeln!(text, "  evictions         {}", self.evictions());
        let verdict = match (self.violations(), self.evictions()) {
            (0, 0) => "OK: mutual exclusion held",
            (0, _) => "EVICTIONS: live holders lost their locks (a lifetime too short for this load?)",
            _ => "VIOLATIONS: mutual exclusion broken",
        };
        let _ = writeln!(text, "  result            {verdict}");
        text
    }

    /// The report's figures, as `--json` prints them.
    pub fn summary(&self) -> Summary {
        let c = &self.config;
        let waits = self.waits();
        Summary {
            processes: c.processes,
            iterations: c.iterations,
            hold_s: c.hold.as_secs_f64(),
            runner: c.runner_name(),
            directories: self.dirs.len(),
            verification_delay_s: c.verification_delay.as_secs_f64(),
            retry_interval_s: c.retry_interval.as_secs_f64(),
            acquisitions: self.sections.len(),
            elapsed_s: self.elapsed.as_secs_f64(),
            per_second: self.per_second(),
            wait_p50_s: percentile(&waits, 0.50).as_secs_f64(),
            wait_p99_s: percentile(&waits, 0.99).as_secs_f64(),
            wait_max_s: waits.last().copied().unwrap_or_default().as_secs_f64(),
            handoff_ratio: self.handoff_ratio(),
            cpu_s: self.cpu.as_secs_f64(),
            cpu_per_acquisition_s: self.cpu_per_acquisition().as_secs_f64(),
            cores: self.cores(),
            counter: self.counter,
            expected: self.expected(),
            counter_off: self.counter_off(),
            overlaps: self.overlaps,
            fence_inversions: self.fence_inversions(),
            violations: self.violations(),
            evictions: self.evictions(),
            renew: c.renew,
            kills: self.kills.len(),
            longest_gap_after_kill_s: self.longest_gap_after_a_kill().as_secs_f64(),
        }
    }

    /// The wait-time distribution, as an SVG document.
    pub fn draw(&self) -> Result<String> {
        let c = &self.config;
        let title = format!(
            "uuidlock contend: wait before holding the lock ({} processes x {}, hold {:?})",
            c.processes, c.iterations, c.hold
        );
        plot::wait_histograms(&title, &[plot::Series { name: &c.runner_name(), waits: &self.waits() }])
    }
}

/// What `uuidlock contend --json` prints: one object, durations in seconds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub processes: usize,
    pub iterations: usize,
    pub hold_s: f64,
    pub runner: String,
    /// How many mounts of the lock's directory the workers were spread over.
    pub directories: usize,
    pub verification_delay_s: f64,
    pub retry_interval_s: f64,
    pub acquisitions: usize,
    pub elapsed_s: f64,
    pub per_second: f64,
    pub wait_p50_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    /// The fraction of consecutive acquisitions by different processes.
    pub handoff_ratio: f64,
    /// The workers' CPU time (user + system) from their start on, in all,
    /// per acquisition, and over the run's time (cores kept busy).
    pub cpu_s: f64,
    pub cpu_per_acquisition_s: f64,
    pub cores: f64,
    pub counter: u64,
    pub expected: u64,
    /// `counter` against the sections reported (a violation in one
    /// directory only; see the module docs).
    pub counter_off: u64,
    /// Critical sections that began before an earlier one had ended.
    pub overlaps: usize,
    /// Sections whose fencing number was not larger than every earlier one's.
    pub fence_inversions: usize,
    /// Overlaps, fence inversions, and in one directory lost (or extra)
    /// counter updates.
    pub violations: usize,
    /// Holders told at release that their lock had been broken under them.
    pub evictions: usize,
    /// Workers held self-renewing leases.
    pub renew: bool,
    pub kills: usize,
    pub longest_gap_after_kill_s: f64,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Counts sections (sorted by entry) whose fencing number is not larger than
/// every earlier one's, as a resource that refuses old fences would judge
/// them; sections without a fence (0) are not judged.
fn count_fence_inversions(sorted: &[Section]) -> usize {
    let mut highest = 0;
    let mut inversions = 0;
    for fence in sorted.iter().map(|s| s.fence).filter(|&fence| fence > 0) {
        if fence <= highest {
            inversions += 1;
        }
        highest = highest.max(fence);
    }
    inversions
}

/// Counts sections that start before an earlier one has ended.
pub(super) fn count_overlaps(sorted: &[Section]) -> usize {
    let mut latest_exit = 0;
    let mut overlaps = 0;
    for section in sorted {
        if section.enter_ns < latest_exit {
            overlaps += 1;
        }
        latest_exit = latest_exit.max(section.exit_ns);
    }
    overlaps
}

/// `[evicted] ENTER_NS EXIT_NS WAIT_NS [FENCE]` (other programs' workers
/// print no fence).
pub(super) fn parse_section(worker: usize, line: &str) -> Result<Section> {
    let (evicted, numbers) = match line.strip_prefix(EVICTED) {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let fields: Vec<u128> = numbers
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("worker {worker} printed {line:?}"))?;
    let (enter_ns, exit_ns, wait_ns, fence) = match fields[..] {
        [enter, exit, wait] => (enter, exit, wait, 0),
        [enter, exit, wait, fence] => (enter, exit, wait, fence as u64),
        _ => bail!("worker {worker} printed {line:?}"),
    };
    Ok(Section { worker, enter_ns, exit_ns, wait: Duration::from_nanos(wait_ns as u64), fence, evicted })
}

/// What a worker prints before a section whose lock was broken under it.
pub(super) const EVICTED: &str = "evicted ";

#[cfg(test)]
mod tests {
    use super::*;

    fn section(worker: usize, enter_ns: u128, exit_ns: u128) -> Section {
        Section { worker, enter_ns, exit_ns, wait: Duration::ZERO, fence: 0, evicted: false }
    }

    #[test]
    fn fences_must_rise_in_section_order() {
        let fenced = |fence, enter| Section { fence, ..section(0, enter, enter + 1) };
        assert_eq!(count_fence_inversions(&[fenced(1, 0), fenced(2, 10), fenced(5, 20)]), 0);
        assert_eq!(count_fence_inversions(&[fenced(1, 0), fenced(3, 10), fenced(2, 20), fenced(3, 30)]), 2);
        // Workers without fences (other programs) are not judged.
        assert_eq!(count_fence_inversions(&[fenced(0, 0), fenced(0, 10)]), 0);
    }

    #[test]
    fn worker_lines_parse_with_and_without_fence_and_eviction() {
        let plain = parse_section(3, "10 20 5").unwrap();
        assert_eq!((plain.worker, plain.enter_ns, plain.fence, plain.evicted), (3, 10, 0, false));
        let evicted = parse_section(1, "evicted 10 20 5 42").unwrap();
        assert_eq!((evicted.fence, evicted.evicted), (42, true));
        assert!(parse_section(0, "10 20").is_err() && parse_section(0, "evicted x").is_err());
    }

    #[test]
    fn overlaps_are_counted_even_behind_a_long_section() {
        let sorted = [section(0, 0, 100), section(1, 10, 20), section(2, 50, 60), section(0, 100, 110)];
        assert_eq!(count_overlaps(&sorted), 2);
        assert_eq!(count_overlaps(&[section(0, 0, 10), section(1, 10, 20)]), 0);
    }

    #[test]
    fn the_json_summary_round_trips() {
        let report = Report {
            config: Config::default(),
            dirs: vec![PathBuf::from("/tmp/x")],
            elapsed: Duration::from_secs(1),
            sections: vec![section(0, 0, 10), section(1, 20, 30)],
            counter: 2,
            overlaps: 0,
            kills: vec![],
            cpu: Duration::from_millis(500),
        };
        let json = serde_json::to_string(&report.summary()).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report.summary());
        assert_eq!((back.counter, back.expected, back.handoff_ratio), (2, 100, 1.0));
        assert_eq!((back.cpu_per_acquisition_s, back.cores), (0.25, 0.5));
    }
}
