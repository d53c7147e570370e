"""Lock, status(): the synchronous API, and the core the other APIs share."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple, Type

from wasmtime.component import Record, Variant

from . import _runtime
from ._errors import AlreadyHeld, LockError, NotOwner, Timeout, from_wit
from ._options import (DEFAULT_LIFETIME, SHARED, SLOTS, PathArg, Settings, Target, check_path, check_timeout,
                       new_token, resolve)

if TYPE_CHECKING:  # pragma: no cover
    from ._lease import Lease, Lost

__all__ = ["Lock", "Status", "SharedHolder", "status", "holders"]

_NS = 1e9


@dataclass(frozen=True)
class Status:
    """Who holds a lock, as ``status`` reports it.

    For a uuidlock holder, ``token`` and ``prefix`` are set and ``foreign`` is
    None; for another program's marker (or a writer still writing),
    ``foreign`` holds it, escaped and shortened, and ``token`` is None.
    Durations are in seconds, by the filesystem's clock."""

    #: The holder's owner token (a uuidlock holder).
    token: Optional[str]
    #: The prefix the token was made with (a uuidlock holder).
    prefix: Optional[str]
    #: Another program's marker, shown escaped and shortened.
    foreign: Optional[str]
    #: The lifetime the holder declared; None for a lock that is never broken.
    stale_after: Optional[float]
    #: How long ago the lock file was written (taken).
    age: float
    #: How long ago the holder last renewed; None before its first renewal,
    #: or for a lock without a lifetime.
    renewed: Optional[float]
    #: Whether the lock has gone two lifetimes without a renewal: the next
    #: acquire breaks it at once.
    stale: bool
    #: The latest fencing number taken for this path; None if none ever was.
    fence: Optional[int]

    @property
    def holder(self) -> str:
        """The token, or the foreign marker."""
        return self.token if self.token is not None else (self.foreign or "")


@dataclass(frozen=True)
class SharedHolder:
    """A shared holder (a reader) or a semaphore's holder, as ``holders``
    reports it: the fields of Status but the fence, and the holder's slot.

    Durations are in seconds, by the filesystem's clock."""

    #: The holder's entry in ``PATH.shared/``: a semaphore holder's slot.
    slot: int
    #: The holder's owner token (a uuidlock holder).
    token: Optional[str]
    #: The prefix the token was made with (a uuidlock holder).
    prefix: Optional[str]
    #: Something no uuidlock holder wrote, shown escaped and shortened (the
    #: next exclusive acquire removes it).
    foreign: Optional[str]
    #: The lifetime the holder declared; None for one that is never broken.
    stale_after: Optional[float]
    #: How long ago it was taken.
    age: float
    #: How long ago the holder last renewed; None before its first renewal,
    #: or without a lifetime.
    renewed: Optional[float]
    #: Whether it has gone two lifetimes without a renewal: the next
    #: exclusive acquire breaks it.
    stale: bool

    @property
    def holder(self) -> str:
        """The token, or the foreign marker."""
        return self.token if self.token is not None else (self.foreign or "")


def _seconds(ns: Optional[int]) -> Optional[float]:
    return None if ns is None else ns / _NS


def _holder_from_wit(holder: Any) -> Tuple[Optional[str], Optional[str], Optional[str], Optional[float]]:
    """(token, prefix, foreign, stale_after) of a WIT ``holder``."""
    # wasmtime-py lifts `variant holder { uuidlock(lock-info), foreign(string) }`
    # untagged (a Record or a str); a tagged Variant is taken as well.
    if hasattr(holder, "tag"):
        holder = holder.payload
    if isinstance(holder, str):
        return None, None, holder, None
    return getattr(holder, "token"), getattr(holder, "prefix"), None, _seconds(getattr(holder, "stale-after-ns"))


def status_from_wit(raw: Any) -> Optional[Status]:
    if raw is None:
        return None
    token, prefix, foreign, lifetime = _holder_from_wit(getattr(raw, "holder"))
    return Status(token=token, prefix=prefix, foreign=foreign, stale_after=lifetime,
                  age=getattr(raw, "age-ns") / _NS, renewed=_seconds(getattr(raw, "renewed-ns")),
                  stale=bool(getattr(raw, "stale")), fence=getattr(raw, "fence"))


def holders_from_wit(raw: Any) -> List[SharedHolder]:
    out = []
    for entry in raw:
        token, prefix, foreign, lifetime = _holder_from_wit(getattr(entry, "holder"))
        out.append(SharedHolder(slot=int(getattr(entry, "slot")), token=token, prefix=prefix, foreign=foreign,
                                stale_after=lifetime, age=getattr(entry, "age-ns") / _NS,
                                renewed=_seconds(getattr(entry, "renewed-ns")), stale=bool(getattr(entry, "stale"))))
    return out


