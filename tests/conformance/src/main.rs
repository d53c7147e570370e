//! The conformance suite of `uuidlock:lock/lock@0.3.0`: every function,
//! every error case, lifetimes, fences and the guard, checked through the
//! plugin's import, so that one suite runs unchanged in every host that
//! runs the lock (see `tests/all/conformance.rs`).
//!
//! `conformance ROOT` runs against the fixture directory the driver
//! granted as ROOT (see `FIXTURE` below) and prints one line per check,
//! `ok NAME` or `not ok NAME: WHY`, then `N passed, M failed`; it exits 1
//! if any check failed.

use std::process::ExitCode;
use std::time::Duration;

wit_bindgen::generate!({ path: "../../wit", world: "uuidlock:lock/plugin@0.3.0" });

use uuidlock::lock::lock::{abandon, acquire, acquire_as, default_options, holds, refresh, release, status, Guard};
use uuidlock::lock::types::{Error, Holder, Options};

/// What the driver puts in ROOT before the suite runs.
const FIXTURE: &str = "\
    dir.lock/      a directory
    link.lock      a symbolic link to target.lock
    fifo.lock      a named pipe
    file           a regular file
    foreign.lock   another program's marker: `held by a shell script`
    stale.lock     a uuidlock lock with a 0.5 s lifetime, dated an hour ago
    escape         a symbolic link to a directory outside ROOT";

const FOREIGN: &str = "held by a shell script";

