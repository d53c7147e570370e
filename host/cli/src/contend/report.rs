//! What the workers of a contention run reported, judged (overlaps, fences
//! in order, evictions; readers beside writers, slots overfilled or held
//! twice) and rendered: text, JSON, a plot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
    /// The worker held the lock shared (a reader).
    pub reader: bool,
    /// A semaphore holder's slot.
    pub slot: Option<u32>,
    /// A reader saw the counter change while it held.
    pub changed: bool,
}

/// What the sections say when judged against each other, computed once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Sections that began beside a holder they must exclude: any unfinished
    /// earlier one, for a writer; an unfinished writer, for a reader; N
    /// unfinished ones, for a holder of a semaphore of N slots.
    pub overlaps: usize,
    /// Slot holders' sections that began while another held the same slot.
    pub slot_collisions: usize,
    /// Slot holders' sections with no slot, or one out of range.
    pub bad_slots: usize,
    /// Sections whose fencing number was not larger than it must be: than
    /// every earlier section's for a writer, every earlier writer's for a
    /// reader, every earlier section's in the same slot for a slot holder.
    pub fence_inversions: usize,
    /// The most sections held at once, and the most readers' sections.
    pub max_concurrent: usize,
    pub max_concurrent_readers: usize,
    /// Acquisitions per slot (with `--slots`).
    pub slot_acquisitions: Vec<usize>,
}

impl Checks {
    /// Judges `sorted` (by entry), taken in the modes `slots` says: a
    /// semaphore's, or exclusive and shared as each section says.
    pub fn judge(sorted: &[Section], slots: Option<u32>) -> Checks {
        let mut checks = Checks { slot_acquisitions: vec![0; slots.unwrap_or(0) as usize], ..Checks::default() };
        let (mut latest_exit, mut latest_writer_exit) = (0, 0);
        let mut slot_exit = vec![0; checks.slot_acquisitions.len()];
        // The exit times of the sections still held, soonest first.
        let (mut held, mut readers) = (BinaryHeap::new(), BinaryHeap::new());
        let (mut highest, mut highest_writer) = (0, 0);
        let mut slot_highest = vec![0; slot_exit.len()];
        for s in sorted {
            for heap in [&mut held, &mut readers] {
                while heap.peek().is_some_and(|&Reverse(exit)| exit <= s.enter_ns) {
                    heap.pop();
                }
            }
            let floor = match (slots, s.slot) {
                (Some(n), slot) => {
                    checks.overlaps += usize::from(held.len() >= n as usize);
                    match slot.filter(|&k| k < n).map(|k| k as usize) {
                        Some(k) => {
                            checks.slot_collisions += usize::from(s.enter_ns < slot_exit[k]);
                            slot_exit[k] = slot_exit[k].max(s.exit_ns);
                            checks.slot_acquisitions[k] += 1;
                            let floor = slot_highest[k];
                            slot_highest[k] = floor.max(s.fence);
                            floor
                        }
                        None => {
                            checks.bad_slots += 1;
                            u64::MAX
                        }
                    }
                }
                (None, _) if s.reader => {
                    checks.overlaps += usize::from(s.enter_ns < latest_writer_exit);
                    highest_writer
                }
                (None, _) => {
                    checks.overlaps += usize::from(s.enter_ns < latest_exit);
                    latest_writer_exit = latest_writer_exit.max(s.exit_ns);
                    let floor = highest;
                    highest_writer = highest_writer.max(s.fence);
                    floor
                }
            };
            // Sections without a fence (other programs, no lock) are not judged.
            checks.fence_inversions += usize::from(s.fence > 0 && floor != u64::MAX && s.fence <= floor);
            if s.fence > 0 {
                highest = highest.max(s.fence);
            }
            latest_exit = latest_exit.max(s.exit_ns);
            held.push(Reverse(s.exit_ns));
            checks.max_concurrent = checks.max_concurrent.max(held.len());
            if s.reader {
                readers.push(Reverse(s.exit_ns));
                checks.max_concurrent_readers = checks.max_concurrent_readers.max(readers.len());
            }
        }
        checks
    }
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
    /// The counter the writers increment; with `--slots`, the sum of the
    /// slots' counters.
    pub counter: u64,
    /// Each slot's counter (with `--slots`).
    pub slot_counters: Vec<u64>,
    /// The sections judged against each other.
    pub checks: Checks,
    /// When workers were killed (wall clock, ns since the epoch).
    pub kills: Vec<u128>,
    /// The CPU time (user + system) the workers used from their start
    /// signal on, as the OS counts it.
    pub cpu: Duration,
    /// The whole run, start-up included; `None` where the OS does not say.
    pub whole: Option<Whole>,
}

