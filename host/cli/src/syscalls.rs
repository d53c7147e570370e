//! The host's syscalls per operation, counted by `strace`: what
//! `uuidlock bench --syscalls` prints beside the WASI calls of `--calls`.
//!
//! The host does more than the guest asks (wasmtime-wasi and the preview 1
//! adapter look at each descriptor and each path again), and `strace -f
//! -c` counts every syscall of every thread of a process. A process that
//! sets everything up and then repeats one operation `n` times makes the
//! setup's syscalls as well, and so each operation runs in two processes,
//! `FEW` and `MANY` times, each in a fresh directory of its own; the
//! difference, divided by `MANY - FEW`, is what one operation costs, by
//! syscall. Whatever the process does at a steady rate (a thread's timer)
//! is counted in too: the figures are what a user's process pays, which is
//! the point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Repetitions of the operation in the two counted processes.
const FEW: usize = 100;
const MANY: usize = 300;

/// The kinds a row names; the rest is summed as "other".
const KINDS_SHOWN: usize = 8;

/// The syscalls of one operation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub operation: String,
    /// Syscalls per operation: the sum of `by_kind`.
    pub total: f64,
    /// Syscalls per operation, by kind (`openat`, `futex`, ...). Kinds
    /// below 0.05 per operation are left out, and so are kinds the longer
    /// run made fewer of: the setup's noise (its memory mappings differ a
    /// little from one process to the next), not the operation's.
    pub by_kind: BTreeMap<String, f64>,
}

/// Counts the syscalls of each of `operations`. `repeat(operation, n, at)`
/// is the command that sets up in the directory `at` and then runs
/// `operation` `n` times; it runs under `strace`, and everything goes in
/// `dir`. `stop` is asked before each run whether to go on.
///
/// # Errors
/// `strace` is not installed or cannot trace (a container without
/// `ptrace`), a counted process failed, or `stop` said to stop.
pub fn count(
    dir: &Path,
    operations: &[&str],
    repeat: impl Fn(&str, usize, &Path) -> Command,
    stop: impl Fn() -> Result<()>,
) -> Result<Vec<Row>> {
    let strace = find_strace()
        .context("counting the host's syscalls needs strace, which is not installed (apt-get install strace)")?;
    let run = |operation: &str, times: usize, name: &str| {
        stop()?;
        let at = dir.join(name.replace(' ', "-"));
        std::fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
        counted(&strace, dir, repeat(operation, times, &at), name)
    };
    operations
        .iter()
        .map(|&operation| {
            let few = run(operation, FEW, &format!("{operation}-few"))?;
            let many = run(operation, MANY, &format!("{operation}-many"))?;
            Ok(Row::between(operation, &few, &many, MANY - FEW))
        })
        .collect()
}

fn find_strace() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("strace")).find(|strace| strace.is_file())
}

/// Runs `command` under `strace -f -c` and returns its syscalls by kind.
fn counted(strace: &Path, dir: &Path, command: Command, name: &str) -> Result<BTreeMap<String, u64>> {
    let report = dir.join(format!("strace-{}.txt", name.replace(' ', "-")));
    let output = Command::new(strace)
        .args(["-f", "-c", "-U", "name,calls", "-o"])
        .arg(&report)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", strace.display()))?;
    ensure!(
        output.status.success(),
        "counting {name}: strace exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = std::fs::read_to_string(&report).with_context(|| format!("reading {}", report.display()))?;
    parse(&text).with_context(|| format!("reading strace's summary {}", report.display()))
}

/// The calls by syscall of a `strace -c -U name,calls` summary.
fn parse(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    match lines.next() {
        Some(header) if header.split_whitespace().eq(["syscall", "calls"]) => {}
        other => bail!("not a summary of syscalls and calls (it begins {other:?})"),
    }
    let mut calls = BTreeMap::new();
    for line in lines {
        if line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(count), None) = (words.next(), words.next(), words.next()) else {
            bail!("an unexpected line: {line:?}");
        };
        if name != "total" {
            calls.insert(name.to_owned(), count.parse().with_context(|| format!("an unexpected line: {line:?}"))?);
        }
    }
    ensure!(!calls.is_empty(), "no syscalls counted");
    Ok(calls)
}

impl Row {
    /// The syscalls of one of the `times` operations that `many` made more
    /// than `few`.
    fn between(operation: &str, few: &BTreeMap<String, u64>, many: &BTreeMap<String, u64>, times: usize) -> Row {
        let per = |kind: &str| {
            let (few, many) = (few.get(kind).copied().unwrap_or(0), many.get(kind).copied().unwrap_or(0));
            (many as f64 - few as f64) / times as f64
        };
        let mut by_kind = BTreeMap::new();
        for kind in few.keys().chain(many.keys()) {
            let calls = per(kind);
            if calls >= 0.05 {
                by_kind.insert(kind.clone(), calls);
            }
        }
        Row { operation: operation.to_owned(), total: by_kind.values().sum(), by_kind }
    }
}

/// The rows as a table, the commonest kinds first.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|row| row.operation.len()).max().unwrap_or(0).max(20);
    let mut text = format!(
        "host syscalls per operation (strace -f -c: {MANY} operations less {FEW}, per operation)\n\
         {:<width$} {:>7}  by kind\n",
        "operation", "total"
    );
    for row in rows {
        let mut kinds: Vec<(&String, &f64)> = row.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        let mut shown: Vec<String> = kinds.iter().take(KINDS_SHOWN).map(|(kind, n)| format!("{kind} {n:.1}")).collect();
        let other: f64 = kinds.iter().skip(KINDS_SHOWN).map(|(_, n)| **n).sum();
        if other >= 0.05 {
            shown.push(format!("other {other:.1}"));
        }
        text.push_str(&format!("{:<width$} {:>7.1}  {}\n", row.operation, row.total, shown.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_is_read_by_name_and_calls() {
        let text = "syscall              calls\n---------------- ---------\nread  7\nopenat   34\n\
                    ---------------- ---------\ntotal   41\n";
        let calls = parse(text).unwrap();
        assert_eq!(calls, BTreeMap::from([("read".to_owned(), 7), ("openat".to_owned(), 34)]));
        assert!(parse("% time     seconds  usecs/call     calls    errors syscall\n").is_err());
        assert!(parse("syscall calls\nread seven\n").is_err());
    }

    #[test]
    fn a_row_is_the_difference_per_operation() {
        let few = BTreeMap::from([("read".to_owned(), 100), ("mmap".to_owned(), 50), ("brk".to_owned(), 9)]);
        let many = BTreeMap::from([("read".to_owned(), 500), ("mmap".to_owned(), 50), ("unlink".to_owned(), 200)]);
        let row = Row::between("x", &few, &many, 200);
        assert_eq!(row.total, 3.0);
        assert_eq!(row.by_kind, BTreeMap::from([("read".to_owned(), 2.0), ("unlink".to_owned(), 1.0)]));
        assert!(table(&[row]).contains("x                        3.0  read 2.0, unlink 1.0"));
    }
}
