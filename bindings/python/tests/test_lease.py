"""Lifetimes, renewals, and leases that report their loss."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

import uuidlock


def test_a_lock_gone_its_lifetime_is_broken_and_its_holder_told(lockdir: Path) -> None:
    path = lockdir / "dead.lock"
    dead = uuidlock.Lock(path, stale_after=0.5, verification_delay=0).acquire()
    st = dead.status()
    assert st is not None and st.stale_after == 0.5 and not st.stale
    dead.refresh()  # renewed once, then never again: the holder "dies"
    st = dead.status()
    assert st is not None and st.renewed is not None and st.renewed < 0.5
    time.sleep(1.2)  # two lifetimes and more
    st = uuidlock.status(path)
    assert st is not None and st.stale and st.token == dead.token
    successor = uuidlock.Lock(path, verification_delay=0, timeout=5).acquire()
    assert successor.fence > dead.fence
    with pytest.raises(uuidlock.NotOwner):
        dead.refresh()
    with pytest.raises(uuidlock.NotOwner):
        dead.release()
    assert successor.holds() and not dead.holds()
    successor.release()


def test_a_live_lock_with_a_lifetime_is_not_broken(lockdir: Path) -> None:
    path = lockdir / "live.lock"
    holder = uuidlock.Lock(path, stale_after=0.6, verification_delay=0).acquire()
    other = uuidlock.Lock(path, verification_delay=0, retry_interval=0.05)
    for _ in range(6):  # 1.5 s: more than two lifetimes, renewed every 0.25 s
        time.sleep(0.25)
        holder.refresh()
        with pytest.raises(uuidlock.Timeout):
            other.acquire(timeout=0)
    assert holder.holds()
    holder.release()


def test_a_lease_renews_itself(lockdir: Path) -> None:
    path = lockdir / "lease.lock"
    with uuidlock.Lease(path, stale_after=0.6, verification_delay=0) as lease:
        assert lease.lifetime == 0.6 and lease.token and lease.fence
        time.sleep(1.5)  # 2.5 lifetimes: without renewals it would be broken
        assert lease.renewals >= 4 and lease.lost is None
        with pytest.raises(uuidlock.Timeout):
            uuidlock.Lock(path, verification_delay=0).acquire(timeout=0.3)
        assert lease.holds()
        st = lease.status()
        assert st is not None and st.renewed is not None and st.renewed < 0.6
    assert not path.exists()


def test_a_broken_lease_is_reported(lockdir: Path) -> None:
    path = lockdir / "broken.lock"
    told: List[uuidlock.Lost] = []
    called = threading.Event()

    def on_lost(lost: uuidlock.Lost) -> None:
        told.append(lost)
        called.set()

    lease = uuidlock.Lease(path, stale_after=0.6, verification_delay=0, on_lost=on_lost).acquire()
    time.sleep(0.3)
    assert lease.lost is None
    path.unlink()  # broken by hand
    lost = lease.wait_lost(3)
    assert lost is not None and lost.kind == "not-owner" and str(path) in lost.message
    assert called.wait(1) and told == [lost]
    late: List[uuidlock.Lost] = []
    lease.on_lost(late.append)  # already lost: called at once
    assert late == [lost] and lease.lost == lost
    with pytest.raises(uuidlock.NotOwner):
        lease.release()


def test_a_lease_taken_over_by_a_successor_is_reported(lockdir: Path, cli: str) -> None:
    path = lockdir / "taken.lock"
    lease = uuidlock.Lock(path, stale_after=0.6, verification_delay=0).lease()
    assert lease.lock.is_locked and lease.lifetime == 0.6
    # Another process that knows the token releases it, and another lock takes it.
    done = subprocess.run([cli, "release", str(path), lease.token], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    successor = uuidlock.Lock(path, verification_delay=0).acquire()
    lost = lease.wait_lost(3)
    assert lost is not None and lost.kind == "not-owner"
    assert successor.holds()
    with pytest.raises(uuidlock.NotOwner):
        lease.release()
    assert successor.holds()
    successor.release()


def test_lease_options_are_checked(lockdir: Path) -> None:
    with pytest.raises(ValueError):
        uuidlock.Lease(lockdir / "x.lock", stale_after=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        uuidlock.Lease(lockdir / "x.lock", stale_after=0.1)
    with pytest.raises(TypeError):
        uuidlock.Lease(lockdir / "x.lock", stale_after=1, on_lost="print")  # type: ignore[arg-type]
    held = uuidlock.Lock(lockdir / "y.lock", verification_delay=0).acquire()
    with pytest.raises(ValueError):
        held.lease()  # held without a lifetime
    held.release()
