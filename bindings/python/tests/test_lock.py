"""The synchronous API: acquire, release, holds, status, fences, errors."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

import uuidlock
from uuidlock import _errors, _runtime

from helpers import tree

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_acquire_holds_status_release(lockdir: Path) -> None:
    path = lockdir / "job.lock"
    lock = uuidlock.Lock(path, prefix="tester-", verification_delay=0)
    assert lock.token is None and lock.fence is None and not lock.holds()
    assert lock.acquire() is lock
    assert re.fullmatch("tester-" + UUID4, lock.token or "")
    assert isinstance(lock.fence, int) and 0 < lock.fence < 2**53
    assert lock.holds() and lock.is_locked
    # The lock file is uuidlock's format, holding our token.
    assert path.read_text() == f"1\nuuidlock/1?token={lock.token}\n"
    st = uuidlock.status(path)
    assert st is not None
    assert (st.token, st.prefix, st.foreign, st.stale_after, st.stale, st.renewed) == (
        lock.token, "tester-", None, None, False, None)
    assert st.fence == lock.fence and 0 <= st.age < 60 and st.holder == lock.token
    assert lock.status() == st or lock.status().token == st.token
    lock.release()
    assert not path.exists() and not lock.holds() and not lock.is_locked
    assert uuidlock.status(path) is None
    # Only the fencing counter stays beside the lock.
    assert tree(lockdir) == [f"job.lock.fence/{st.fence}"]


def test_context_manager_and_rising_fences(lockdir: Path) -> None:
    path = lockdir / "ctx.lock"
    fences = []
    for _ in range(3):
        with uuidlock.Lock(path, verification_delay=0) as lock:
            assert lock.holds()
            fences.append(lock.fence)
        assert not path.exists()
    assert fences == sorted(fences) and len(set(fences)) == 3


def test_a_busy_lock_times_out_naming_the_holder(lockdir: Path) -> None:
    path = lockdir / "busy.lock"
    holder = uuidlock.Lock(path, verification_delay=0).acquire()
    other = uuidlock.Lock(path, verification_delay=0, retry_interval=0.05)
    with pytest.raises(uuidlock.Timeout) as caught:
        other.acquire(timeout=0)
    assert str(path) in str(caught.value) and holder.token in str(caught.value)
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, uuidlock.LockError)
    start = time.monotonic()
    with pytest.raises(uuidlock.Timeout):
        other.acquire(timeout=0.4)
    assert 0.35 <= time.monotonic() - start < 5
    assert holder.holds() and not other.holds()
    holder.release()
    other.acquire(timeout=0)
    other.release()


def test_a_second_acquire_through_the_same_lock_is_already_held(lockdir: Path) -> None:
    lock = uuidlock.Lock(lockdir / "twice.lock", verification_delay=0).acquire()
    with pytest.raises(uuidlock.AlreadyHeld) as caught:
        lock.acquire(timeout=10)
    assert "already held" in str(caught.value) and lock.token in str(caught.value)
    assert lock.holds()
    lock.release()


def test_releasing_twice_is_not_owner_and_deletes_nothing(lockdir: Path) -> None:
    path = lockdir / "twice.lock"
    first = uuidlock.Lock(path, verification_delay=0).acquire()
    first.release()
    second = uuidlock.Lock(path, verification_delay=0).acquire()
    with pytest.raises(uuidlock.NotOwner) as caught:
        first.release()
    assert str(path) in str(caught.value) and "nothing was deleted" in str(caught.value)
    assert path.read_text() == f"1\nuuidlock/1?token={second.token}\n"
    assert second.holds() and not first.holds()
    with pytest.raises(uuidlock.NotOwner):
        first.refresh()
    second.release()
    with pytest.raises(uuidlock.NotOwner):
        second.release()
    with pytest.raises(uuidlock.NotOwner):
        uuidlock.Lock(path).release()  # never acquired


def test_a_missing_directory_is_an_io_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "job.lock"
    for call in (lambda: uuidlock.Lock(path, timeout=0).acquire(), lambda: uuidlock.status(path)):
        with pytest.raises(uuidlock.LockIOError) as caught:
            call()
        assert "does not exist" in str(caught.value) and "create it first" in str(caught.value)
        assert isinstance(caught.value, OSError)
    assert not (tmp_path / "missing").exists()


def test_a_directory_at_the_lock_path_is_an_invalid_path(lockdir: Path) -> None:
    (lockdir / "sub").mkdir()
    with pytest.raises(uuidlock.InvalidPath) as caught:
        uuidlock.Lock(lockdir / "sub", timeout=0).acquire()
    assert "is a directory" in str(caught.value) and "sub" in str(caught.value)
    assert os.listdir(lockdir / "sub") == []
    # A file where a directory should be.
    (lockdir / "plain").write_text("x")
    with pytest.raises(uuidlock.InvalidPath):
        uuidlock.Lock(lockdir / "plain" / "x.lock", timeout=0).acquire()
    with pytest.raises(uuidlock.InvalidPath):
        uuidlock.Lock(str(lockdir) + "/", timeout=0).acquire()


def test_a_fifo_at_the_lock_path_is_refused_without_waiting(lockdir: Path) -> None:
    fifo = lockdir / "fifo.lock"
    os.mkfifo(fifo)
    start = time.monotonic()
    for call in (lambda: uuidlock.Lock(fifo, timeout=0).acquire(), lambda: uuidlock.status(fifo),
                 lambda: uuidlock.Lock(fifo, timeout=5).acquire()):
        with pytest.raises(uuidlock.InvalidPath) as caught:
            call()
        assert "FIFO" in str(caught.value)
    assert time.monotonic() - start < 5
    assert fifo.exists() and tree(lockdir) == ["fifo.lock"]


def test_a_symlink_at_the_lock_path_is_refused(lockdir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (lockdir / "link.lock").symlink_to(outside)
    with pytest.raises(uuidlock.InvalidPath) as caught:
        uuidlock.Lock(lockdir / "link.lock", timeout=0).acquire()
    assert "link" in str(caught.value)
    assert outside.read_text() == "secret"


def test_a_read_only_directory_is_an_io_error(lockdir: Path) -> None:
    from helpers import run_python

    code = ("import sys, uuidlock\n"
            "try:\n    uuidlock.Lock(sys.argv[1], timeout=0, verification_delay=0).acquire()\n"
            "except uuidlock.LockIOError as e:\n    print('LockIOError:', e)\n")
    target = lockdir / "ro.lock"
    if os.geteuid() == 0:
        # root writes anywhere: make the directory read-only for real, by a
        # read-only bind mount in a mount namespace of the child's own.
        import subprocess
        import sys

        done = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && exec "$2" -c "$3" "$4"',
                               "sh", str(lockdir), sys.executable, code, str(target)],
                              capture_output=True, text=True, timeout=60)
    else:
        lockdir.chmod(0o555)
        try:
            done = run_python(code, str(target))
        finally:
            lockdir.chmod(0o755)
    assert done.stdout.startswith("LockIOError:"), done.stdout + done.stderr
    assert str(target) in done.stdout and len(done.stdout.strip().splitlines()) == 1
    assert tree(lockdir) == []


@pytest.mark.parametrize("kwargs, error", [
    (dict(timeout="1"), TypeError),
    (dict(timeout=True), TypeError),
    (dict(timeout=-1), ValueError),
    (dict(timeout=float("nan")), ValueError),
    (dict(timeout=float("inf")), ValueError),
    (dict(timeout=2**64), ValueError),  # would wrap in a u64 of nanoseconds
    (dict(timeout=18446744074), ValueError),
    (dict(verification_delay=-0.1), ValueError),
    (dict(verification_delay=3601), ValueError),
    (dict(verification_delay=None), TypeError),
    (dict(retry_interval=2**70), ValueError),
    (dict(retry_interval=[1]), TypeError),
    (dict(stale_after=0.1), ValueError),
    (dict(stale_after=86401), ValueError),
    (dict(stale_after=1, verification_delay=0.6), ValueError),
    (dict(prefix="has space"), ValueError),
    (dict(prefix="-dash"), ValueError),
    (dict(prefix="ci&job-"), ValueError),
    (dict(prefix="x" * 65), ValueError),
    (dict(prefix="é"), ValueError),
    (dict(prefix=7), TypeError),
    (dict(queue=1), TypeError),
    (dict(max_clock_skew=86401), ValueError),
])
def test_bad_options_are_refused_in_python(lockdir: Path, kwargs: dict, error: type) -> None:
    with pytest.raises(error) as caught:
        uuidlock.Lock(lockdir / "x.lock", **kwargs)
    assert "\n" not in str(caught.value)
    if error is ValueError:
        assert isinstance(caught.value, uuidlock.InvalidOptions)
    assert tree(lockdir) == []


def test_the_largest_values_pass_unwrapped(lockdir: Path) -> None:
    lock = uuidlock.Lock(lockdir / "big.lock", timeout=18446744073, verification_delay=3600, retry_interval=3600,
                         stale_after=86400, prefix="p" * 64, max_clock_skew=86400)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-5)
    with pytest.raises(TypeError):
        lock.acquire(timeout="5")
    fast = uuidlock.Lock(lockdir / "big.lock", verification_delay=0, stale_after=86400, prefix="p" * 64)
    with fast:
        st = fast.status()
        assert st is not None and st.stale_after == 86400.0 and st.prefix == "p" * 64


@pytest.mark.parametrize("path, error", [
    (b"/tmp/x.lock", TypeError),
    (123, TypeError),
    (None, TypeError),
    ("", uuidlock.InvalidPath),
    ("a\0b.lock", uuidlock.InvalidPath),
    ("/x.lock", uuidlock.InvalidPath),  # would grant /
    ("\udcff.lock", uuidlock.InvalidPath),
])
def test_bad_paths(path: object, error: type) -> None:
    with pytest.raises(error) as caught:
        uuidlock.Lock(path, timeout=0).acquire()  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_a_relative_path_and_a_symlinked_directory_name_the_same_lock(lockdir: Path, monkeypatch) -> None:
    (lockdir / "real").mkdir()
    (lockdir / "alias").symlink_to(lockdir / "real")
    monkeypatch.chdir(lockdir)
    with uuidlock.Lock("alias/x.lock", verification_delay=0) as lock:
        assert (lockdir / "real" / "x.lock").exists()
        st = uuidlock.status(lockdir / "real" / "x.lock")
        assert st is not None and st.token == lock.token
        with pytest.raises(uuidlock.Timeout):
            uuidlock.Lock("real/x.lock").acquire(timeout=0)


def test_errors_map_every_wit_case() -> None:
    class V:
        def __init__(self, tag: str, payload: object = None) -> None:
            self.tag, self.payload = tag, payload

    cases = {"timeout": uuidlock.Timeout, "not-owner": uuidlock.NotOwner, "already-held": uuidlock.AlreadyHeld,
             "invalid-path": uuidlock.InvalidPath, "invalid-options": uuidlock.InvalidOptions,
             "invalid-token": uuidlock.InvalidToken, "outside-sandbox": uuidlock.OutsideSandbox,
             "io": uuidlock.LockIOError}
    for tag, cls in cases.items():
        payload = None if tag in ("timeout", "not-owner") else f"{tag} message naming /d/x.lock"
        error = _errors.from_wit(V(tag, payload), "/d/x.lock", token="t", timeout=1.5)
        assert type(error) is cls and isinstance(error, uuidlock.LockError) and error.case == tag
        assert "/d/x.lock" in str(error) and error.path == "/d/x.lock"


def test_outside_the_sandbox_from_the_component(lockdir: Path) -> None:
    # The package grants the lock's own directory and names one file in it,
    # so no public call reaches outside; the component's own answer is
    # converted all the same.
    result, _ = _runtime.sandbox(str(lockdir.resolve())).call("status", "/etc/passwd")
    error = _errors.from_wit(result, "/etc/passwd")
    assert isinstance(error, uuidlock.OutsideSandbox) and "not inside any directory granted" in str(error)


def test_an_instance_sees_only_the_lock_directory(lockdir: Path) -> None:
    instance = _runtime.Instance(str(lockdir.resolve()))
    result = instance.call("status", str(lockdir.resolve() / "none.lock"))
    assert result is None
    result = instance.call("status", str(lockdir.resolve().parent / "sibling.lock"))
    assert getattr(result, "tag", None) == "outside-sandbox"  # only its directory is granted


def test_threads_exclude_each_other(lockdir: Path) -> None:
    path = lockdir / "threads.lock"
    counter = lockdir / "counter"
    counter.write_text("0")
    inside = []
    errors = []

    def work() -> None:
        try:
            for _ in range(10):
                with uuidlock.Lock(path, verification_delay=0, retry_interval=0.002):
                    inside.append(1)
                    assert len(inside) == 1
                    value = int(counter.read_text())
                    time.sleep(0.001)
                    counter.write_text(str(value + 1))
                    inside.pop()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert counter.read_text() == "40"


def test_an_invalid_token_from_python_is_refused(lockdir: Path) -> None:
    lock = uuidlock.compat.UUIDFileLock(lockdir / "tok.lock")
    lock.lock_id = "not-a-uuid"
    with pytest.raises(uuidlock.InvalidToken) as caught:
        lock.acquire()
    assert "not-a-uuid" in str(caught.value)
    lock.lock_id = f"{uuid.uuid1()}"  # a UUID, but not a random one
    with pytest.raises(uuidlock.InvalidToken):
        lock.acquire()
    assert tree(lockdir) == []


@pytest.mark.parametrize("fast", [True, False])
def test_fast_and_generic_calls_agree(lockdir: Path, monkeypatch, fast: bool) -> None:
    monkeypatch.setattr(_runtime, "FAST_CALLS", fast)
    directory = str(lockdir.resolve())
    instance = _runtime.Instance(directory)
    is_fast = not hasattr(instance.funcs["status"], "func")  # functools.partial has .func
    assert is_fast == fast
    from uuidlock._lock import options_record, status_from_wit
    from uuidlock._options import Settings

    settings = Settings.check(timeout=0, stale_after=2.5, verification_delay=0, retry_interval=0.1, prefix="f-",
                              queue=False, max_clock_skew=0.0)
    path = directory + "/agree.lock"
    token = f"f-{uuid.uuid4()}"
    acquired = instance.call("acquire-as", path, token, options_record(settings, 0))
    assert getattr(acquired, "token") == token and getattr(acquired, "fence") > 0
    again = instance.call("acquire-as", path, f"f-{uuid.uuid4()}", options_record(settings, 0))
    assert again.tag == "already-held" and token in again.payload
    st = status_from_wit(instance.call("status", path))
    assert st is not None and (st.token, st.prefix, st.stale_after) == (token, "f-", 2.5)
    assert instance.call("holds", path, token) is True
    assert instance.call("refresh", path, token) is None
    assert instance.call("release", path, token) is None
    assert instance.call("release", path, token).tag == "not-owner"
    assert instance.call("status", path) is None
    bad = instance.call("abandon", path, "not-a-token")
    assert bad.tag == "invalid-token" and "not-a-token" in bad.payload
