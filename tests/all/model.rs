//! A property test: random sequences of try-acquire, release, refresh, holds
//! and status from three independent handles (lockers, each its own party),
//! through the component, against a model of the lock. Every call's result
//! must match the model, and the lock file exists exactly when the model
//! says someone holds the lock: at most one holder, always.

use std::time::Duration;

use crate::common::Sandbox;
use proptest::prelude::*;
use uuidlock_host::{LockError, Locker, Marker, Options};

const HANDLES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    /// Try once, with or without a (long) lifetime.
    TryAcquire {
        handle: usize,
        lifetime: bool,
    },
    /// Release with the handle's latest token (or one it never had).
    Release {
        handle: usize,
    },
    Refresh {
        handle: usize,
    },
    Holds {
        handle: usize,
    },
    Status,
}

fn op() -> impl Strategy<Value = Op> {
    let handle = 0..HANDLES;
    prop_oneof![
        3 => (handle.clone(), any::<bool>()).prop_map(|(handle, lifetime)| Op::TryAcquire { handle, lifetime }),
        3 => handle.clone().prop_map(|handle| Op::Release { handle }),
        1 => handle.clone().prop_map(|handle| Op::Refresh { handle }),
        1 => handle.prop_map(|handle| Op::Holds { handle }),
        1 => Just(Op::Status),
    ]
}

/// The model: who holds the lock, and with which token.
#[derive(Default)]
struct Model {
    holder: Option<(usize, String)>,
    /// The last acquisition's fencing number.
    fence: u64,
}

const NEVER_ISSUED: &str = "00000000-0000-4000-8000-000000000000";

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_call_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let sandbox = Sandbox::new();
        let path = sandbox.lock("model.lock");
        let lockers: Vec<Locker> = (0..HANDLES).map(|_| sandbox.locker()).collect();
        let mut tokens: Vec<Option<String>> = vec![None; HANDLES];
        let mut model = Model::default();
        let once = Options { timeout: Some(Duration::ZERO), verification_delay: Duration::ZERO, ..Options::default() };

        for op in ops {
            match op {
                Op::TryAcquire { handle, lifetime } => {
                    let options = Options { stale_after: lifetime.then_some(Duration::from_secs(600)), ..once.clone() };
                    let result = lockers[handle].acquire(&path, &options).map(|guard| guard.into_acquired());
                    match &model.holder {
                        None => {
                            let acquired = result.expect("a free lock is acquired");
                            // Every acquisition's fence is larger than the last.
                            prop_assert!(acquired.fence > model.fence, "{} after {}", acquired.fence, model.fence);
                            model.fence = acquired.fence;
                            let token = acquired.token.into_string();
                            tokens[handle] = Some(token.clone());
                            model.holder = Some((handle, token));
                        }
                        Some((holder, _)) if *holder == handle => {
                            prop_assert!(matches!(result, Err(LockError::AlreadyHeld(_))), "{result:?}");
                        }
                        Some(_) => prop_assert_eq!(result, Err(LockError::Timeout)),
                    }
                }
                Op::Release { handle } => {
                    let token = tokens[handle].clone().unwrap_or_else(|| NEVER_ISSUED.into());
                    let result = lockers[handle].release(&path, &token);
                    if model.holder.as_ref() == Some(&(handle, token)) {
                        prop_assert_eq!(result, Ok(()));
                        model.holder = None;
                    } else {
                        prop_assert_eq!(result, Err(LockError::NotOwner));
                    }
                }
                Op::Refresh { handle } => {
                    let token = tokens[handle].clone().unwrap_or_else(|| NEVER_ISSUED.into());
                    let ours = model.holder.as_ref() == Some(&(handle, token.clone()));
                    let result = lockers[handle].refresh(&path, &token);
                    prop_assert_eq!(result, if ours { Ok(()) } else { Err(LockError::NotOwner) });
                }
                Op::Holds { handle } => {
                    let token = tokens[handle].clone().unwrap_or_else(|| NEVER_ISSUED.into());
                    let ours = model.holder.as_ref() == Some(&(handle, token.clone()));
                    prop_assert_eq!(lockers[handle].holds(&path, &token), Ok(ours));
                }
                Op::Status => {
                    let seen = lockers[0].status(&path).unwrap().map(|status| match status.marker {
                        Marker::Uuidlock(held) => held.token.into_string(),
                        Marker::Foreign(shown) => format!("foreign {shown}"),
                    });
                    prop_assert_eq!(seen, model.holder.as_ref().map(|(_, token)| token.clone()));
                }
            }
            // At most one holder, and the file says who.
            prop_assert_eq!(path.exists(), model.holder.is_some());
            // Nothing left beside the lock but the fence counter and the
            // holder's heartbeat: no staging files, no claims, no stale beats.
            let holder_beat = model.holder.as_ref().map(|(_, token)| format!("model.lock.{}.beat", &token[token.len() - 36..]));
            let others: Vec<String> = std::fs::read_dir(sandbox.locks())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name != "model.lock.fence" && Some(name) != holder_beat.as_ref())
                .collect();
            prop_assert_eq!(others.len(), usize::from(model.holder.is_some()), "{:?}", others);
        }
    }
}

