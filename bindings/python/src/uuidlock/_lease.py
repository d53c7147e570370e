"""Leases: a held lock renewed in the background, as host/src/lease.rs does
for Rust.

A Lease renews its lock every third of the lifetime on a thread of its own.
It is *lost* when a renewal answers not-owner (the lock was broken while this
process was stalled, or someone released it), or when no renewal has
succeeded for a whole lifetime (the filesystem is out of reach, so contenders
may break the lock). A lost lease cannot be won back: a renewal never
rewrites the lock file, so a late one only learns of the loss. Carry the
fencing number (``fence``) with the work done under the lease.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Type

from ._errors import InvalidOptions, LockError, NotOwner
from ._lock import DEFAULT_LEASE_LIFETIME, Lock, SharedHolder, Status
from ._options import PathArg

__all__ = ["Lease", "Lost", "RENEWALS_PER_LIFETIME"]

#: Renewals per lifetime: a third of it between renewals leaves two more
#: chances before contenders may break the lock.
RENEWALS_PER_LIFETIME = 3


@dataclass(frozen=True)
class Lost:
    """Why a lease was lost: ``kind`` is "not-owner" (a renewal found the lock
    no longer held by this lease: broken as stale, or released) or
    "unreachable" (no renewal succeeded for a whole lifetime; ``message`` is
    the last error)."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


LostCallback = Callable[[Lost], Any]


