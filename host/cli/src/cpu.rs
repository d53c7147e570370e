//! The CPU time (user + system) a process has used, as the OS counts it:
//! `contend` and `bench` report what their workers spent while they ran,
//! and what the whole run spent, start-up included.

use std::time::Duration;

/// The user + system time process `pid` has used so far (Linux; a process
/// that has exited but is not yet reaped still shows its totals). `None`
/// where the OS does not say.
///
/// `/proc/PID/schedstat` counts it in nanoseconds; `/proc/PID/stat` in
/// clock ticks (10 ms), too coarse for short runs, so it is the fallback.
pub fn used(pid: u32) -> Option<Duration> {
    let nanos = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|line| line.split_whitespace().next()?.parse().ok());
    if let Some(nanos) = nanos {
        return Some(Duration::from_nanos(nanos));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks_to_duration(parse_ticks(&stat)?)
}

/// The CPU time of this process, every thread, and of its children that
/// have been waited for (and theirs), start-up and all: `getrusage`'s
/// `RUSAGE_SELF` and `RUSAGE_CHILDREN`. `None` where the OS does not say.
pub fn this_process_and_children() -> Option<Duration> {
    let used = |who| {
        // SAFETY: `usage` is a plain struct that `getrusage` fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is valid for writes for the call's length.
        (unsafe { libc::getrusage(who, &mut usage) } == 0).then(|| {
            let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            time(usage.ru_utime) + time(usage.ru_stime)
        })
    };
    Some(used(libc::RUSAGE_SELF)? + used(libc::RUSAGE_CHILDREN)?)
}

/// utime + stime, fields 14 and 15 of a stat line. The command name (field
/// 2) is in parentheses and may hold spaces, so fields count from the last
/// `)`.
fn parse_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_to_duration(ticks: u64) -> Option<Duration> {
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 123 0 0";
        assert_eq!(parse_ticks(stat), Some(12));
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(used(std::process::id()).is_some_and(|cpu| cpu > Duration::ZERO));
    }
}
