"""The asyncio twin: waiting never blocks the loop; cancellation leaves nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import uuidlock
import uuidlock.aio

from helpers import tree


def cli_acquire(cli: str, path: Path) -> str:
    done = subprocess.run([cli, "acquire", str(path), "--timeout", "0", "--verification-delay", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_waiting_does_not_block_the_event_loop(lockdir: Path, cli: str) -> None:
    path = lockdir / "aio.lock"
    token = cli_acquire(cli, path)
    # The native CLI, another process, releases after 2 s.
    releaser = subprocess.Popen(["sh", "-c", 'sleep 2 && exec "$0" release "$1" "$2"', cli, str(path), token])

    async def main() -> tuple:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        lock = uuidlock.aio.Lock(path, verification_delay=0, retry_interval=0.05)
        start = time.monotonic()
        await lock.acquire()
        waited = time.monotonic() - start
        held = await lock.holds()
        stop.set()
        await task
        await lock.release()
        return ticks, waited, held, lock.token

    ticks, waited, held, mine = asyncio.run(main())
    assert releaser.wait(10) == 0
    assert 1.5 <= waited < 10
    assert held and mine != token
    # 10 ms ticks for ~2 s: the loop kept running all along.
    assert ticks >= 100, ticks
    assert not path.exists()


def test_async_with_and_errors(lockdir: Path) -> None:
    path = lockdir / "ctx.lock"

    async def main() -> None:
        async with uuidlock.aio.Lock(path, verification_delay=0) as lock:
            assert await lock.holds() and lock.fence
            st = await lock.status()
            assert st is not None and st.token == lock.token
            with pytest.raises(uuidlock.Timeout):
                await uuidlock.aio.Lock(path).acquire(timeout=0)
            with pytest.raises(uuidlock.AlreadyHeld):
                await lock.acquire()
        assert not await lock.holds()
        with pytest.raises(uuidlock.NotOwner):
            await lock.release()
        with pytest.raises(uuidlock.LockIOError):
            await uuidlock.aio.Lock(lockdir / "none" / "x.lock").acquire()
        with pytest.raises(ValueError):
            uuidlock.aio.Lock(path, timeout=-1)

    asyncio.run(main())


def test_cancelling_a_waiting_acquire_leaves_nothing_behind(lockdir: Path, cli: str) -> None:
    path = lockdir / "cancel.lock"
    token = cli_acquire(cli, path)
    # What a waiter that gives up leaves: the queue's counters, nothing of its own.
    with pytest.raises(uuidlock.Timeout):
        uuidlock.Lock(path, verification_delay=0, retry_interval=0.05).acquire(timeout=0.3)
    baseline = tree(lockdir)

    async def main() -> tuple:
        lock = uuidlock.aio.Lock(path, verification_delay=0, retry_interval=0.05, prefix="cancelled-")
        task = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0.5)
        during = tree(lockdir)
        task.cancel()
        start = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during, time.monotonic() - start, lock.is_locked

    during, took, locked = asyncio.run(main())
    assert len(during) > len(baseline)  # it was waiting in the queue
    assert took < 2 and not locked
    after = tree(lockdir)
    assert [f for f in after if not f.startswith("cancel.lock.queue/tickets/")] == \
        [f for f in baseline if not f.startswith("cancel.lock.queue/tickets/")]
    assert not any(name.endswith((".new", ".beat", ".claim")) for name in after)
    st = uuidlock.status(path)
    assert st is not None and st.token == token  # the holder is untouched
    assert subprocess.run([cli, "release", str(path), token]).returncode == 0
    # Nothing in the queue holds up the next acquire.
    start = time.monotonic()
    with uuidlock.Lock(path, verification_delay=0, timeout=1):
        assert time.monotonic() - start < 0.5


def test_a_cancel_that_races_the_acquire_releases_what_it_took(lockdir: Path) -> None:
    path = lockdir / "race.lock"

    async def main() -> None:
        for _ in range(5):
            lock = uuidlock.aio.Lock(path, verification_delay=0.05)
            task = asyncio.create_task(lock.acquire())
            await asyncio.sleep(0.02)  # inside the verification delay: the lock file is ours already
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert uuidlock.status(path) is None

    asyncio.run(main())
    assert not path.exists()
    assert [f for f in tree(lockdir) if not f.startswith("race.lock.fence/")] == []


def test_ctrl_c_interrupts_a_blocking_acquire_and_undoes_it(lockdir: Path, cli: str) -> None:
    path = lockdir / "sigint.lock"
    token = cli_acquire(cli, path)
    code = ("import sys, uuidlock\n"
            "lock = uuidlock.Lock(sys.argv[1], verification_delay=0, retry_interval=0.05)\n"
            "print('waiting', flush=True)\n"
            "try:\n    lock.acquire()\n"
            "except KeyboardInterrupt:\n    print('interrupted', flush=True)\n")
    # SIGINT as a terminal's job has it: a test run started in the
    # background (as CI may be) ignores it, and Python keeps a SIGINT ignored
    # at its start ignored, so the child would never see the Ctrl-C.
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout is not None and child.stdout.readline().strip() == "waiting"
    # Ctrl-C once the child waits in line (its entry in the queue), not
    # while it is still starting.
    queue = lockdir / "sigint.lock.queue"
    deadline = time.monotonic() + 30
    while not (queue.is_dir() and any(entry.name.isdigit() for entry in queue.iterdir())):
        assert time.monotonic() < deadline, "the child never lined up"
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(child.pid, signal.SIGINT)
    out, _ = child.communicate(timeout=10)
    assert out.strip() == "interrupted" and child.returncode == 0
    leftovers = [f for f in tree(lockdir) if f.startswith("sigint.lock.queue/") and
                 not f.startswith("sigint.lock.queue/tickets/") and f != "sigint.lock.queue/served"]
    assert leftovers == []
    st = uuidlock.status(path)
    assert st is not None and st.token == token
    assert subprocess.run([cli, "release", str(path), token]).returncode == 0


def test_cancelling_at_any_point_leaves_the_lock_usable(lockdir: Path, cli: str) -> None:
    path = lockdir / "points.lock"
    token = cli_acquire(cli, path)

    async def main() -> None:
        lock = uuidlock.aio.Lock(path, verification_delay=0, retry_interval=0.02)
        for delay in (0, 0.001, 0.005, 0.02, 0.1, 0.3):
            task = asyncio.create_task(lock.acquire())
            await asyncio.sleep(delay)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not lock.is_locked
        entries = [f for f in tree(lockdir) if f.startswith("points.lock.queue/")
                   and not f.startswith("points.lock.queue/tickets/") and f != "points.lock.queue/served"]
        assert entries == []
        done = await asyncio.create_subprocess_exec(cli, "release", str(path), token)
        assert await done.wait() == 0
        # The same object acquires afterwards: no acquire is left "under way".
        await lock.acquire(timeout=2)
        assert await lock.holds()
        await lock.release()

    asyncio.run(main())
    assert not path.exists()
