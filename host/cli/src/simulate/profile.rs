//! What the simulated share does ([`Profile`], one per bed the tests run for
//! real) and what goes wrong on it ([`Faults`]).
//!
//! Each profile is a model of a share as the beds measured it (the figures
//! are in `docs/src/shares.md`), reduced to the behaviours that matter to
//! the protocol: how long a call takes, what a client caches and for how
//! long, which steps are atomic, how files are dated, and how failures are
//! reported. The last fields are what `uuidlock doctor` names for the share
//! (the verification delay, whether lifetimes work, whether it is safe),
//! which the simulator uses unless told otherwise.

use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);

/// A share's behaviour, as a model.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    /// How long one call takes, from the client's asking to its answer
    /// (uniform between the two).
    pub latency: (Duration, Duration),
    /// Odd-numbered clients keep the attributes a path lookup found (type,
    /// size, date) this long (sshfs and NFS attribute caches). Opened
    /// files are always fresh (close-to-open).
    pub attr_cache: Duration,
    /// Odd-numbered clients keep a directory's listing this long.
    pub dir_cache: Duration,
    /// Every client keeps what a name named this long: after another client
    /// removes or replaces it, stats, opens and reads still find the old
    /// file (a *ghost*), or are answered "stale file handle" once (one
    /// handle in five, and every handle to a file moved elsewhere), as
    /// GlusterFS with its default caches does.
    pub lookup_cache: Duration,
    /// "Exists" is reported as "operation not permitted" (sftp's generic
    /// failure, as sshfs passes it on).
    pub exists_as_eperm: bool,
    /// A caching client answers an exclusive create, a mkdir or a link
    /// onto a name whose attributes it holds "exists" from that cache,
    /// never asking the server (sshfs with its `dir_cache`: the kernel's
    /// check of the name is answered by sshfs's cache; measured on the
    /// sshfs bed: `on_sshfs_a_caching_client_answers_exclusive_creates_from_its_cache`).
    pub creates_checked_in_cache: bool,
    /// Dates in whole seconds.
    pub whole_second_dates: bool,
    /// Files are dated by the writing client's clock, not the server's.
    pub dates_from_client_clock: bool,
    /// An exclusive create checks and creates in two steps a call apart,
    /// so two clients can both win it (smbnetfs).
    pub create_not_atomic: bool,
    pub hard_links: bool,
    /// A rename onto an existing name deletes that name first, a call
    /// before the rename (smbnetfs).
    pub rename_deletes_first: bool,
    /// Deleting a file another client has open fails with "busy".
    pub busy_delete: bool,
    /// The chance that a call's reply is lost after the server did the
    /// work, so that the client's retransmission is answered "exists" or
    /// "no such file" (NFS over UDP, or a reconnecting client).
    pub lost_replies: f64,
    /// A created file stays invisible to the other clients this long
    /// (rclone's write-back cache).
    pub invisible_creates: Duration,
    /// The verification delay `uuidlock doctor` names for the share.
    pub verification_delay: Duration,
    /// Whether the doctor says lifetimes work there.
    pub lifetimes: bool,
    /// The lifetime the simulated locks get: at least what the doctor asks
    /// for (three ghosts on GlusterFS).
    pub lifetime: Duration,
    /// Whether the doctor calls the share safe.
    pub safe: bool,
}

impl Profile {
    const LOCAL: Profile = Profile {
        name: "local",
        summary: "local POSIX filesystem: every step atomic, dates in nanoseconds",
        latency: (Duration::from_micros(2), Duration::from_micros(20)),
        attr_cache: Duration::ZERO,
        dir_cache: Duration::ZERO,
        lookup_cache: Duration::ZERO,
        exists_as_eperm: false,
        creates_checked_in_cache: false,
        whole_second_dates: false,
        dates_from_client_clock: false,
        create_not_atomic: false,
        hard_links: true,
        rename_deletes_first: false,
        busy_delete: false,
        lost_replies: 0.0,
        invisible_creates: Duration::ZERO,
        verification_delay: Duration::ZERO,
        lifetimes: true,
        lifetime: Duration::from_secs(1),
        safe: true,
    };

