"""uuidlock: cross-process lock files that need no locking support from the
filesystem or the network share.

The protocol (exclusive publish of an owner token, read-back verification,
release only of our own lock, lifetimes, leases, fencing numbers, a queue of
waiters) runs inside the uuidlock WebAssembly component, in wasmtime, granted
only the lock file's directory.

    import uuidlock

    with uuidlock.Lock("/srv/locks/job.lock", timeout=30) as lock:
        ...  # send lock.fence with every write

``shared=True`` takes it as a reader (beside other readers, never beside a
writer), ``slots=N`` as one of at most N holders (``lock.slot``);
``uuidlock.holders(path)`` lists them.

``uuidlock.aio.Lock`` is the asyncio twin; ``uuidlock.compat.UUIDFileLock``
is a drop-in for uuid-filelock's class.
"""

from ._errors import (AlreadyHeld, InvalidOptions, InvalidPath, InvalidToken, LockError, LockIOError, NotOwner,
                      OutsideSandbox, Timeout)
from ._lease import RENEWALS_PER_LIFETIME, Lease, Lost
from ._lock import Lock, SharedHolder, Status, holders, status
from ._options import MAX_SLOTS

__version__ = "0.3.0"

__all__ = [
    "Lock",
    "Lease",
    "Lost",
    "Status",
    "status",
    "SharedHolder",
    "holders",
    "MAX_SLOTS",
    "RENEWALS_PER_LIFETIME",
    "LockError",
    "Timeout",
    "NotOwner",
    "AlreadyHeld",
    "InvalidPath",
    "InvalidOptions",
    "InvalidToken",
    "OutsideSandbox",
    "LockIOError",
]


def __getattr__(name: str) -> object:
    # `uuidlock.aio` and `uuidlock.compat` load on first use.
    if name in ("aio", "compat"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'uuidlock' has no attribute {name!r}")
