"""Shared locks (readers and writers) and N-slot semaphores: ``shared=True``,
``slots=N``, ``.slot``, ``holders()``; with the native CLI as the other
process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional

import pytest

import uuidlock
import uuidlock.aio
from uuidlock import _runtime

from helpers import tree

#: Deterministic and quick: no verification delay, short retries.
FAST = dict(verification_delay=0, retry_interval=0.01)


def reader(path: Path, **kwargs: object) -> uuidlock.Lock:
    return uuidlock.Lock(path, shared=True, **FAST, **kwargs)  # type: ignore[arg-type]


def wait_until(what, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_readers_hold_together_and_a_writer_times_out_beside_them(lockdir: Path) -> None:
    path = lockdir / "rw.lock"
    first = reader(path).acquire(timeout=0)
    second = reader(path).acquire(timeout=0)
    assert first.shared and first.is_locked and second.is_locked
    assert first.holds() and second.holds()
    assert first.slot is None and second.slot is None  # slots are a semaphore's
    # Readers are entries beside the lock file, which is free between acquires.
    assert uuidlock.status(path) is None and not path.exists()
    found = uuidlock.holders(path)
    assert [h.slot for h in found] == [0, 1]
    assert {h.token for h in found} == {first.token, second.token}
    assert all(h.prefix == "" and h.foreign is None and not h.stale and h.stale_after is None for h in found)
    assert all(0 <= h.age < 60 and h.holder == h.token for h in found)
    assert first.holders() == found or [h.token for h in first.holders()] == [h.token for h in found]

    writer = uuidlock.Lock(path, **FAST)
    start = time.monotonic()
    with pytest.raises(uuidlock.Timeout) as caught:
        writer.acquire(timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 10
    assert "2 shared holders" in str(caught.value) and str(path) in str(caught.value)
    assert not writer.is_locked and first.holds() and second.holds()

    first.release()
    with pytest.raises(uuidlock.Timeout):
        writer.acquire(timeout=0)  # one reader is still in
    second.release()
    assert uuidlock.holders(path) == []
    with writer:
        assert writer.slot is None and not writer.shared
        # And a reader waits for the writer.
        with pytest.raises(uuidlock.Timeout) as caught:
            reader(path).acquire(timeout=0.2)
        assert writer.token in str(caught.value)
        assert uuidlock.holders(path) == []


def test_a_waiting_writer_goes_before_readers_that_arrive_after_it(lockdir: Path) -> None:
    path = lockdir / "fair.lock"
    early = reader(path).acquire(timeout=0)
    writer = uuidlock.Lock(path, **FAST)
    done: List[Optional[BaseException]] = []

    def write() -> None:
        try:
            writer.acquire(timeout=30)
            done.append(None)
        except BaseException as e:  # reported below
            done.append(e)

    thread = threading.Thread(target=write)
    thread.start()
    # The waiting writer holds the lock file while it waits for the reader.
    wait_until(lambda: uuidlock.status(path) is not None)
    late = reader(path)
    with pytest.raises(uuidlock.Timeout):
        late.acquire(timeout=0.2)
    assert not done
    early.release()
    thread.join(30)
    assert done == [None] and writer.holds()
    # A reader's fence lies between the writers' around it.
    assert writer.fence is not None and early.fence is not None and early.fence < writer.fence
    writer.release()
    late.acquire(timeout=0)
    assert late.fence is not None and late.fence > writer.fence
    late.release()


def test_slots_give_distinct_slots_and_the_next_holder_waits(lockdir: Path) -> None:
    path = lockdir / "pool.lock"
    a = uuidlock.Lock(path, slots=2, **FAST).acquire(timeout=0)
    b = uuidlock.Lock(path, slots=2, **FAST).acquire(timeout=0)
    assert {a.slot, b.slot} == {0, 1} and a.slots == 2 and not a.shared
    assert [(h.slot, h.token) for h in uuidlock.holders(path)] == sorted([(a.slot, a.token), (b.slot, b.token)])
    third = uuidlock.Lock(path, slots=2, **FAST)
    with pytest.raises(uuidlock.Timeout) as caught:
        third.acquire(timeout=0.3)
    assert "2 shared holders" in str(caught.value)
    assert third.slot is None and not third.is_locked
    freed = a.slot
    a.release()
    third.acquire(timeout=0)
    assert third.slot == freed
    assert {h.slot for h in uuidlock.holders(path)} == {0, 1}
    assert re.search(rf"held \(slot {freed} of 2\), token {third.token}", repr(third))
    third.release()
    b.release()
    assert uuidlock.holders(path) == []
    # The slot stays readable after release, as token and fence do.
    assert b.slot in (0, 1) and not b.is_locked


def test_one_slot_is_a_lock_with_slot_zero(lockdir: Path) -> None:
    path = lockdir / "one.lock"
    with uuidlock.Lock(path, slots=1, **FAST) as only:
        assert only.slot == 0
        with pytest.raises(uuidlock.Timeout):
            uuidlock.Lock(path, slots=1, **FAST).acquire(timeout=0)
    with uuidlock.Lock(path, slots=1, **FAST) as again:
        assert again.slot == 0


@pytest.mark.parametrize("kwargs, error", [
    (dict(shared=True, slots=2), uuidlock.InvalidOptions),
    (dict(shared=True, slots=0), uuidlock.InvalidOptions),  # the conflict is named first
    (dict(slots=0), uuidlock.InvalidOptions),
    (dict(slots=1025), uuidlock.InvalidOptions),
    (dict(slots=-1), uuidlock.InvalidOptions),
    (dict(slots=2**32 + 2), uuidlock.InvalidOptions),  # would wrap in a u32
    (dict(slots="2"), TypeError),
    (dict(slots=2.0), TypeError),
    (dict(slots=True), TypeError),
    (dict(shared=1), TypeError),
    (dict(shared=None), TypeError),
])
def test_bad_modes_are_refused_in_python(lockdir: Path, kwargs: dict, error: type) -> None:
    for make in (uuidlock.Lock, uuidlock.aio.Lock, lambda p, **k: uuidlock.Lease(p, stale_after=5, **k)):
        with pytest.raises(error) as caught:
            make(lockdir / "bad.lock", **kwargs)
        message = str(caught.value)
        assert "\n" not in message
        if error is uuidlock.InvalidOptions:
            assert isinstance(caught.value, ValueError)
            if kwargs.get("shared") is True:
                assert "shared=True" in message and "slots=" in message, message
            else:
                assert "from 1 to 1024" in message and repr(kwargs["slots"]) in message, message
    assert tree(lockdir) == []


def test_the_largest_semaphore_and_explicit_defaults(lockdir: Path) -> None:
    path = lockdir / "big.lock"
    with uuidlock.Lock(path, slots=uuidlock.MAX_SLOTS, **FAST) as big:
        assert big.slot == 0 and big.slots == 1024
    with uuidlock.Lock(path, shared=False, slots=None, **FAST) as plain:
        assert plain.slot is None and plain.slots is None and not plain.shared
        st = plain.status()
        assert st is not None and st.token == plain.token


def test_a_shared_lock_taken_twice_through_one_lock_is_already_held(lockdir: Path) -> None:
    lock = reader(lockdir / "twice.lock").acquire(timeout=0)
    with pytest.raises(uuidlock.AlreadyHeld):
        lock.acquire(timeout=5)
    lock.release()
    with pytest.raises(uuidlock.NotOwner):
        lock.release()  # released already: nothing deleted
    lock.acquire(timeout=0)
    lock.release()


def test_a_dead_reader_is_broken_by_a_writer_and_told(lockdir: Path) -> None:
    path = lockdir / "dead.lock"
    dead = reader(path, stale_after=0.5).acquire(timeout=0)
    (entry,) = uuidlock.holders(path)
    assert entry.token == dead.token and entry.stale_after == 0.5
    time.sleep(1.2)  # two lifetimes and more without a renewal
    assert uuidlock.holders(path)[0].stale
    with uuidlock.Lock(path, **FAST, timeout=10) as writer:
        assert writer.fence is not None and dead.fence is not None and writer.fence > dead.fence
        assert uuidlock.holders(path) == []
        with pytest.raises(uuidlock.NotOwner):
            dead.refresh()
    with pytest.raises(uuidlock.NotOwner):
        dead.release()


def test_a_lease_renews_a_semaphore_slot(lockdir: Path) -> None:
    path = lockdir / "lease.lock"
    with uuidlock.Lease(path, slots=2, stale_after=0.6, verification_delay=0) as lease:
        assert lease.slot == 0 and lease.lock.slots == 2
        time.sleep(1.5)  # 2.5 lifetimes: without renewals it would be broken
        assert lease.renewals >= 3 and lease.lost is None and lease.holds()
        (entry,) = lease.holders()
        assert entry.token == lease.token and entry.renewed is not None and entry.renewed < 0.6
    assert uuidlock.holders(path) == []
    # Lock.lease() keeps the mode.
    lease = reader(path).lease()
    try:
        assert lease.lock.shared and lease.slot is None and lease.holders()[0].token == lease.token
    finally:
        lease.release()


def test_async_readers_and_semaphores(lockdir: Path) -> None:
    path, pool = lockdir / "aio.lock", lockdir / "aio-pool.lock"

    async def main() -> None:
        async with uuidlock.aio.Lock(path, shared=True, **FAST) as r1, \
                uuidlock.aio.Lock(path, shared=True, **FAST) as r2:
            assert await r1.holds() and await r2.holds() and r1.shared
            assert [h.token for h in await uuidlock.aio.holders(path)] == [r1.token, r2.token]
            assert [h.token for h in await r1.holders()] == [r1.token, r2.token]
            with pytest.raises(uuidlock.Timeout):
                await uuidlock.aio.Lock(path, **FAST).acquire(timeout=0.2)
        held = [uuidlock.aio.Lock(pool, slots=2, **FAST) for _ in range(3)]
        # At once: each takes the lock file for a moment to register, so the
        # other may wait for it (timeout=0 would try only once).
        await asyncio.gather(held[0].acquire(timeout=10), held[1].acquire(timeout=10))
        assert {held[0].slot, held[1].slot} == {0, 1}
        with pytest.raises(uuidlock.Timeout):
            await held[2].acquire(timeout=0.2)
        # The third waits until a slot frees, without blocking the loop.
        waiting = asyncio.ensure_future(held[2].acquire(timeout=30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await held[1].release()
        await waiting
        assert held[2].slot == held[1].slot
        for lock in (held[0], held[2]):
            await lock.release()
        assert await uuidlock.aio.holders(pool) == []

    asyncio.run(main())


@pytest.mark.parametrize("fast", [True, False])
def test_the_mode_crosses_by_fast_and_generic_calls(lockdir: Path, monkeypatch, fast: bool) -> None:
    monkeypatch.setattr(_runtime, "FAST_CALLS", fast)
    directory = str(lockdir.resolve())
    instance = _runtime.Instance(directory)
    from uuidlock._lock import holders_from_wit, options_record
    from uuidlock._options import Settings

    path = directory + "/modes.lock"
    tokens = []
    for _ in range(2):
        settings = Settings.check(timeout=0, stale_after=None, verification_delay=0, retry_interval=0.1,
                                  prefix="m-", queue=True, max_clock_skew=0.0, slots=3)
        token = f"m-{uuid.uuid4()}"
        acquired = _runtime.Instance(directory).call("acquire-as", path, token, options_record(settings, 0))
        assert getattr(acquired, "token") == token
        tokens.append((getattr(acquired, "slot"), token))
    assert sorted(tokens) == [(0, tokens[0][1]), (1, tokens[1][1])]
    found = holders_from_wit(instance.call("holders", path))
    assert [(h.slot, h.token, h.prefix) for h in found] == [(0, tokens[0][1], "m-"), (1, tokens[1][1], "m-")]
    for _slot, token in tokens:
        assert instance.call("release", path, token) is None
    assert instance.call("holders", path) == []
    shared = Settings.check(timeout=0, stale_after=None, verification_delay=0, retry_interval=0.1, prefix="",
                            queue=True, max_clock_skew=0.0, shared=True)
    token = str(uuid.uuid4())
    acquired = instance.call("acquire-as", path, token, options_record(shared, 0))
    assert getattr(acquired, "slot") is None and getattr(acquired, "fence") > 0
    assert [h.token for h in holders_from_wit(instance.call("holders", path))] == [token]
    assert instance.call("release", path, token) is None


# -- with the native CLI, another process


def cli_run(cli: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=60)


def test_python_readers_and_the_cli_share_and_exclude(lockdir: Path, cli: str) -> None:
    path = lockdir / "cli.lock"
    mine = reader(path, prefix="py-").acquire(timeout=0)
    # The CLI sees the Python reader, holds beside it as a reader, and is
    # refused as a writer.
    done = cli_run(cli, "status", str(path))
    assert done.returncode == 0, done.stderr
    assert "shared, slot 0" in done.stderr and mine.token in done.stderr, done.stderr
    assert cli_run(cli, "holds", str(path), mine.token or "").returncode == 0
    theirs = cli_run(cli, "acquire", str(path), "--shared", "--timeout", "0", "--verification-delay", "0")
    assert theirs.returncode == 0, theirs.stderr
    token = theirs.stdout.strip()
    assert [(h.slot, h.token) for h in uuidlock.holders(path)] == [(0, mine.token), (1, token)]
    writer = cli_run(cli, "acquire", str(path), "--timeout", "0.2", "--verification-delay", "0")
    assert writer.returncode == 1 and "2 shared holders" in writer.stderr, writer.stderr
    # The CLI releases its reader; a Python writer then waits only for ours.
    assert cli_run(cli, "release", str(path), token).returncode == 0
    with pytest.raises(uuidlock.Timeout):
        uuidlock.Lock(path, **FAST).acquire(timeout=0)
    mine.release()
    assert "free" in cli_run(cli, "status", str(path)).stderr
    # A CLI reader keeps a Python writer out; the CLI releases a Python reader by token.
    token = cli_run(cli, "acquire", str(path), "--shared", "--timeout", "0", "--verification-delay", "0").stdout.strip()
    with pytest.raises(uuidlock.Timeout):
        uuidlock.Lock(path, **FAST).acquire(timeout=0.2)
    again = reader(path).acquire(timeout=0)
    assert cli_run(cli, "release", str(path), again.token or "").returncode == 0
    assert not again.holds()
    assert cli_run(cli, "release", str(path), token).returncode == 0
    with uuidlock.Lock(path, timeout=0, **FAST) as writer:
        assert writer.holds()


def test_a_semaphore_shared_with_the_cli(lockdir: Path, cli: str) -> None:
    path = lockdir / "cli-pool.lock"
    done = cli_run(cli, "acquire", str(path), "--slots", "2", "--timeout", "0", "--verification-delay", "0")
    assert done.returncode == 0, done.stderr
    token, slot = done.stdout.split()
    assert slot == "0"
    mine = uuidlock.Lock(path, slots=2, **FAST).acquire(timeout=0)
    assert mine.slot == 1
    full = cli_run(cli, "acquire", str(path), "--slots", "2", "--timeout", "0", "--verification-delay", "0")
    assert full.returncode == 1, full.stderr
    with pytest.raises(uuidlock.Timeout):
        uuidlock.Lock(path, slots=2, **FAST).acquire(timeout=0)
    assert cli_run(cli, "release", str(path), token).returncode == 0
    with uuidlock.Lock(path, slots=2, **FAST) as second:
        assert second.slot == 0
        listed = cli_run(cli, "status", str(path)).stderr
        assert f"slot 0) is held by {second.token}" in listed and f"slot 1) is held by {mine.token}" in listed
    mine.release()
    assert uuidlock.holders(path) == []