/// The modes of the lock ([`uuidlock_host::Mode`]), in the same shape: four
/// handles try to take two paths, one used by readers and writers, one by a
/// semaphore of two slots and writers, and release, refresh and ask them.
/// The model says who may hold beside whom; every call and what is on disk
/// (the lock file, the entries in `<PATH>.shared/`, `holders`) must match it.
mod modes {
    use super::*;
    use uuidlock_host::Mode;

    const HANDLES: usize = 4;
    const SLOTS: u32 = 2;

    #[derive(Clone, Debug)]
    enum Op {
        /// Try once on path `on`: exclusively, or in the path's shared mode.
        TryAcquire {
            handle: usize,
            on: usize,
            exclusive: bool,
            lifetime: bool,
        },
        Release {
            handle: usize,
            on: usize,
        },
        Refresh {
            handle: usize,
            on: usize,
        },
        Holds {
            handle: usize,
            on: usize,
        },
        Holders {
            on: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let (handle, on) = (0..HANDLES, 0..2usize);
        prop_oneof![
            4 => (handle.clone(), on.clone(), any::<bool>(), any::<bool>())
                .prop_map(|(handle, on, exclusive, lifetime)| Op::TryAcquire { handle, on, exclusive, lifetime }),
            3 => (handle.clone(), on.clone()).prop_map(|(handle, on)| Op::Release { handle, on }),
            1 => (handle.clone(), on.clone()).prop_map(|(handle, on)| Op::Refresh { handle, on }),
            1 => (handle, on.clone()).prop_map(|(handle, on)| Op::Holds { handle, on }),
            1 => on.prop_map(|on| Op::Holders { on }),
        ]
    }

    /// One path: its writer, its shared holders (handle, token, slot) and
    /// the last fence.
    #[derive(Default)]
    struct Path {
        writer: Option<(usize, String)>,
        shared: Vec<(usize, String, u32)>,
        fence: u64,
    }

    impl Path {
        fn holds(&self, handle: usize, token: &str) -> bool {
            self.writer.as_ref().is_some_and(|(h, t)| *h == handle && t == token)
                || self.shared.iter().any(|(h, t, _)| *h == handle && t == token)
        }