def mode_variant(settings: Settings) -> Variant:
    """The WIT ``mode``. Its cases ``exclusive`` and ``shared`` carry nothing,
    so wasmtime-py takes it tagged only: a Variant, never a bare value."""
    if settings.mode == SLOTS:
        return Variant(SLOTS, settings.slots)
    return Variant(settings.mode)


def options_record(settings: Settings, timeout_ns: Optional[int]) -> Record:
    """The WIT ``options`` record. wasmtime-py reads record fields by their WIT
    names, hyphens and all, so they are set with setattr."""
    record = Record()
    setattr(record, "prefix", settings.prefix)
    setattr(record, "verification-delay-ns", settings.verification_delay_ns)
    setattr(record, "retry-interval-ns", settings.retry_interval_ns)
    setattr(record, "timeout-ns", timeout_ns)
    setattr(record, "stale-after-ns", settings.stale_after_ns)
    setattr(record, "queue", settings.queue)
    setattr(record, "max-clock-skew-ns", settings.max_clock_skew_ns)
    setattr(record, "mode", mode_variant(settings))
    return record


class Core:
    """A lock path and its options, and the latest acquisition through this
    owner: what Lock, aio.Lock, Lease and compat.UUIDFileLock share."""

    def __init__(self, path: PathArg, settings: Settings) -> None:
        self.given = check_path(path)
        self.settings = settings
        self._target: Optional[Target] = None
        self.token: Optional[str] = None
        self.fence: Optional[int] = None
        self.slot: Optional[int] = None
        #: Acquired and not released through this owner (as far as it knows).
        self.held = False
        self.busy = False
        self.via: Optional[_runtime.Instance] = None
        self.state = threading.Lock()

    # -- paths and calls

    def target(self) -> Target:
        if self._target is None:
            self._target = resolve(self.given)
        return self._target

    def sandbox(self) -> _runtime.Sandbox:
        return _runtime.sandbox(self.target().directory)

    def call(self, name: str, *args: Any, token: Optional[str] = None) -> Any:
        target = self.target()
        result, _ = self.sandbox().call(name, target.path, *args)
        if _runtime.is_error(result):
            raise from_wit(result, target.path, token=token)
        return result

    def status(self) -> Optional[Status]:
        return status_from_wit(self.call("status"))

    def holders(self) -> List[SharedHolder]:
        return holders_from_wit(self.call("holders"))

    def holds(self) -> bool:
        return self.token is not None and bool(self.call("holds", self.token, token=self.token))

    def refresh(self) -> None:
        if self.token is None:
            raise NotOwner(f"{self.given} was never acquired through this lock; nothing to renew", self.given)
        self.call("refresh", self.token, token=self.token)

    # -- acquiring

    def begin(self, token: Optional[str]) -> str:
        """Checks that this owner may acquire now, marks it busy, and returns
        the token to acquire with (a fresh one unless given)."""
        with self.state:
            if self.busy:
                raise AlreadyHeld(f"{self.given}: an acquire through this lock is already under way", self.given)
            self.busy = True
        try:
            if self.held and self.token is not None and self.holds():
                raise AlreadyHeld(f"{self.target().path} is already held by this lock, with token {self.token}; "
                                  "release it first", self.given)
        except BaseException:
            self.busy = False
            raise
        return token if token is not None else new_token(self.settings.prefix)

    def taken(self, token: str, acquired: Any, instance: _runtime.Instance) -> None:
        self.token, self.fence, self.held, self.via = token, int(getattr(acquired, "fence")), True, instance
        slot = getattr(acquired, "slot")
        self.slot = None if slot is None else int(slot)

    def failed(self, error: Any, timeout_ns: Optional[int], token: str) -> LockError:
        target = self.target()
        holder = None
        if getattr(error, "tag", None) == "timeout":
            try:
                found = self.status()
                holder = found.holder if found else None
                if holder is None:
                    # Readers (or a semaphore's holders) hold it: no lock file.
                    count = len(self.holders())
                    holder = f"{count} shared holder{'s' if count != 1 else ''}" if count else None
            except LockError:
                pass
        return from_wit(error, target.path, token=token,
                        timeout=None if timeout_ns is None else timeout_ns / _NS, holder=holder)

    def acquire_once(self, token: str, timeout_ns: Optional[int]) -> Tuple[Any, _runtime.Instance]:
        """One guest acquire-as on this thread (not interruptible)."""
        target = self.target()
        return self.sandbox().call("acquire-as", target.path, token, options_record(self.settings, timeout_ns),
                                   remember=target.path)

    def abandon(self, token: str) -> None:
        """Undoes an acquire with ``token`` cut short (the WIT ``abandon``):
        releases the lock if it was taken, removes the token's staging file,
        heartbeat and queue entry."""
        target = self.target()
        result, _ = self.sandbox().call("abandon", target.path, token)
        if _runtime.is_error(result):
            raise from_wit(result, target.path, token=token)

    def forget(self) -> None:
        if self.via is not None and self._target is not None:
            self.sandbox().forget(self.via, self._target.path)
        self.via = None

    def release(self) -> None:
        if self.token is None:
            raise NotOwner(f"{self.given} was never acquired through this lock; nothing was deleted", self.given)
        token = self.token
        target = self.target()
        result, _ = self.sandbox().call("release", target.path, token)
        if _runtime.is_error(result):
            error = from_wit(result, target.path, token=token)
            if error.case != "io":  # an I/O error leaves the lock ours, to release again
                self.held = False
                self.forget()
            raise error
        self.held = False
        self.forget()