/// The whole run: every process of it (this one and every worker, all
/// their threads), from before the first worker was started to after the
/// last was reaped, compiling and instantiating the guest included.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Whole {
    pub cpu: Duration,
    pub elapsed: Duration,
}

impl Report {
    /// What the counter should read: one increment per writer's section
    /// (every section's with `--slots`, none of the readers').
    pub fn expected(&self) -> u64 {
        let c = &self.config;
        let writers = if c.slots.is_some() { c.processes } else { c.processes - c.readers.min(c.processes) };
        (writers * c.iterations) as u64
    }

    /// Overlapping sections, slots held twice or out of range, fence
    /// inversions, and (in one directory) lost counter updates and readers
    /// that saw the counter change; see [`Report::counter_off`].
    pub fn violations(&self) -> usize {
        let counted = if self.dirs.len() == 1 { self.counter_off() as usize + self.reads_changed() } else { 0 };
        let checks = &self.checks;
        checks.overlaps + checks.slot_collisions + checks.bad_slots + counted + checks.fence_inversions
    }

    /// Critical sections that began before an earlier one they must exclude
    /// had ended ([`Checks::overlaps`]).
    pub fn overlaps(&self) -> usize {
        self.checks.overlaps
    }

    /// Readers' sections that saw the counter change while they held: a
    /// writer wrote beside them. (Across mounts a caching client may serve
    /// a stale first read, so there only the overlaps count.)
    pub fn reads_changed(&self) -> usize {
        self.sections.iter().filter(|s| s.changed).count()
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

    /// Sections whose fencing number was not larger than it must be
    /// ([`Checks::fence_inversions`]).
    pub fn fence_inversions(&self) -> usize {
        self.checks.fence_inversions
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

    /// The times between one holder's exit and the next holder's entry,
    /// sorted, where each section excludes the next (no readers, no slots):
    /// the release, the next holder noticing it, and its acquire. Their sum
    /// with the sections is the run; this is what the lock costs a turn.
    pub fn gaps(&self) -> Vec<Duration> {
        if self.config.readers > 0 || self.config.slots.is_some() {
            return Vec::new();
        }
        let mut gaps: Vec<Duration> = self
            .sections
            .windows(2)
            .filter(|pair| pair[1].worker != pair[0].worker && pair[1].enter_ns >= pair[0].exit_ns)
            .map(|pair| Duration::from_nanos((pair[1].enter_ns - pair[0].exit_ns) as u64))
            .collect();
        gaps.sort();
        gaps
    }

    /// Waits (from asking for the lock to holding it), sorted.
    pub fn waits(&self) -> Vec<Duration> {
        self.waits_of(|_| true)
    }

    /// The waits of the sections `which` picks, sorted.
    fn waits_of(&self, which: impl Fn(&Section) -> bool) -> Vec<Duration> {
        let mut waits: Vec<Duration> = self.sections.iter().filter(|s| which(s)).map(|s| s.wait).collect();
        waits.sort();
        waits
    }

    /// Readers' and writers' waits, sorted (with `--slots`, none of either).
    pub fn role_waits(&self) -> (Vec<Duration>, Vec<Duration>) {
        let slots = self.config.slots.is_some();
        (self.waits_of(|s| s.reader), self.waits_of(|s| !s.reader && !slots))
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

    /// The whole run's CPU time per acquisition, and in cores kept busy
    /// over its time, start-up included.
    pub fn whole_per_acquisition(&self) -> Option<Duration> {
        self.whole.map(|whole| whole.cpu / (self.sections.len().max(1) as u32))
    }

    pub fn whole_cores(&self) -> Option<f64> {
        self.whole.map(|whole| whole.cpu.as_secs_f64() / whole.elapsed.as_secs_f64().max(1e-9))
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
        match c.slots {
            None if c.readers == 0 => {}
            None => {
                let _ = writeln!(
                    text,
                    "  mode              shared: {} readers, {} writers",
                    c.readers,
                    c.processes - c.readers
                );
            }
            Some(n) => {
                let _ = writeln!(text, "  mode              slots: a semaphore of {n}, every process a holder");
            }
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
        self.modes_text(&mut text);
        let _ = writeln!(text, "  hand-off ratio    {:.2}", self.handoff_ratio());
        let gaps = self.gaps();
        if !gaps.is_empty() {
            let _ = writeln!(
                text,
                "  hand-off gap      p50 {} / p99 {} (one holder's exit to the next one's entry)",
                ms(percentile(&gaps, 0.50)),
                ms(percentile(&gaps, 0.99))
            );
        }
        let _ = writeln!(
            text,
            "  workers' cpu      {:.2} s ({} per acquisition, {:.2} cores)",
            self.cpu.as_secs_f64(),
            ms(self.cpu_per_acquisition()),
            self.cores()
        );
        if let (Some(whole), Some(each), Some(cores)) = (self.whole, self.whole_per_acquisition(), self.whole_cores()) {
            let _ = writeln!(
                text,
                "  whole run's cpu   {:.2} s ({} per acquisition, {:.2} cores over {:.2} s; start-up included)",
                whole.cpu.as_secs_f64(),
                ms(each),
                cores,
                whole.elapsed.as_secs_f64()
            );
        }
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
        let checks = &self.checks;
        match c.slots {
            None if c.readers == 0 => {
                let _ = writeln!(text, "  overlaps          {}", checks.overlaps);
            }
            None => {
                let _ = writeln!(
                    text,
                    "  overlaps          {} (a writer beside anyone, a reader beside a writer)",
                    checks.overlaps
                );
                let _ = writeln!(
                    text,
                    "  reads changed     {} (readers that saw the counter change)",
                    self.reads_changed()
                );
            }
            Some(n) => {
                let _ = writeln!(text, "  overlaps          {} (a holder beside {n} others)", checks.overlaps);
                let _ = writeln!(
                    text,
                    "  slot collisions   {} (a holder beside another in its slot)",
                    checks.slot_collisions
                );
                if checks.bad_slots > 0 {
                    let _ = writeln!(text, "  bad slots         {} (no slot, or one out of range)", checks.bad_slots);
                }
            }
        }
        let fenced = self.sections.iter().filter(|s| s.fence > 0).count();
        if fenced > 0 {
            let _ = writeln!(text, "  fences            {} of {fenced} out of order", self.fence_inversions());
        }
        let _ = writeln!(text, "  evictions         {}", self.evictions());
        let verdict = match (self.violations(), self.evictions(), c.mode_name()) {
            (0, 0, "shared") => "OK: no writer beside anyone, no reader beside a writer".to_owned(),
            (0, 0, "slots") => {
                format!("OK: at most {} holders at once, never two in one slot", c.slots.unwrap_or_default())
            }
            (0, 0, _) => "OK: mutual exclusion held".to_owned(),
            (0, _, _) => "EVICTIONS: live holders lost their locks (a lifetime too short for this load?)".to_owned(),
            (_, _, "shared") => "VIOLATIONS: readers and writers not kept apart".to_owned(),
            (_, _, "slots") => "VIOLATIONS: the semaphore let in too many holders, or two into one slot".to_owned(),
            _ => "VIOLATIONS: mutual exclusion broken".to_owned(),
        };
        let _ = writeln!(text, "  result            {verdict}");
        text
    }

    /// The lines of the shared and slots modes: who held, how many at once,
    /// how long writers waited, the acquisitions per slot.
    fn modes_text(&self, text: &mut String) {
        let c = &self.config;
        let checks = &self.checks;
        let p50_max = |waits: &[Duration]| {
            format!("{} / {}", ms(percentile(waits, 0.50)), ms(waits.last().copied().unwrap_or_default()))
        };
        match c.slots {
            None if c.readers == 0 => {}
            None => {
                let (readers, writers) = self.role_waits();
                let _ = writeln!(
                    text,
                    "  readers           {} acquisitions, at most {} at once, wait p50/max {}",
                    readers.len(),
                    checks.max_concurrent_readers,
                    p50_max(&readers)
                );
                if writers.is_empty() {
                    let _ = writeln!(text, "  writers           none");
                } else {
                    let _ = writeln!(
                        text,
                        "  writers           {} acquisitions, wait p50/max {}",
                        writers.len(),
                        p50_max(&writers)
                    );
                }
            }
            Some(n) => {
                let _ = writeln!(text, "  holders           at most {} at once", checks.max_concurrent);
                let per_slot = &checks.slot_acquisitions;
                if per_slot.len() <= 16 {
                    let counts: Vec<String> = per_slot.iter().map(usize::to_string).collect();
                    let _ = writeln!(text, "  per slot          {} (slot 0 first)", counts.join(" "));
                } else {
                    let used = per_slot.iter().filter(|&&count| count > 0).count();
                    let (least, most) = (per_slot.iter().min(), per_slot.iter().max());
                    let _ = writeln!(
                        text,
                        "  per slot          {} to {} acquisitions; {used} of {n} slots used",
                        least.copied().unwrap_or(0),
                        most.copied().unwrap_or(0)
                    );
                }
            }
        }
    }

    /// The report's figures, as `--json` prints them.
    pub fn summary(&self) -> Summary {
        let c = &self.config;
        let waits = self.waits();
        let (reader_waits, writer_waits) = self.role_waits();
        let gaps = self.gaps();
        let longest = |waits: &[Duration]| waits.last().copied().unwrap_or_default().as_secs_f64();
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
            gap_p50_s: (!gaps.is_empty()).then(|| percentile(&gaps, 0.50).as_secs_f64()),
            gap_p99_s: (!gaps.is_empty()).then(|| percentile(&gaps, 0.99).as_secs_f64()),
            cpu_s: self.cpu.as_secs_f64(),
            cpu_per_acquisition_s: self.cpu_per_acquisition().as_secs_f64(),
            cores: self.cores(),
            whole_cpu_s: self.whole.map(|whole| whole.cpu.as_secs_f64()),
            whole_cpu_per_acquisition_s: self.whole_per_acquisition().map(|each| each.as_secs_f64()),
            whole_cores: self.whole_cores(),
            counter: self.counter,
            expected: self.expected(),
            counter_off: self.counter_off(),
            overlaps: self.checks.overlaps,
            fence_inversions: self.fence_inversions(),
            violations: self.violations(),
            evictions: self.evictions(),
            renew: c.renew,
            kills: self.kills.len(),
            longest_gap_after_kill_s: self.longest_gap_after_a_kill().as_secs_f64(),
            mode: c.mode_name().to_owned(),
            readers: if c.slots.is_some() { 0 } else { c.readers },
            slots: c.slots,
            max_concurrent: self.checks.max_concurrent,
            reader_acquisitions: reader_waits.len(),
            max_concurrent_readers: self.checks.max_concurrent_readers,
            reader_wait_p50_s: percentile(&reader_waits, 0.50).as_secs_f64(),
            reader_wait_max_s: longest(&reader_waits),
            writer_acquisitions: writer_waits.len(),
            writer_wait_p50_s: percentile(&writer_waits, 0.50).as_secs_f64(),
            writer_wait_max_s: longest(&writer_waits),
            reads_changed: self.reads_changed(),
            slot_collisions: self.checks.slot_collisions,
            bad_slots: self.checks.bad_slots,
            slot_acquisitions: self.checks.slot_acquisitions.clone(),
            slot_counters: self.slot_counters.clone(),
        }
    }

    /// Every section as a line of CSV, in the order of entry, under a
    /// header: times in seconds from the first entry; `gap_s`, the time
    /// since the section before it left (negative where they overlap, as
    /// readers' and slot holders' may); `fence` 0 where the worker has none.
    pub fn to_csv(&self) -> String {
        let first = self.sections.first().map_or(0, |s| s.enter_ns);
        let seconds = |ns: u128| ns.saturating_sub(first) as f64 / 1e9;
        let mut csv = String::from("worker,entered_s,left_s,wait_s,gap_s,fence,slot,reader,evicted\n");
        let mut previous_exit: Option<u128> = None;
        for s in &self.sections {
            // In whole nanoseconds first: times since the epoch do not fit
            // an f64 to the nanosecond.
            let gap = previous_exit
                .map_or(String::new(), |exit| format!("{:.6}", (s.enter_ns as i128 - exit as i128) as f64 / 1e9));
            let slot = s.slot.map_or(String::new(), |slot| slot.to_string());
            csv.push_str(&format!(
                "{},{:.6},{:.6},{:.6},{gap},{},{slot},{},{}\n",
                s.worker,
                seconds(s.enter_ns),
                seconds(s.exit_ns),
                s.wait.as_secs_f64(),
                s.fence,
                s.reader,
                s.evicted
            ));
            previous_exit = Some(s.exit_ns);
        }
        csv
    }

    /// The wait-time distribution, as an SVG document.
    pub fn draw(&self) -> Result<String> {
        let c = &self.config;
        let title = format!(
            "uuidlock contend: wait before holding the lock ({} processes x {}, hold {:?})",
            c.processes, c.iterations, c.hold
        );
        let runner = c.runner_name();
        match (c.slots, c.readers) {
            (None, 0) => plot::wait_histograms(&title, &[plot::Series { name: &runner, waits: &self.waits() }]),
            (None, readers) => {
                let (reader_waits, writer_waits) = self.role_waits();
                let (r, w) =
                    (format!("{runner}: {readers} readers"), format!("{runner}: {} writers", c.processes - readers));
                let series =
                    [plot::Series { name: &r, waits: &reader_waits }, plot::Series { name: &w, waits: &writer_waits }];
                // No panel for a role nobody had (all readers).
                let series: Vec<plot::Series> = series.into_iter().filter(|s| !s.waits.is_empty()).collect();
                plot::wait_histograms(&title, &series)
            }
            (Some(n), _) => {
                let name = format!("{runner}: holders of {n} slots");
                plot::wait_histograms(&title, &[plot::Series { name: &name, waits: &self.waits() }])
            }
        }
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
    /// The median and 99th percentile of the time from one holder's exit to
    /// the next one's entry (`None` with readers or slots).
    pub gap_p50_s: Option<f64>,
    pub gap_p99_s: Option<f64>,
    /// The workers' CPU time (user + system) from their start on, in all,
    /// per acquisition, and over the run's time (cores kept busy).
    pub cpu_s: f64,
    pub cpu_per_acquisition_s: f64,
    pub cores: f64,
    /// The whole run's CPU time (this process and every worker, start-up
    /// included), per acquisition, and in cores over the whole run's time;
    /// null where the OS does not say.
    pub whole_cpu_s: Option<f64>,
    pub whole_cpu_per_acquisition_s: Option<f64>,
    pub whole_cores: Option<f64>,
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
    /// `exclusive`, `shared` (readers beside writers, `--readers`) or
    /// `slots` (a semaphore, `--slots`).
    #[serde(default)]
    pub mode: String,
    /// Reader processes; the other processes are writers (without `--slots`).
    #[serde(default)]
    pub readers: usize,
    /// The semaphore's slots.
    #[serde(default)]
    pub slots: Option<u32>,
    /// The most sections held at once (1 when exclusion held, in the
    /// exclusive mode; at most `slots`).
    #[serde(default)]
    pub max_concurrent: usize,
    /// Readers' acquisitions, the most readers that held at once (more than
    /// one: readers do share), and their waits.
    #[serde(default)]
    pub reader_acquisitions: usize,
    #[serde(default)]
    pub max_concurrent_readers: usize,
    #[serde(default)]
    pub reader_wait_p50_s: f64,
    #[serde(default)]
    pub reader_wait_max_s: f64,
    /// Writers' acquisitions (every one's in the exclusive mode, none with
    /// `--slots`) and their waits: the longest says whether readers starve
    /// writers.
    #[serde(default)]
    pub writer_acquisitions: usize,
    #[serde(default)]
    pub writer_wait_p50_s: f64,
    #[serde(default)]
    pub writer_wait_max_s: f64,
    /// Readers that saw the counter change while they held (a violation in
    /// one directory).
    #[serde(default)]
    pub reads_changed: usize,
    /// Slot holders that began while another held their slot, and those
    /// with no slot or one out of range (violations).
    #[serde(default)]
    pub slot_collisions: usize,
    #[serde(default)]
    pub bad_slots: usize,
    /// Acquisitions per slot, slot 0 first, and each slot's counter.
    #[serde(default)]
    pub slot_acquisitions: Vec<usize>,
    #[serde(default)]
    pub slot_counters: Vec<u64>,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `[evicted ][changed ]ENTER_NS EXIT_NS WAIT_NS [FENCE [SLOT]]` (other
/// programs' workers print no fence) from worker number `worker`, a reader
/// if `reader`.
pub(super) fn parse_section(worker: usize, reader: bool, line: &str) -> Result<Section> {
    let (evicted, numbers) = match line.strip_prefix(EVICTED) {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (changed, numbers) = match numbers.strip_prefix(CHANGED) {
        Some(rest) => (true, rest),
        None => (false, numbers),
    };
    let fields: Vec<u128> = numbers
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("worker {worker} printed {line:?}"))?;
    let (enter_ns, exit_ns, wait_ns, fence, slot) = match fields[..] {
        [enter, exit, wait] => (enter, exit, wait, 0, None),
        [enter, exit, wait, fence] => (enter, exit, wait, fence as u64, None),
        [enter, exit, wait, fence, slot] => {
            (enter, exit, wait, fence as u64, Some(u32::try_from(slot).unwrap_or(u32::MAX)))
        }
        _ => bail!("worker {worker} printed {line:?}"),
    };
    let wait = Duration::from_nanos(wait_ns as u64);
    Ok(Section { worker, enter_ns, exit_ns, wait, fence, evicted, reader, slot, changed })
}

/// What a worker prints before a section whose lock was broken under it.
pub(super) const EVICTED: &str = "evicted ";
/// What a reader prints before a section in which the counter changed.
pub(super) const CHANGED: &str = "changed ";

#[cfg(test)]
mod tests {
    use super::*;

    fn section(worker: usize, enter_ns: u128, exit_ns: u128) -> Section {
        Section {
            worker,
            enter_ns,
            exit_ns,
            wait: Duration::ZERO,
            fence: 0,
            evicted: false,
            reader: false,
            slot: None,
            changed: false,
        }
    }

    fn reader(worker: usize, enter_ns: u128, exit_ns: u128) -> Section {
        Section { reader: true, ..section(worker, enter_ns, exit_ns) }
    }

    fn holder(slot: u32, enter_ns: u128, exit_ns: u128) -> Section {
        Section { slot: Some(slot), ..section(slot as usize, enter_ns, exit_ns) }
    }

    fn fence_inversions(sorted: &[Section]) -> usize {
        Checks::judge(sorted, None).fence_inversions
    }

    fn overlaps(sorted: &[Section]) -> usize {
        Checks::judge(sorted, None).overlaps
    }

    #[test]
    fn fences_must_rise_in_section_order() {
        let fenced = |fence, enter| Section { fence, ..section(0, enter, enter + 1) };
        assert_eq!(fence_inversions(&[fenced(1, 0), fenced(2, 10), fenced(5, 20)]), 0);
        assert_eq!(fence_inversions(&[fenced(1, 0), fenced(3, 10), fenced(2, 20), fenced(3, 30)]), 2);
        // Workers without fences (other programs) are not judged.
        assert_eq!(fence_inversions(&[fenced(0, 0), fenced(0, 10)]), 0);
    }

    #[test]
    fn readers_fences_rise_past_writers_only() {
        let r = |fence, enter| Section { fence, ..reader(0, enter, enter + 5) };
        let w = |fence, enter| Section { fence, ..section(1, enter, enter + 5) };
        // Readers entering out of their gate's order are fine; a reader
        // below an earlier writer is not, nor a writer below an earlier reader.
        assert_eq!(fence_inversions(&[w(1, 0), r(3, 10), r(2, 11), w(4, 20), r(5, 30)]), 0);
        assert_eq!(fence_inversions(&[w(4, 0), r(3, 10)]), 1);
        assert_eq!(fence_inversions(&[r(4, 0), w(3, 10)]), 1);
        // Slot holders: in each slot.
        let h = |slot, fence, enter| Section { fence, ..holder(slot, enter, enter + 5) };
        assert_eq!(Checks::judge(&[h(0, 2, 0), h(1, 1, 1), h(0, 3, 10), h(1, 4, 11)], Some(2)).fence_inversions, 0);
        assert_eq!(Checks::judge(&[h(0, 3, 0), h(1, 1, 1), h(0, 2, 10)], Some(2)).fence_inversions, 1);
    }

    #[test]
    fn worker_lines_parse_with_and_without_fence_eviction_change_and_slot() {
        let plain = parse_section(3, false, "10 20 5").unwrap();
        assert_eq!((plain.worker, plain.enter_ns, plain.fence, plain.evicted), (3, 10, 0, false));
        let evicted = parse_section(1, false, "evicted 10 20 5 42").unwrap();
        assert_eq!((evicted.fence, evicted.evicted, evicted.slot), (42, true, None));
        let changed = parse_section(1, true, "evicted changed 10 20 5 42").unwrap();
        assert_eq!((changed.evicted, changed.changed, changed.reader), (true, true, true));
        let slot = parse_section(2, false, "10 20 5 42 7").unwrap();
        assert_eq!((slot.fence, slot.slot, slot.changed), (42, Some(7), false));
        assert!(parse_section(0, false, "10 20").is_err() && parse_section(0, false, "evicted x").is_err());
        assert!(parse_section(0, false, "1 2 3 4 5 6").is_err());
    }

    #[test]
    fn overlaps_are_counted_even_behind_a_long_section() {
        let sorted = [section(0, 0, 100), section(1, 10, 20), section(2, 50, 60), section(0, 100, 110)];
        assert_eq!(overlaps(&sorted), 2);
        assert_eq!(overlaps(&[section(0, 0, 10), section(1, 10, 20)]), 0);
        assert_eq!(Checks::judge(&sorted, None).max_concurrent, 2);
    }

    #[test]
    fn readers_overlap_each_other_but_not_a_writer() {
        // Three readers together, then a writer alone, then two readers.
        let fine = [
            reader(0, 0, 50),
            reader(1, 10, 60),
            reader(2, 20, 70),
            section(3, 70, 80),
            reader(0, 80, 90),
            reader(1, 85, 95),
        ];
        let checks = Checks::judge(&fine, None);
        assert_eq!((checks.overlaps, checks.max_concurrent_readers, checks.max_concurrent), (0, 3, 3));
        // A writer entering beside a reader, a reader beside a writer, two writers.
        assert_eq!(overlaps(&[reader(0, 0, 50), section(1, 40, 60)]), 1);
        assert_eq!(overlaps(&[section(1, 0, 50), reader(0, 40, 60)]), 1);
        assert_eq!(overlaps(&[section(1, 0, 50), reader(0, 10, 20), reader(2, 30, 60)]), 2);
        assert_eq!(overlaps(&[section(1, 0, 50), section(2, 49, 60)]), 1);
    }

    #[test]
    fn a_semaphore_is_judged_by_its_count_and_its_slots() {
        // Three slots, three holders at once, each slot reused after it is left.
        let fine = [holder(0, 0, 50), holder(1, 10, 60), holder(2, 20, 70), holder(0, 50, 80), holder(1, 60, 90)];
        let checks = Checks::judge(&fine, Some(3));
        assert_eq!((checks.overlaps, checks.slot_collisions, checks.bad_slots), (0, 0, 0));
        assert_eq!((checks.max_concurrent, &checks.slot_acquisitions[..]), (3, &[2, 2, 1][..]));
        // A fourth holder at once, and two holders in slot 1.
        let over = [holder(0, 0, 50), holder(1, 10, 60), holder(2, 20, 70), holder(1, 30, 40)];
        let checks = Checks::judge(&over, Some(3));
        assert_eq!((checks.overlaps, checks.slot_collisions, checks.max_concurrent), (1, 1, 4));
        // A slot out of range, or none.
        let odd = [holder(3, 0, 10), section(0, 20, 30)];
        assert_eq!(Checks::judge(&odd, Some(3)).bad_slots, 2);
    }

    #[test]
    fn the_json_summary_round_trips() {
        let sections = vec![section(0, 0, 10), section(1, 20, 30)];
        let report = Report {
            config: Config::default(),
            dirs: vec![PathBuf::from("/tmp/x")],
            elapsed: Duration::from_secs(1),
            checks: Checks::judge(&sections, None),
            sections,
            counter: 2,
            slot_counters: vec![],
            kills: vec![],
            cpu: Duration::from_millis(500),
            whole: Some(Whole { cpu: Duration::from_secs(1), elapsed: Duration::from_secs(2) }),
        };
        let json = serde_json::to_string(&report.summary()).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report.summary());
        assert_eq!((back.counter, back.expected, back.handoff_ratio), (2, 100, 1.0));
        assert_eq!((back.cpu_per_acquisition_s, back.cores), (0.25, 0.5));
        assert_eq!((back.whole_cpu_per_acquisition_s, back.whole_cores), (Some(0.5), Some(0.5)));
        assert_eq!((back.mode.as_str(), back.writer_acquisitions, back.max_concurrent), ("exclusive", 2, 1));
    }
}
