"""uuidlock.compat.UUIDFileLock, the drop-in for uuid-filelock 1.4's class.

Their adapted tests run in uuid_filelock_1_4/; here their unmodified file
runs too, to show which of its assertions uuidlock's format changes."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uuidlock
from uuidlock.compat import LockTimeoutException, UUIDFileLock

HERE = Path(__file__).parent


def test_their_unmodified_tests_differ_only_in_the_file_format() -> None:
    # test_default_params (7 s) passes unmodified in the adapted copy.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not default_params",
                           str(HERE / "uuid_filelock_1_4" / "original_test_lock.py")],
                          capture_output=True, text=True, timeout=300, cwd=HERE.parent)
    out = done.stdout
    assert re.search(r"\b2 failed, 1 passed, 1 deselected\b", out), out
    assert "FAILED" in out and "original_test_lock.py::test_two_locks" in out
    assert "original_test_lock.py::test_context_manager" in out
    # Both fail on reading the lock file's bytes, which are uuidlock's format:
    # its first line is "1", and the token follows "uuidlock/1?token=".
    assert "'1\\n'.startswith" in out
    assert "+ uuidlock/1?token=" in out
    assert len(re.findall(r"^E\s+AssertionError", out, re.M)) == 2


def test_the_same_surface_as_uuid_filelock(lockdir: Path) -> None:
    assert UUIDFileLock.default_verification_delay == 0.1 and UUIDFileLock.default_retry_interval == 0.1
    lock = UUIDFileLock(lockdir / "c.lock", prefix="job-")
    assert lock.lock_file == str(lockdir / "c.lock") and lock.timeout_interval == -1
    assert re.fullmatch(r"job-[0-9a-f-]{36}", lock.lock_id)
    assert (lock.verification_delay, lock.retry_interval) == (0.1, 0.1)
    assert not lock.check_lock()
    lock.release()  # not held: does nothing, as there
    with lock as same:
        assert same is lock and lock.check_lock() and lock.fence
        assert uuidlock.status(lockdir / "c.lock").token == lock.lock_id
    assert not lock.check_lock() and not (lockdir / "c.lock").exists()
    # Acquired again with the same lock_id, as uuid-filelock does.
    lock.acquire()
    assert lock.check_lock()
    lock.release()
    missing = UUIDFileLock(lockdir / "none" / "x.lock")
    assert not missing.check_lock()
    missing.release()


def test_timeouts_and_the_exception(lockdir: Path) -> None:
    path = lockdir / "t.lock"
    holder = UUIDFileLock(path, verification_delay=0)
    holder.acquire()
    waiter = UUIDFileLock(path, verification_delay=0, retry_interval=0.05, timeout_interval=0.5)
    start = time.monotonic()
    with pytest.raises(LockTimeoutException) as caught:
        waiter.acquire()
    assert 0.45 < time.monotonic() - start < 5
    assert str(caught.value) == "acquiring lock timed out"
    assert isinstance(caught.value, uuidlock.Timeout) and isinstance(caught.value, TimeoutError)
    with pytest.raises(uuidlock.AlreadyHeld):  # uuid-filelock would wait for itself
        holder.acquire()
    # Changed attributes apply at the next acquire, as there.
    waiter.timeout_interval = 0
    with pytest.raises(LockTimeoutException):
        waiter.acquire()
    holder.release()
    waiter.acquire()
    assert waiter.check_lock() and not holder.check_lock()
    waiter.release()


def test_uuidlock_and_compat_exclude_each_other(lockdir: Path) -> None:
    path = lockdir / "mixed.lock"
    with uuidlock.Lock(path, verification_delay=0):
        with pytest.raises(LockTimeoutException):
            UUIDFileLock(path, timeout_interval=0).acquire()
    with UUIDFileLock(path, verification_delay=0):
        with pytest.raises(uuidlock.Timeout):
            uuidlock.Lock(path).acquire(timeout=0)


def test_prefixes_uuidlock_cannot_carry_are_refused_at_once(lockdir: Path) -> None:
    with pytest.raises(ValueError):
        UUIDFileLock(lockdir / "p.lock", prefix="has space ")