        fn held_by(&self, handle: usize) -> bool {
            self.writer.as_ref().is_some_and(|(h, _)| *h == handle) || self.shared.iter().any(|(h, _, _)| *h == handle)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn every_call_in_every_mode_matches_the_model(ops in prop::collection::vec(op(), 1..40)) {
            let sandbox = Sandbox::new();
            let paths = [sandbox.lock("rw.lock"), sandbox.lock("sem.lock")];
            let modes = [Mode::Shared, Mode::Slots(SLOTS)];
            let lockers: Vec<Locker> = (0..HANDLES).map(|_| sandbox.locker()).collect();
            let mut tokens: Vec<[Option<String>; 2]> = vec![[None, None]; HANDLES];
            let mut model = [Path::default(), Path::default()];
            let once = Options { timeout: Some(Duration::ZERO), verification_delay: Duration::ZERO, ..Options::default() };
            let token_of = |tokens: &Vec<[Option<String>; 2]>, handle: usize, on: usize| {
                tokens[handle][on].clone().unwrap_or_else(|| NEVER_ISSUED.into())
            };

            for op in ops {
                match op {
                    Op::TryAcquire { handle, on, exclusive, lifetime } => {
                        let mode = if exclusive { Mode::Exclusive } else { modes[on] };
                        let options = Options {
                            stale_after: lifetime.then_some(Duration::from_secs(600)),
                            mode,
                            ..once.clone()
                        };
                        let result = lockers[handle].acquire(&paths[on], &options).map(|guard| guard.into_acquired());
                        let path = &mut model[on];
                        let free_slot = (0..).find(|slot| path.shared.iter().all(|(_, _, taken)| taken != slot)).unwrap();
                        let admitted = match mode {
                            _ if path.held_by(handle) => {
                                prop_assert!(matches!(result, Err(LockError::AlreadyHeld(_))), "{result:?}");
                                continue;
                            }
                            Mode::Exclusive => path.writer.is_none() && path.shared.is_empty(),
                            Mode::Shared => path.writer.is_none(),
                            Mode::Slots(n) => path.writer.is_none() && path.shared.len() < n as usize,
                        };
                        if !admitted {
                            prop_assert_eq!(result.map(|_| ()), Err(LockError::Timeout));
                            continue;
                        }
                        let acquired = result.expect("admitted by the model");
                        prop_assert!(acquired.fence > path.fence, "{} after {}", acquired.fence, path.fence);
                        path.fence = acquired.fence;
                        let token = acquired.token.into_string();
                        tokens[handle][on] = Some(token.clone());
                        match mode {
                            Mode::Exclusive => {
                                prop_assert_eq!(acquired.slot, None);
                                path.writer = Some((handle, token));
                            }
                            Mode::Shared => {
                                prop_assert_eq!(acquired.slot, None);
                                path.shared.push((handle, token, free_slot));
                            }
                            Mode::Slots(_) => {
                                prop_assert_eq!(acquired.slot, Some(free_slot));
                                path.shared.push((handle, token, free_slot));
                            }
                        }
                    }
                    Op::Release { handle, on } => {
                        let token = token_of(&tokens, handle, on);
                        let result = lockers[handle].release(&paths[on], &token);
                        let path = &mut model[on];
                        if path.holds(handle, &token) {
                            prop_assert_eq!(result, Ok(()));
                            path.writer = path.writer.take().filter(|(_, t)| *t != token);
                            path.shared.retain(|(_, t, _)| *t != token);
                        } else {
                            prop_assert_eq!(result, Err(LockError::NotOwner));
                        }
                    }
                    Op::Refresh { handle, on } => {
                        let token = token_of(&tokens, handle, on);
                        let ours = model[on].holds(handle, &token);
                        let result = lockers[handle].refresh(&paths[on], &token);
                        prop_assert_eq!(result, if ours { Ok(()) } else { Err(LockError::NotOwner) });
                    }
                    Op::Holds { handle, on } => {
                        let token = token_of(&tokens, handle, on);
                        prop_assert_eq!(lockers[handle].holds(&paths[on], &token), Ok(model[on].holds(handle, &token)));
                    }
                    Op::Holders { on } => {
                        let mut seen: Vec<(u32, String)> = lockers[0]
                            .holders(&paths[on])
                            .unwrap()
                            .into_iter()
                            .map(|(slot, status)| match status.marker {
                                Marker::Uuidlock(held) => (slot, held.token.into_string()),
                                Marker::Foreign(shown) => (slot, format!("foreign {shown}")),
                            })
                            .collect();
                        seen.sort();
                        let mut expected: Vec<(u32, String)> =
                            model[on].shared.iter().map(|(_, token, slot)| (*slot, token.clone())).collect();
                        expected.sort();
                        prop_assert_eq!(seen, expected);
                    }
                }
                for (on, path) in model.iter().enumerate() {
                    // The lock file exists exactly while a writer holds it
                    // (a reader lets it go before returning), and there is
                    // an entry for every shared holder, at its slot.
                    prop_assert_eq!(paths[on].exists(), path.writer.is_some());
                    prop_assert!(path.writer.is_none() || path.shared.is_empty());
                    if let Mode::Slots(n) = modes[on] {
                        prop_assert!(path.shared.len() <= n as usize);
                    }
                    let entries = paths[on].with_extension("lock.shared");
                    for (_, _, slot) in &path.shared {
                        prop_assert!(entries.join(slot.to_string()).is_file(), "no entry at slot {}", slot);
                    }
                }
            }
        }
    }
}
