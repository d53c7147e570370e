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
