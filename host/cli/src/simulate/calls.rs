//! The WASI calls each operation of the guest makes, counted by the
//! simulator's host: the call table `uuidlock bench` prints.
//!
//! Two clients run a fixed script on the `local` share, with no faults and
//! the command line's defaults (a verification delay and a retry interval
//! of 0.1 s): an uncontended acquire and release without a lifetime, with
//! one (and a renewal), shared, and in one of four slots; then a hand-off,
//! where one client holds for a second, a second client joins the queue
//! half a second in and takes the lock when it is released, and a third
//! joins behind it: second in line, it looks at the last ticket served
//! until its turn comes, a second after the first hand-off.
//!
//! Each command is a fresh instance of the command module, as from a
//! shell, so every row also counts the process's own calls (arguments,
//! environment, the preopened directory, clocks, randomness, its output),
//! which stay in the process; a component instantiated once makes most of
//! them once. The table therefore keeps three columns apart: calls that
//! reach the share (the ones that cost a round trip on a network
//! filesystem), sleeps, and calls that stay in the process.

use std::collections::BTreeMap;
use std::time::Duration;

use super::check::LOCK;
use super::sched::{Counted, Step};
use super::wasi::MOUNT;

/// The calls of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub op: &'static str,
    /// Calls that reach the share, by import name, most first.
    pub share: Vec<(&'static str, u32)>,
    /// `poll_oneoff`: the sleeps (the verification delay, waiting in line).
    pub sleeps: u32,
    /// Calls that stay in the process.
    pub in_process: u32,
    /// Simulated time the operation took.
    pub took: Duration,
}

impl Row {
    pub fn share_total(&self) -> u32 {
        self.share.iter().map(|(_, n)| n).sum()
    }
}

/// When the first client takes the lock for the hand-off, and when the
/// second joins the queue, in simulated time: well after the uncontended
/// steps (about a second in all), and while the first holds.
const HANDOFF_HELD_AT: Duration = Duration::from_secs(10);
const HANDOFF_WAITS_AT: Duration = Duration::from_millis(10_500);
/// When the third client joins the queue, behind the second.
const SECOND_IN_LINE_AT: Duration = Duration::from_millis(10_600);

/// How long the first client holds for the hand-off.
const HELD: Duration = Duration::from_secs(1);

/// The script: one list of steps per client.
pub fn script() -> Vec<Vec<Step>> {
    let lock = format!("{MOUNT}/{LOCK}");
    let run = |op: &'static str, args: &[&str]| Step::Run {
        op,
        args: ["uuidlock"].iter().chain(args).map(|arg| arg.replace("LOCK", &lock)).collect(),
    };
    let first = vec![
        run("acquire", &["acquire", "LOCK"]),
        run("release", &["release", "LOCK", "{token}"]),
        run("acquire, with a lifetime", &["acquire", "LOCK", "--stale-after", "3"]),
        run("refresh (renewal)", &["refresh", "LOCK", "{token}"]),
        run("release, with a lifetime", &["release", "LOCK", "{token}"]),
        run("acquire --shared", &["acquire", "LOCK", "--shared"]),
        run("release, shared", &["release", "LOCK", "{token}"]),
        run("acquire --slots 4", &["acquire", "LOCK", "--slots", "4"]),
        run("release, a slot", &["release", "LOCK", "{token}"]),
        Step::Until(HANDOFF_HELD_AT),
        run("acquire (before a hand-off)", &["acquire", "LOCK"]),
        Step::Sleep(HELD),
        run("release to a waiter", &["release", "LOCK", "{token}"]),
    ];
    // The waiter: finds the lock held, queues, takes it at the release,
    // and holds it as long before handing it on.
    let second = vec![
        Step::Until(HANDOFF_WAITS_AT),
        run("hand-off: the waiter's acquire", &["acquire", "LOCK"]),
        Step::Sleep(HELD),
        run("release to the next waiter", &["release", "LOCK", "{token}"]),
    ];
    // Behind the waiter: a waiter that is not the head, whose looks read
    // the last ticket served.
    let third = vec![Step::Until(SECOND_IN_LINE_AT), run("second in line: its acquire", &["acquire", "LOCK"])];
    vec![first, second, third]
}

/// The rows of the table, in the script's order; an error naming the
/// operation if a command failed (the counts would be of an error path).
pub fn rows(counted: &[Counted]) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for done in counted {
        if done.code != 0 {
            return Err(format!("the counted `{}` exited {}", done.op, done.code));
        }
        let mut share: BTreeMap<&'static str, u32> = BTreeMap::new();
        let (mut sleeps, mut in_process) = (0, 0);
        for (&call, &n) in &done.calls {
            match call {
                "poll_oneoff" => sleeps += n,
                _ if reaches_the_share(call) => *share.entry(call).or_default() += n,
                _ => in_process += n,
            }
        }
        let mut share: Vec<_> = share.into_iter().collect();
        share.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        rows.push(Row { op: done.op, share, sleeps, in_process, took: done.took });
    }
    Ok(rows)
}

/// Whether a preview 1 call goes to the filesystem (the share), rather
/// than staying in the process.
fn reaches_the_share(call: &str) -> bool {
    call.starts_with("path_") || matches!(call, "fd_read" | "fd_write" | "fd_close" | "fd_filestat_get" | "fd_readdir")
}

/// The table, for people.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "WASI calls per operation (the command module on the simulator's local share, no faults;\n\
         share: calls that reach the filesystem; in-process: arguments, clocks, randomness, output;\n\
         took: simulated time, the verification delay and waiting included)\n",
    );
    out += &format!(
        "  {:<30} {:>6} {:>7} {:>11} {:>8}  share calls by kind\n",
        "operation", "share", "sleeps", "in-process", "took ms"
    );
    for row in rows {
        let kinds: Vec<String> = row.share.iter().map(|(call, n)| format!("{call} {n}")).collect();
        out += &format!(
            "  {:<30} {:>6} {:>7} {:>11} {:>8.0}  {}\n",
            row.op,
            row.share_total(),
            row.sleeps,
            row.in_process,
            row.took.as_secs_f64() * 1e3,
            kinds.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_split_into_share_sleeps_and_in_process() {
        let calls = BTreeMap::from([
            ("path_open", 3),
            ("fd_read", 2),
            ("poll_oneoff", 1),
            ("clock_time_get", 4),
            ("fd_write (stdio)", 1),
        ]);
        let counted = Counted { op: "acquire", code: 0, calls, took: Duration::ZERO };
        let rows = rows(&[counted]).unwrap();
        assert_eq!(rows[0].share, vec![("path_open", 3), ("fd_read", 2)]);
        assert_eq!((rows[0].share_total(), rows[0].sleeps, rows[0].in_process), (5, 1, 5));
    }

    #[test]
    fn a_failed_command_is_an_error_not_a_row() {
        let counted = Counted { op: "refresh (renewal)", code: 3, calls: BTreeMap::new(), took: Duration::ZERO };
        assert_eq!(rows(&[counted]), Err("the counted `refresh (renewal)` exited 3".to_owned()));
    }
}