    /// Every profile, in the order `--help` lists them.
    pub const ALL: [Profile; 6] = [
        Profile::LOCAL,
        Profile {
            name: "sshfs",
            summary: "sshfs: half the clients cache attributes and listings 10 s (creates of a cached name answered from it), \"exists\" is EPERM, whole-second dates",
            latency: (Duration::from_micros(150), Duration::from_micros(400)),
            attr_cache: Duration::from_secs(10),
            dir_cache: Duration::from_secs(10),
            exists_as_eperm: true,
            creates_checked_in_cache: true,
            whole_second_dates: true,
            lifetime: Duration::from_secs(2),
            ..Profile::LOCAL
        },
        Profile {
            name: "smb",
            summary: "smbnetfs: exclusive create not atomic across clients, no hard links, rename deletes the target first, busy deletes",
            latency: (Duration::from_micros(300), Duration::from_micros(1000)),
            create_not_atomic: true,
            hard_links: false,
            rename_deletes_first: true,
            busy_delete: true,
            verification_delay: Duration::from_millis(100),
            lifetime: Duration::from_secs(2),
            ..Profile::LOCAL
        },
        Profile {
            name: "nfs",
            summary: "NFS-like: half the clients cache attributes 3 s and listings 3 s, close-to-open, 1% of replies lost",
            latency: (Duration::from_micros(200), Duration::from_micros(600)),
            attr_cache: Duration::from_secs(3),
            dir_cache: Duration::from_secs(3),
            lost_replies: 0.01,
            lifetime: Duration::from_secs(2),
            ..Profile::LOCAL
        },
        Profile {
            name: "rclone",
            summary: "rclone-like: a create stays invisible to the other clients for 2 s",
            latency: (Duration::from_micros(200), Duration::from_micros(500)),
            invisible_creates: Duration::from_secs(2),
            lifetime: Duration::from_secs(2),
            safe: false,
            ..Profile::LOCAL
        },
        Profile {
            name: "gluster",
            summary: "GlusterFS, default caches: names cached 1 s (ghosts, stale handles), dates by the writing client's clock",
            latency: (Duration::from_micros(1000), Duration::from_micros(4000)),
            lookup_cache: Duration::from_secs(1),
            dates_from_client_clock: true,
            lifetime: Duration::from_millis(3200),
            ..Profile::LOCAL
        },
    ];

    pub fn named(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name == name)
    }

    pub fn names() -> String {
        Profile::ALL.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
    }
}

/// The errors a fault can answer a call with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    Eio,
    Estale,
    Enospc,
    Ebusy,
    Eacces,
}

impl Injected {
    pub const ALL: [Injected; 5] =
        [Injected::Eio, Injected::Estale, Injected::Enospc, Injected::Ebusy, Injected::Eacces];

    pub fn name(self) -> &'static str {
        match self {
            Injected::Eio => "eio",
            Injected::Estale => "estale",
            Injected::Enospc => "enospc",
            Injected::Ebusy => "ebusy",
            Injected::Eacces => "eacces",
        }
    }
}

/// What goes wrong, each by a rate, all drawn from the run's seed. Faults
/// stop at the run's quiet point, after which liveness is checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// The chance that a call stalls (its client is stopped) before it
    /// reaches the share.
    pub stall: f64,
    /// How long a stall lasts, at most (uniform from a tenth of it).
    pub stall_for: Duration,
    /// The chance that a client is killed at a call (its instance is
    /// dropped, its files stay).
    pub kill: f64,
    /// The chance that a filesystem call fails with each error.
    pub errors: Vec<(Injected, f64)>,
    /// Steps of the server's or a client's clock, per simulated second.
    pub clock_steps: f64,
    /// How far a clock steps, at most, forward or back.
    pub step_by: Duration,
    /// How far apart the clients' clocks are, at most.
    pub skew: Duration,
    /// The disk fills up at this simulated time, until the faults stop:
    /// a write that needs a new block fails with ENOSPC (one over bytes
    /// already there, or an empty file, still works).
    pub full_disk: Option<Duration>,
}

/// The largest rate a fault may have: above it, runs are all faults.
pub const MAX_RATE: f64 = 0.5;
/// The longest stall or clock step.
pub const MAX_SPAN: Duration = Duration::from_secs(3600);

impl Faults {
    /// What `--faults default` means: every kind of fault, at rates that
    /// leave the lease contract intact (stalls and clock steps well under a
    /// lifetime; on a share without atomic creates, stalls under half the
    /// verification delay), so that any violation is a bug.
    pub fn default_for(profile: &Profile) -> Faults {
        let lifetime = if profile.lifetimes { profile.lifetime } else { Duration::from_secs(2) };
        let mut errors: Vec<(Injected, f64)> = Injected::ALL.iter().map(|&e| (e, 0.0005)).collect();
        if !profile.lifetimes {
            // Without lifetimes a lock whose release failed stays: an
            // injected failure of a release would wedge the run by design.
            errors.clear();
        }
        // Where exclusive create is not atomic, only the verification delay
        // protects, and only if no client pauses inside a create for longer
        // (the seed's rule): stalls stay under half the delay there.
        let stall_for = if profile.create_not_atomic { profile.verification_delay / 2 } else { lifetime / 4 };
        Faults {
            stall: 0.002,
            stall_for,
            kill: if profile.lifetimes { 0.0005 } else { 0.0 },
            errors,
            clock_steps: if profile.lifetimes { 0.02 } else { 0.0 },
            step_by: lifetime / 4,
            skew: if profile.dates_from_client_clock { MS * 500 } else { Duration::ZERO },
            full_disk: None,
        }
    }