def _timeout_ns(lock_default: Optional[int], timeout: Any) -> Optional[int]:
    return lock_default if timeout is _DEFAULT else check_timeout(timeout)


class _Default:
    def __repr__(self) -> str:
        return "<the lock's timeout>"


_DEFAULT: Any = _Default()


def acquire_blocking(core: Core, token: str, timeout_ns: Optional[int]) -> None:
    """Acquires with ``token``. In the main thread a wait that is needed runs
    on a thread of its own, so that Ctrl-C (or any exception a signal handler
    raises) interrupts it; the acquire is then undone (``abandon``) and the
    exception goes on."""
    start = time.monotonic()
    wait_here = timeout_ns == 0 or threading.current_thread() is not threading.main_thread()
    result, instance = core.acquire_once(token, timeout_ns if wait_here else 0)
    if not wait_here and getattr(result, "tag", None) == "timeout":
        left = None if timeout_ns is None else max(0, timeout_ns - int((time.monotonic() - start) * _NS))
        target = core.target()
        call = core.sandbox().start("acquire-as", target.path, token, options_record(core.settings, left),
                                    remember=target.path)
        try:
            concurrent.futures.wait([call.future])
        except BaseException:
            call.interrupt()
            _runtime.wait_through(call.future)
            core.abandon(token)
            raise
        result, instance = call.future.result()
    if _runtime.is_error(result):
        raise core.failed(result, timeout_ns, token)
    core.taken(token, result, instance)