type Outcome = Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, root] = args.as_slice() else {
        eprintln!("usage: conformance ROOT\n\nROOT holds:\n{FIXTURE}");
        return ExitCode::from(2);
    };
    let root = root.trim_end_matches('/');
    let path = |name: &str| format!("{root}/{name}");
    let mut suite = Suite::default();

    suite.check("default-options are the documented ones", || {
        let o = default_options();
        same(&o.prefix, &String::new(), "prefix")?;
        same(&o.verification_delay_ns, &100_000_000, "verification-delay-ns")?;
        same(&o.retry_interval_ns, &100_000_000, "retry-interval-ns")?;
        same(&o.timeout_ns, &None, "timeout-ns")?;
        same(&o.stale_after_ns, &None, "stale-after-ns")?;
        same(&o.queue, &true, "queue")?;
        same(&o.max_clock_skew_ns, &0, "max-clock-skew-ns")
    });

    suite.check("acquire returns a token with the prefix, and a fence", || {
        let lock = path("basic.lock");
        let got = acquire(&lock, &Options { prefix: "conformance-".into(), ..quick() }).map_err(show)?;
        let uuid = got.token.strip_prefix("conformance-").ok_or(format!("token {} lacks the prefix", got.token))?;
        is_uuid_v4(uuid).then_some(()).ok_or(format!("{uuid} is not a lowercase hyphenated UUIDv4"))?;
        ensure(got.fence > 0 && got.fence <= (1 << 53) - 1, format!("fence {} outside 1..2^53", got.fence))?;
        same(&holds(&lock, &got.token).map_err(show)?, &true, "holds")?;
        let held = status(&lock).map_err(show)?.ok_or("status says free while held")?;
        match &held.holder {
            Holder::Uuidlock(info) => {
                same(&info.token, &got.token, "status token")?;
                same(&info.prefix, &"conformance-".to_owned(), "status prefix")?;
                same(&info.stale_after_ns, &None, "status lifetime")?;
            }
            Holder::Foreign(shown) => return Err(format!("our lock shows as foreign: {shown}")),
        }
        same(&held.stale, &false, "stale")?;
        same(&held.fence, &Some(got.fence), "status fence")?;
        same(&held.renewed_ns, &None, "renewed-ns without a lifetime")?;
        release(&lock, &got.token).map_err(show)?;
        same(&holds(&lock, &got.token).map_err(show)?, &false, "holds after release")?;
        same(&status(&lock).map_err(show)?.is_none(), &true, "status after release is none")?;
        expect_err(release(&lock, &got.token), "not-owner", "a second release")
    });

    suite.check("a busy lock times out, and a second acquire here is already-held", || {
        let lock = path("busy.lock");
        let got = acquire(&lock, &quick()).map_err(show)?;
        expect_err(acquire(&lock, &quick()), "already-held", "a second acquire by this instance")?;
        expect_err(guard(&lock, &quick()), "already-held", "a guard on a lock this instance holds")?;
        let stranger = "00000000-0000-4000-8000-000000000000";
        expect_err(release(&lock, stranger), "not-owner", "a release by another token")?;
        expect_err(refresh(&lock, stranger), "not-owner", "a refresh by another token")?;
        same(&holds(&lock, stranger).map_err(show)?, &false, "holds by another token")?;
        release(&lock, &got.token).map_err(show)
    });

    suite.check("a foreign marker times out and is never deleted", || {
        let lock = path("foreign.lock");
        expect_err(acquire(&lock, &quick()), "timeout", "acquire of a foreign marker")?;
        match status(&lock).map_err(show)?.ok_or("a foreign marker shows as free")?.holder {
            Holder::Foreign(shown) if shown.contains(FOREIGN) => {}
            other => return Err(format!("status shows {other:?}, not the foreign marker")),
        }
        expect_err(release(&lock, "00000000-0000-4000-8000-000000000000"), "not-owner", "release of a foreign marker")?;
        let still = std::fs::read_to_string(&lock).map_err(|e| format!("the marker is gone: {e}"))?;
        same(&still.trim(), &FOREIGN, "the marker's bytes")
    });

    suite.check("acquire-as takes the caller's token; abandon undoes it", || {
        let lock = path("as.lock");
        let token = "as-0b0c6a8e-2f1d-4f5e-9a3b-7c6d5e4f3a2b";
        let got = acquire_as(&lock, token, &quick()).map_err(show)?;
        same(&got.token.as_str(), &token, "token")?;
        expect_err(acquire_as(&lock, token, &quick()), "already-held", "the same token again")?;
        abandon(&lock, token).map_err(show)?;
        same(&status(&lock).map_err(show)?.is_none(), &true, "free after abandon")?;
        // Nothing left to undo: not an error.
        abandon(&lock, token).map_err(show)?;
        // Abandon touches nothing that is not the token's.
        let other = acquire(&lock, &quick()).map_err(show)?;
        abandon(&lock, token).map_err(show)?;
        same(&holds(&lock, &other.token).map_err(show)?, &true, "another's lock survives abandon")?;
        release(&lock, &other.token).map_err(show)?;
        let listed: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| format!("cannot list {root}: {e}"))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with("as.lock.") && !name.ends_with(".fence") && !name.ends_with(".queue"))
            .collect();
        ensure(listed.is_empty(), format!("left beside the lock: {listed:?}"))
    });

    suite.check("malformed tokens are invalid-token", || {
        let lock = path("tokens.lock");
        for bad in ["", "not-a-uuid", "has space-00000000-0000-4000-8000-000000000000"] {
            expect_err(acquire_as(&lock, bad, &quick()), "invalid-token", &format!("acquire-as {bad:?}"))?;
            expect_err(release(&lock, bad), "invalid-token", &format!("release {bad:?}"))?;
            expect_err(refresh(&lock, bad), "invalid-token", &format!("refresh {bad:?}"))?;
            expect_err(holds(&lock, bad), "invalid-token", &format!("holds {bad:?}"))?;
            expect_err(abandon(&lock, bad), "invalid-token", &format!("abandon {bad:?}"))?;
        }
        // A token acquire-as could share with another caller: not random.
        let shared = "00000000-0000-1000-8000-000000000000";
        expect_err(acquire_as(&lock, shared, &quick()), "invalid-token", "acquire-as of a version-1 UUID")
    });

    suite.check("paths that can never be a lock are invalid-path", || {
        for name in ["", "dir.lock", "link.lock", "fifo.lock", "file/x.lock", "nul\0.lock"] {
            let lock = if name.is_empty() { String::new() } else { path(name) };
            expect_err(acquire(&lock, &quick()), "invalid-path", &format!("acquire {name:?}"))?;
            expect_err(status(&lock), "invalid-path", &format!("status {name:?}"))?;
            expect_err(
                release(&lock, "00000000-0000-4000-8000-000000000000"),
                "invalid-path",
                &format!("release {name:?}"),
            )?;
        }
        Ok(())
    });

    suite.check("paths outside the grants are outside-sandbox", || {
        for lock in [path("../outside.lock"), path("escape/x.lock"), "/nowhere/granted/x.lock".to_owned()] {
            expect_err(acquire(&lock, &quick()), "outside-sandbox", &format!("acquire {lock}"))?;
            expect_err(status(&lock), "outside-sandbox", &format!("status {lock}"))?;
        }
        Ok(())
    });

    suite.check("a missing directory is io", || {
        expect_err(acquire(&path("missing/x.lock"), &quick()), "io", "acquire in a missing directory")
    });

    suite.check("out-of-range options are invalid-options", || {
        let lock = path("options.lock");
        let hour = 3_600_000_000_000;
        let bad = [
            ("a prefix with a space", Options { prefix: "two words".into(), ..quick() }),
            ("a prefix of 65 bytes", Options { prefix: "p".repeat(65), ..quick() }),
            ("a prefix starting with -", Options { prefix: "-x".into(), ..quick() }),
            ("a verification delay over an hour", Options { verification_delay_ns: hour + 1, ..quick() }),
            ("a retry interval over an hour", Options { retry_interval_ns: hour + 1, ..quick() }),
            ("a lifetime under 0.5 s", Options { stale_after_ns: Some(100_000_000), ..quick() }),
            ("a lifetime over a day", Options { stale_after_ns: Some(24 * hour + 1_000_000_000), ..quick() }),
            ("a clock skew over a day", Options { max_clock_skew_ns: 24 * hour + 1_000_000_000, ..quick() }),
        ];
        for (what, options) in bad {
            expect_err(acquire(&lock, &options), "invalid-options", what)?;
        }
        Ok(())
    });

    suite.check("fences rise with every acquisition", || {
        let lock = path("fences.lock");
        let mut last = 0;
        for turn in 0..5 {
            let got = acquire(&lock, &quick()).map_err(show)?;
            ensure(got.fence > last, format!("turn {turn}: fence {} after {last}", got.fence))?;
            last = got.fence;
            release(&lock, &got.token).map_err(show)?;
        }
        same(&status(&lock).map_err(show)?.is_none(), &true, "free")
    });

    suite.check("a lifetime is renewed by refresh and judged stale by age", || {
        let lock = path("lifetime.lock");
        let options = Options { stale_after_ns: Some(500_000_000), ..quick() };
        let got = acquire(&lock, &options).map_err(show)?;
        refresh(&lock, &got.token).map_err(show)?;
        let renewed = status(&lock).map_err(show)?.ok_or("free while held")?;
        ensure(renewed.renewed_ns.is_some(), "renewed-ns is none after a refresh")?;
        match renewed.holder {
            Holder::Uuidlock(info) => same(&info.stale_after_ns, &Some(500_000_000), "declared lifetime")?,
            Holder::Foreign(shown) => return Err(format!("shows as foreign: {shown}")),
        }
        std::thread::sleep(Duration::from_millis(1300)); // past two lifetimes
        same(&status(&lock).map_err(show)?.ok_or("free")?.stale, &true, "stale after two silent lifetimes")?;
        // Still ours until someone breaks it: refresh and release work.
        refresh(&lock, &got.token).map_err(show)?;
        release(&lock, &got.token).map_err(show)
    });

    suite.check("a lock dead for an hour is broken by the next acquire", || {
        let lock = path("stale.lock");
        let before = status(&lock).map_err(show)?.ok_or("the fixture's stale lock is missing")?;
        same(&before.stale, &true, "the planted lock is stale")?;
        let got = acquire(&lock, &Options { timeout_ns: Some(0), ..quick() }).map_err(show)?;
        if let Some(fence) = before.fence {
            ensure(got.fence > fence, format!("fence {} after the broken holder's {fence}", got.fence))?;
        }
        release(&lock, &got.token).map_err(show)
    });

    suite.check("a guard holds until released, then answers not-owner", || {
        let lock = path("guard.lock");
        let guard = guard(&lock, &quick()).map_err(show)?;
        same(&guard.path(), &lock, "path")?;
        same(&holds(&lock, &guard.token()).map_err(show)?, &true, "the guard's token holds")?;
        same(&guard.holds().map_err(show)?, &true, "guard.holds")?;
        guard.refresh().map_err(show)?;
        let fence = guard.fence();
        same(&status(&lock).map_err(show)?.ok_or("free")?.fence, &Some(fence), "fence")?;
        guard.release().map_err(show)?;
        same(&status(&lock).map_err(show)?.is_none(), &true, "free after guard.release")?;
        same(&guard.holds().map_err(show)?, &false, "guard.holds after release")?;
        expect_err(guard.release(), "not-owner", "a second guard.release")?;
        expect_err(guard.refresh(), "not-owner", "guard.refresh after release")?;
        same(&guard.fence(), &fence, "the fence after release")?;
        // Another holder since: the old guard must not release it.
        let next = acquire(&lock, &quick()).map_err(show)?;
        expect_err(guard.release(), "not-owner", "the old guard's release")?;
        drop(guard);
        same(&holds(&lock, &next.token).map_err(show)?, &true, "dropping the old guard kept the new holder")?;
        release(&lock, &next.token).map_err(show)
    });

    suite.check("dropping a guard releases its lock", || {
        let lock = path("drop.lock");
        let token = {
            let guard = guard(&lock, &quick()).map_err(show)?;
            guard.token()
        };
        same(&holds(&lock, &token).map_err(show)?, &false, "held after the guard was dropped")?;
        same(&status(&lock).map_err(show)?.is_none(), &true, "free after the drop")?;
        // And this instance may take it again.
        let again = guard(&lock, &quick()).map_err(show)?;
        again.release().map_err(show)
    });

    suite.check("a guard whose lock was released by token is not-owner", || {
        let lock = path("guard-token.lock");
        let guard = guard(&lock, &quick()).map_err(show)?;
        release(&lock, &guard.token()).map_err(show)?;
        same(&guard.holds().map_err(show)?, &false, "guard.holds")?;
        expect_err(guard.refresh(), "not-owner", "guard.refresh")?;
        expect_err(guard.release(), "not-owner", "guard.release")
    });

    suite.check("without the queue, a lock is taken and released as with it", || {
        let lock = path("no-queue.lock");
        let got = acquire(&lock, &Options { queue: false, ..quick() }).map_err(show)?;
        expect_err(
            acquire_as(&lock, "q-0b0c6a8e-2f1d-4f5e-9a3b-7c6d5e4f3a2b", &Options { queue: false, ..quick() }),
            "already-held",
            "a second acquire",
        )?;
        release(&lock, &got.token).map_err(show)
    });

    println!("{} passed, {} failed", suite.passed, suite.failed.len());
    if suite.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Short waits: the suite's locks are its own, and never contended.