    /// Parses `none`, `default`, or a comma-separated list of `NAME=VALUE`
    /// (on top of `default` when it starts with `default,`).
    pub fn parse(text: &str, profile: &Profile) -> Result<Faults, String> {
        let mut faults = Faults::default();
        for (i, item) in text.split(',').map(str::trim).enumerate() {
            match item {
                "none" if i == 0 => continue,
                "default" if i == 0 => {
                    faults = Faults::default_for(profile);
                    continue;
                }
                _ => {}
            }
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("fault {item:?} is not NAME=VALUE (or none, or default first)"))?;
            let rate = || -> Result<f64, String> {
                let rate: f64 = value.parse().map_err(|_| format!("{name}={value}: not a number"))?;
                if !(0.0..=MAX_RATE).contains(&rate) {
                    return Err(format!("{name}={value}: a rate must be from 0 to {MAX_RATE}"));
                }
                Ok(rate)
            };
            let span = || -> Result<Duration, String> {
                let secs: f64 = value.parse().map_err(|_| format!("{name}={value}: not a number of seconds"))?;
                if !(0.0..=MAX_SPAN.as_secs_f64()).contains(&secs) {
                    return Err(format!("{name}={value}: must be from 0 to {} seconds", MAX_SPAN.as_secs()));
                }
                Ok(Duration::from_secs_f64(secs))
            };
            match name {
                "stall" => faults.stall = rate()?,
                "stall-for" => faults.stall_for = span()?,
                "kill" => faults.kill = rate()?,
                "errors" => {
                    let rate = rate()?;
                    faults.errors = Injected::ALL.iter().map(|&e| (e, rate)).collect();
                }
                "clock-steps" => {
                    let rate: f64 = value.parse().map_err(|_| format!("{name}={value}: not a number"))?;
                    if !(0.0..=10.0).contains(&rate) {
                        return Err(format!("{name}={value}: steps per simulated second must be from 0 to 10"));
                    }
                    faults.clock_steps = rate;
                }
                "step-by" => faults.step_by = span()?,
                "skew" => faults.skew = span()?,
                "full-disk" => faults.full_disk = Some(span()?),
                _ => match Injected::ALL.iter().find(|e| e.name() == name) {
                    Some(&error) => {
                        let rate = rate()?;
                        faults.errors.retain(|(e, _)| *e != error);
                        faults.errors.push((error, rate));
                    }
                    None => {
                        return Err(format!(
                            "unknown fault {name:?}; known: stall, stall-for, kill, errors, eio, estale, enospc, \
                             ebusy, eacces, clock-steps, step-by, skew, full-disk"
                        ))
                    }
                },
            }
        }
        if faults.stall > 0.0 && faults.stall_for.is_zero() {
            faults.stall_for = US * 1000 * 250;
        }
        Ok(faults)
    }

    pub fn any(&self) -> bool {
        self.stall > 0.0
            || self.kill > 0.0
            || self.errors.iter().any(|(_, r)| *r > 0.0)
            || self.clock_steps > 0.0
            || !self.skew.is_zero()
            || self.full_disk.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_refuse_nonsense() {
        let local = Profile::named("local").unwrap();
        assert_eq!(Faults::parse("none", &local).unwrap(), Faults::default());
        let f = Faults::parse("default,kill=0.01,eio=0.1", &local).unwrap();
        assert_eq!(f.kill, 0.01);
        assert!(f.errors.contains(&(Injected::Eio, 0.1)));
        assert!(Faults::parse("kill=2", &local).unwrap_err().contains("from 0 to 0.5"));
        assert!(Faults::parse("gremlins=0.1", &local).unwrap_err().contains("unknown fault"));
        assert!(Faults::parse("kill", &local).unwrap_err().contains("NAME=VALUE"));
        assert!(Faults::parse("stall-for=1e9", &local).is_err());
        assert!(Profile::named("nfs").is_some() && Profile::named("ext4").is_none());
    }
}