class Lock:
    """A lock file at ``path``, shared with every process (and machine) that
    can reach the same directory.

    Args:
        path: the lock file (str or path-like). Its directory must exist; it
            is the only directory the component is granted.
        timeout: seconds ``acquire`` waits; None waits forever, 0 tries once.
        stale_after: the lock's lifetime in seconds (0.5 to 86400): a holder
            that goes this long without ``refresh`` may be broken. None: the
            lock is never broken.
        verification_delay: seconds between publishing the lock file and
            reading it back (0 is safe when every peer creates exclusively).
        retry_interval: seconds between attempts while the lock is busy.
        prefix: put before the random UUID in the owner token, to say who
            holds the lock (at most 64 printable ASCII characters, no spaces).
        queue: wait in the queue of waiters (arrival order) rather than poll.
        max_clock_skew: how far apart the clocks dating the lock's files may be.
        shared: hold it shared (a reader): beside other shared holders, never
            beside an exclusive holder (a writer, the default).
        slots: hold it as one of at most this many holders at once (a
            semaphore, 1 to 1024); ``slot`` says which. Every holder of the
            path must give the same number. Not with ``shared``.

    Raises TypeError or InvalidOptions (a ValueError) for a bad argument.
    Use it as a context manager, or call ``acquire`` and ``release``."""

    def __init__(self, path: PathArg, *, timeout: Optional[float] = None, stale_after: Optional[float] = None,
                 verification_delay: float = 0.1, retry_interval: float = 0.1, prefix: str = "",
                 queue: bool = True, max_clock_skew: float = 0.0, shared: bool = False,
                 slots: Optional[int] = None) -> None:
        settings = Settings.check(timeout=timeout, stale_after=stale_after, verification_delay=verification_delay,
                                  retry_interval=retry_interval, prefix=prefix, queue=queue,
                                  max_clock_skew=max_clock_skew, shared=shared, slots=slots)
        self._core = Core(path, settings)
        self._timeout = timeout
        self._stale_after = stale_after

    @property
    def path(self) -> str:
        """The lock path, as given."""
        return self._core.given

    @property
    def token(self) -> Optional[str]:
        """The owner token of the latest acquisition through this lock (kept
        after release); None before the first."""
        return self._core.token

    @property
    def fence(self) -> Optional[int]:
        """The fencing number of the latest acquisition: larger than that of
        every earlier acquisition of the same path. Send it with every write
        to the resource the lock protects."""
        return self._core.fence

    @property
    def slot(self) -> Optional[int]:
        """A semaphore holder's slot (``slots=N``), from 0 to N - 1, of the
        latest acquisition: no other holder has it meanwhile. None in the
        other modes, and before the first acquisition."""
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
        """Whether this lock acquired and has not released (its own record;
        ``holds()`` asks the lock file)."""
        return self._core.held

    @property
    def timeout(self) -> Optional[float]:
        return self._timeout

    @property
    def stale_after(self) -> Optional[float]:
        return self._stale_after

    def acquire(self, timeout: Optional[float] = _DEFAULT) -> "Lock":
        """Takes the lock, waiting up to ``timeout`` seconds (default: the
        lock's). Returns the lock.

        Raises Timeout, AlreadyHeld (this lock holds it already), InvalidPath,
        InvalidOptions, OutsideSandbox, LockIOError."""
        timeout_ns = _timeout_ns(self._core.settings.timeout_ns, timeout)
        token = self._core.begin(None)
        try:
            acquire_blocking(self._core, token, timeout_ns)
        finally:
            self._core.busy = False
        return self

    def release(self) -> None:
        """Deletes the lock file if, and only if, it holds this lock's token.

        Raises NotOwner (nothing deleted) when it does not: released already,
        broken as stale, or replaced; LockIOError."""
        self._core.release()

    def refresh(self) -> None:
        """Renews the lock's lifetime (rewrites its heartbeat; never the lock
        file). Raises NotOwner when the lock is no longer ours."""
        self._core.refresh()

    def holds(self) -> bool:
        """Whether the lock file holds this lock's token now."""
        return self._core.holds()

    def status(self) -> Optional[Status]:
        """Who holds the lock, and since when; None when it is free."""
        return self._core.status()

    def holders(self) -> List[SharedHolder]:
        """The shared holders of the lock (readers, or a semaphore's holders),
        by slot; as ``uuidlock.holders(path)``."""
        return self._core.holders()

    def lease(self, on_lost: Optional[Callable[["Lost"], Any]] = None) -> "Lease":
        """Takes the lock with a lifetime (``stale_after``, or 30 s) unless this
        lock holds it already, and keeps it renewed in the background every
        third of the lifetime; see Lease."""
        from ._lease import Lease

        return Lease._from_lock(self, on_lost)

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<uuidlock.Lock {self.path!r} {describe(self._core)}>"


def describe(core: Core) -> str:
    """How a lock is held, for reprs: "held, token T", "held shared, token T",
    "held (slot 1 of 2), token T", "not held", "not held (shared)"..."""
    settings = core.settings
    if not core.held:
        mode = {SHARED: " (shared)", SLOTS: f" ({settings.slots} slots)"}.get(settings.mode, "")
        return f"not held{mode}"
    mode = {SHARED: " shared", SLOTS: f" (slot {core.slot} of {settings.slots})"}.get(settings.mode, "")
    return f"held{mode}, token {core.token}"


def status(path: PathArg) -> Optional[Status]:
    """Who holds the lock at ``path``, and since when; None when it is free.

    While only shared holders (readers, a semaphore's holders) hold it, the
    lock file is free too: ``holders`` lists them.

    Raises InvalidPath, OutsideSandbox, LockIOError (a missing directory)."""
    core = Core(path, _STATUS_SETTINGS)
    return core.status()


def holders(path: PathArg) -> List[SharedHolder]:
    """The shared holders of the lock at ``path`` (readers, or a semaphore's
    holders), by slot; empty when there are none.

    Raises InvalidPath, OutsideSandbox, LockIOError (a missing directory)."""
    core = Core(path, _STATUS_SETTINGS)
    return core.holders()


_STATUS_SETTINGS = Settings.check(timeout=0, stale_after=None, verification_delay=0.1, retry_interval=0.1,
                                  prefix="", queue=True, max_clock_skew=0.0)

# Re-exported for the other modules.
DEFAULT = _DEFAULT
DEFAULT_LEASE_LIFETIME = DEFAULT_LIFETIME
