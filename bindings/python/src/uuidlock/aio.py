"""The asyncio twin of uuidlock.Lock.

Every guest call runs on a thread (ctypes releases the GIL while wasm runs),
so waiting for a lock never blocks the event loop. ``acquire`` uses
``acquire-as`` with a token made here, so that a cancelled (or otherwise
interrupted) acquire is undone: the waiting call is stopped (its engine's
epoch is incremented; it traps at its next wake-up, within the retry
interval, or 250 ms in the queue of waiters), then ``abandon(path, token)``
releases the lock if it had been taken and removes the token's staging file,
heartbeat and queue entry. The cancellation goes on once that is done.

    async with uuidlock.aio.Lock("/srv/locks/job.lock", timeout=30) as lock:
        ...  # lock.fence with every write
"""

from __future__ import annotations

import asyncio
import functools
from types import TracebackType
from typing import Any, Callable, List, Optional, Type, TypeVar

from . import _runtime
from ._lock import DEFAULT, Core, SharedHolder, Status, _timeout_ns, describe, options_record
from ._options import SHARED, PathArg, Settings

__all__ = ["Lock", "status", "holders"]

T = TypeVar("T")


async def _to_thread(func: Callable[..., T], *args: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(func, *args))


async def _finish(future: "asyncio.Future[Any]") -> None:
    """Awaits ``future`` through further cancellations."""
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except BaseException:
            break
    if not future.cancelled():
        future.exception()  # retrieved: the caller has dealt with it


class Lock:
    """As uuidlock.Lock, with coroutines: ``await lock.acquire()``,
    ``await lock.release()``, ``async with Lock(path) as lock``. Same
    arguments (``shared=True`` for a reader, ``slots=N`` for a semaphore),
    same exceptions."""

    def __init__(self, path: PathArg, *, timeout: Optional[float] = None, stale_after: Optional[float] = None,
                 verification_delay: float = 0.1, retry_interval: float = 0.1, prefix: str = "",
                 queue: bool = True, max_clock_skew: float = 0.0, shared: bool = False,
                 slots: Optional[int] = None) -> None:
        settings = Settings.check(timeout=timeout, stale_after=stale_after, verification_delay=verification_delay,
                                  retry_interval=retry_interval, prefix=prefix, queue=queue,
                                  max_clock_skew=max_clock_skew, shared=shared, slots=slots)
        self._core = Core(path, settings)

    @property
    def path(self) -> str:
        return self._core.given

    @property
    def token(self) -> Optional[str]:
        """The owner token of the latest acquisition (kept after release)."""
        return self._core.token

    @property
    def fence(self) -> Optional[int]:
        """The fencing number of the latest acquisition."""
        return self._core.fence

    @property
    def slot(self) -> Optional[int]:
        """A semaphore holder's slot (``slots=N``) of the latest acquisition,
        from 0 to N - 1; None in the other modes."""
        return self._core.slot

    @property
    def shared(self) -> bool:
        """Whether the lock is taken shared (a reader)."""
        return self._core.settings.mode == SHARED

    @property
    def slots(self) -> Optional[int]:
        """The semaphore's number of slots; None unless ``slots=`` was given."""
        return self._core.settings.slots

    @property
    def is_locked(self) -> bool:
        return self._core.held

    async def acquire(self, timeout: Optional[float] = DEFAULT) -> "Lock":
        """Takes the lock, waiting up to ``timeout`` seconds (default: the
        lock's) without blocking the event loop. Cancelling it leaves nothing
        behind. Raises as uuidlock.Lock.acquire."""
        core = self._core
        timeout_ns = _timeout_ns(core.settings.timeout_ns, timeout)
        beginning = asyncio.ensure_future(_to_thread(core.begin, None))
        try:
            token = await asyncio.shield(beginning)
        except BaseException:
            await _finish(beginning)
            if not beginning.cancelled() and beginning.exception() is None:
                core.busy = False  # it had begun: this acquire is over
            raise
        try:
            target = await _to_thread(core.target)
            start = functools.partial(core.sandbox().start, "acquire-as", target.path, token,
                                      options_record(core.settings, timeout_ns), remember=target.path)
            starting = asyncio.ensure_future(_to_thread(start))
            call: Optional[_runtime.Call] = None
            waiting: "Optional[asyncio.Future[Any]]" = None
            try:
                call = await asyncio.shield(starting)
                waiting = asyncio.wrap_future(call.future)
                await asyncio.shield(waiting)
            except BaseException:
                # Cancelled (or interrupted): stop the guest, wait for it, undo.
                await _finish(starting)
                if call is None and not starting.cancelled() and starting.exception() is None:
                    call = starting.result()
                if call is not None:
                    call.interrupt()
                    await _finish(waiting if waiting is not None else asyncio.wrap_future(call.future))
                    await _finish(asyncio.ensure_future(_to_thread(core.abandon, token)))
                raise
            result, instance = waiting.result()
            if _runtime.is_error(result):
                raise await _to_thread(core.failed, result, timeout_ns, token)
            core.taken(token, result, instance)
        finally:
            core.busy = False
        return self

    async def release(self) -> None:
        """Deletes the lock file if, and only if, it holds this lock's token;
        NotOwner (nothing deleted) otherwise."""
        await _to_thread(self._core.release)

    async def refresh(self) -> None:
        """Renews the lock's lifetime; NotOwner when it is no longer ours."""
        await _to_thread(self._core.refresh)

    async def holds(self) -> bool:
        return await _to_thread(self._core.holds)

    async def status(self) -> Optional[Status]:
        return await _to_thread(self._core.status)

    async def holders(self) -> List[SharedHolder]:
        """The lock's shared holders (readers, a semaphore's holders), by slot."""
        return await _to_thread(self._core.holders)

    async def __aenter__(self) -> "Lock":
        return await self.acquire()

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                        tb: Optional[TracebackType]) -> None:
        await self.release()

    def __repr__(self) -> str:
        return f"<uuidlock.aio.Lock {self.path!r} {describe(self._core)}>"


async def status(path: PathArg) -> Optional[Status]:
    """As uuidlock.status, on a thread."""
    from ._lock import status as sync_status

    return await _to_thread(sync_status, path)


async def holders(path: PathArg) -> List[SharedHolder]:
    """As uuidlock.holders, on a thread."""
    from ._lock import holders as sync_holders

    return await _to_thread(sync_holders, path)
