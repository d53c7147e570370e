//! Leases through the component: a guard that renews its lock in the
//! background, keeps contenders out past many lifetimes, reports its loss,
//! and releases when dropped.

use std::sync::mpsc;
use std::time::Duration;

use crate::common::Sandbox;
use uuidlock_host::{LockError, Lost, Options};

fn fast() -> Options {
    Options { verification_delay: Duration::ZERO, retry_interval: Duration::from_millis(1), ..Options::default() }
}

fn lifetime(ms: u64) -> Options {
    Options { stale_after: Some(Duration::from_millis(ms)), ..fast() }
}

// A 600 ms lease held for four lifetimes, without any call from its owner:
// a contender that would break an unrenewed lock after one lifetime times
// out, and the lease has renewed and still holds.
#[test]
fn a_lease_renews_itself_past_many_lifetimes() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let lease = sandbox.locker().lease(&path, &lifetime(600)).unwrap();
    let contender = sandbox.locker();
    let patient = Options { timeout: Some(Duration::from_millis(2400)), ..fast() };
    assert_eq!(contender.acquire(&path, &patient).err(), Some(LockError::Timeout));
    assert_eq!(lease.lost(), None);
    assert!(lease.renewals() >= 3, "{} renewals in four lifetimes", lease.renewals());
    assert!(contender.holds(&path, lease.token().as_str()).unwrap());
    lease.release().unwrap();
    assert!(!path.exists());
}

// The lock taken away under the lease (deleted by hand, then taken by
// another): the next renewal finds it, the callback hears it, waiters wake,
// and the lease's release deletes nothing of the new holder's.
#[test]
fn a_lost_lease_is_reported() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let lease = sandbox.locker().lease(&path, &lifetime(600)).unwrap();
    let (told, heard) = mpsc::channel();
    lease.on_lost(move |why| told.send(why.clone()).unwrap());
    std::fs::remove_file(&path).unwrap();
    let thief = sandbox.locker().acquire(&path, &fast()).unwrap();
    assert_eq!(lease.wait_lost(Duration::from_secs(10)), Some(Lost::NotOwner));
    assert_eq!(heard.recv_timeout(Duration::from_secs(1)), Ok(Lost::NotOwner));
    assert!(thief.fence() > lease.fence());
    // A callback added after the loss runs at once.
    let (told, heard) = mpsc::channel();
    lease.on_lost(move |why| told.send(why.clone()).unwrap());
    assert_eq!(heard.try_recv(), Ok(Lost::NotOwner));
    assert_eq!(lease.release(), Err(LockError::NotOwner));
    assert!(sandbox.locker().holds(&path, thief.token().as_str()).unwrap());
}

// Dropping a lease stops its renewals and releases the lock: nothing is
// left beside it but the fence counter.
#[test]
fn dropping_a_lease_releases_and_leaves_nothing() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let lease = sandbox.locker().lease(&path, &lifetime(600)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(lease.renewals() >= 1);
    drop(lease);
    let left: Vec<String> =
        std::fs::read_dir(sandbox.locks()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(left, ["job.lock.fence"]);
}

// Without a lifetime in the options, a lease declares the default one.
#[test]
fn a_lease_always_has_a_lifetime() {
    let sandbox = Sandbox::new();
    let path = sandbox.lock("job.lock");
    let lease = sandbox.locker().lease(&path, &fast()).unwrap();
    assert_eq!(lease.lifetime(), uuidlock_host::lease::DEFAULT_LIFETIME);
    let Some(uuidlock_host::Status { marker: uuidlock_host::Marker::Uuidlock(held), .. }) =
        sandbox.locker().status(&path).unwrap()
    else {
        panic!()
    };
    assert_eq!(held.stale_after, Some(uuidlock_host::lease::DEFAULT_LIFETIME));
}