fn quick() -> Options {
    Options { verification_delay_ns: 0, retry_interval_ns: 1_000_000, timeout_ns: Some(0), ..default_options() }
}

fn guard(path: &str, options: &Options) -> Result<Guard, Error> {
    Guard::acquire(path, options)
}

#[derive(Default)]
struct Suite {
    passed: usize,
    failed: Vec<String>,
}

impl Suite {
    fn check(&mut self, name: &str, check: impl FnOnce() -> Outcome) {
        match check() {
            Ok(()) => {
                self.passed += 1;
                println!("ok {name}");
            }
            Err(why) => {
                println!("not ok {name}: {why}");
                self.failed.push(name.to_owned());
            }
        }
    }
}

/// The WIT name of an error's case.
fn case(error: &Error) -> &'static str {
    match error {
        Error::Timeout => "timeout",
        Error::NotOwner => "not-owner",
        Error::AlreadyHeld(_) => "already-held",
        Error::InvalidPath(_) => "invalid-path",
        Error::InvalidOptions(_) => "invalid-options",
        Error::InvalidToken(_) => "invalid-token",
        Error::OutsideSandbox(_) => "outside-sandbox",
        Error::Io(_) => "io",
    }
}

fn show(error: Error) -> String {
    format!("{error:?}")
}