class _Shared:
    """What the renewal thread and the lease share (never the lease itself,
    so that a lease that is dropped stops its thread)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.lost: Optional[Lost] = None
        self.stop = False
        self.callbacks: List[LostCallback] = []
        self.renewals = 0

    def lose(self, lost: Lost) -> None:
        with self.cond:
            if self.lost is not None:
                return
            self.lost = lost
            callbacks, self.callbacks = self.callbacks, []
            self.cond.notify_all()
        for callback in callbacks:
            try:
                callback(lost)
            except Exception:  # a callback's failure must not stop the others
                import traceback

                traceback.print_exc()


def _renew(lock: Lock, lifetime: float, shared: _Shared) -> None:
    interval = lifetime / RENEWALS_PER_LIFETIME
    last_renewed = time.monotonic()
    next_at = last_renewed + interval
    while True:
        with shared.cond:
            while not shared.stop:
                wait = next_at - time.monotonic()
                if wait <= 0:
                    break
                shared.cond.wait(wait)
            if shared.stop:
                return
        try:
            lock.refresh()
        except NotOwner:
            shared.lose(Lost("not-owner", f"the lock {lock.path} is no longer held by this lease "
                                          "(broken as stale, or released)"))
            return
        except Exception as e:
            if time.monotonic() - last_renewed >= lifetime:
                shared.lose(Lost("unreachable", f"no renewal of {lock.path} succeeded for a whole lifetime: {e}"))
                return
            # Try again soon: contenders may break the lock a lifetime after
            # the last renewal that succeeded.
            next_at = time.monotonic() + interval / 4
            continue
        last_renewed = time.monotonic()
        next_at = last_renewed + interval
        with shared.cond:
            shared.renewals += 1


class Lease:
    """A lock with a lifetime that renews itself in the background.

    ``Lease(path, stale_after=S, on_lost=callback, ...)`` takes the other
    arguments of Lock (``shared=True`` for a reader, ``slots=N`` for a
    semaphore's holder). ``acquire()`` (or ``with``) takes the lock and starts
    renewing every S/3 seconds; ``release()`` stops and releases. ``lost``
    says why the lease was lost (None while it holds); ``on_lost`` callbacks
    run once, on the renewal thread."""

    def __init__(self, path: PathArg, *, stale_after: float = DEFAULT_LEASE_LIFETIME,
                 on_lost: Optional[LostCallback] = None, timeout: Optional[float] = None,
                 verification_delay: float = 0.1, retry_interval: float = 0.1, prefix: str = "",
                 queue: bool = True, max_clock_skew: float = 0.0, shared: bool = False,
                 slots: Optional[int] = None) -> None:
        if stale_after is None:
            raise InvalidOptions("a lease needs a lifetime: give stale_after in seconds (0.5 to 86400)")
        self._lock = Lock(path, timeout=timeout, stale_after=stale_after, verification_delay=verification_delay,
                          retry_interval=retry_interval, prefix=prefix, queue=queue, max_clock_skew=max_clock_skew,
                          shared=shared, slots=slots)
        self._init(on_lost)

    def _init(self, on_lost: Optional[LostCallback]) -> None:
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be callable, not {type(on_lost).__name__}")
        self._shared = _Shared()
        if on_lost is not None:
            self._shared.callbacks.append(on_lost)
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def _from_lock(cls, lock: Lock, on_lost: Optional[LostCallback]) -> "Lease":
        lease = cls.__new__(cls)
        if lock.stale_after is None:
            if lock.is_locked:
                raise InvalidOptions(f"{lock.path} is held without a lifetime: a lease needs one (stale_after)")
            lock = Lock(lock.path, timeout=lock.timeout, stale_after=DEFAULT_LEASE_LIFETIME,
                        **_same_options(lock))
        lease._lock = lock
        lease._init(on_lost)
        if not lock.is_locked:
            lock.acquire()
        lease._start()
        return lease

    @property
    def lifetime(self) -> float:
        """The lifetime the lock declares, in seconds; renewals come every third of it."""
        assert self._lock.stale_after is not None
        return float(self._lock.stale_after)

    @property
    def path(self) -> str:
        return self._lock.path

    @property
    def lock(self) -> Lock:
        """The lock this lease renews."""
        return self._lock

    @property
    def token(self) -> Optional[str]:
        return self._lock.token

    @property
    def fence(self) -> Optional[int]:
        return self._lock.fence

    @property
    def slot(self) -> Optional[int]:
        """A semaphore holder's slot (``slots=N``); None in the other modes."""
        return self._lock.slot

    @property
    def renewals(self) -> int:
        """How many renewals have succeeded so far."""
        with self._shared.cond:
            return self._shared.renewals

    @property
    def lost(self) -> Optional[Lost]:
        """Why the lease was lost; None while it holds."""
        with self._shared.cond:
            return self._shared.lost

    def wait_lost(self, timeout: Optional[float] = None) -> Optional[Lost]:
        """Waits until the lease is lost or ``timeout`` seconds pass; why it was lost."""
        with self._shared.cond:
            self._shared.cond.wait_for(lambda: self._shared.lost is not None, timeout)
            return self._shared.lost

    def on_lost(self, callback: LostCallback) -> None:
        """Calls ``callback(lost)`` once when the lease is lost (on the renewal
        thread), or at once if it already is."""
        with self._shared.cond:
            lost = self._shared.lost
            if lost is None:
                self._shared.callbacks.append(callback)
                return
        callback(lost)

    def acquire(self) -> "Lease":
        """Takes the lock (as Lock.acquire) and starts renewing it."""
        self._lock.acquire()
        self._start()
        return self

    def _start(self) -> None:
        shared = self._shared
        with shared.cond:
            shared.stop = False
        thread = threading.Thread(target=_renew, args=(self._lock, self.lifetime, shared),
                                  name="uuidlock-lease", daemon=True)
        thread.start()
        self._thread = thread
        # A lease dropped without release stops renewing (the lock then
        # expires after its lifetime).
        self._finalizer = weakref.finalize(self, _stop, shared)

    def _stop(self) -> None:
        _stop(self._shared)
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def refresh(self) -> None:
        """Renews now, besides the background renewals."""
        self._lock.refresh()

    def holds(self) -> bool:
        return self._lock.holds()

    def status(self) -> Optional[Status]:
        return self._lock.status()

    def holders(self) -> List[SharedHolder]:
        return self._lock.holders()

    def release(self) -> None:
        """Stops renewing and releases the lock. Raises NotOwner when the lease
        was lost (nothing deleted)."""
        self._stop()
        self._lock.release()

    def __enter__(self) -> "Lease":
        if not self._lock.is_locked:
            return self.acquire()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()

    def __repr__(self) -> str:
        state = f"lost ({self.lost.kind})" if self.lost else ("held" if self._lock.is_locked else "not held")
        return f"<uuidlock.Lease {self.path!r} {state}, lifetime {self.lifetime:g} s>"


def _stop(shared: _Shared) -> None:
    with shared.cond:
        shared.stop = True
        shared.cond.notify_all()


def _same_options(lock: Lock) -> Dict[str, Any]:
    s = lock._core.settings
    return dict(verification_delay=s.verification_delay_ns / 1e9, retry_interval=s.retry_interval_ns / 1e9,
                prefix=s.prefix, queue=s.queue, max_clock_skew=s.max_clock_skew_ns / 1e9, shared=lock.shared,
                slots=lock.slots)


# Keep the names importable for type checkers.
_ = (LockError,)