/// `result` failed with the case `wanted`, whose message (if it has one)
/// is one line.
fn expect_err<T: std::fmt::Debug>(result: Result<T, Error>, wanted: &str, what: &str) -> Outcome {
    match result {
        Err(error) if case(&error) == wanted => match &error {
            Error::AlreadyHeld(why)
            | Error::InvalidPath(why)
            | Error::InvalidOptions(why)
            | Error::InvalidToken(why)
            | Error::OutsideSandbox(why)
            | Error::Io(why)
                if why.is_empty() || why.contains('\n') =>
            {
                Err(format!("{what}: the message is not one line: {why:?}"))
            }
            _ => Ok(()),
        },
        other => Err(format!("{what}: wanted {wanted}, got {other:?}")),
    }
}

fn same<T: PartialEq + std::fmt::Debug>(got: &T, wanted: &T, what: &str) -> Outcome {
    ensure(got == wanted, format!("{what}: got {got:?}, wanted {wanted:?}"))
}

fn ensure(condition: bool, why: impl Into<String>) -> Outcome {
    if condition {
        Ok(())
    } else {
        Err(why.into())
    }
}

fn is_uuid_v4(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    let hex_ok = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    lengths_ok && hex_ok && groups[2].starts_with('4') && groups[3].starts_with(['8', '9', 'a', 'b'])
}
