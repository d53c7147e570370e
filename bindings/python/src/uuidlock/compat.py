"""A drop-in for ``uuid_filelock.UUIDFileLock`` (PyPI ``uuid-filelock`` 1.4),
implemented on uuidlock.

Same constructor and class-level defaults, ``acquire``, ``release``,
``check_lock``, ``lock_id``, ``LockTimeoutException``, context manager. The
lock is taken with ``acquire-as`` and the object's ``lock_id`` as the token,
so the lock file holds that id, and uuidlock's guarantees apply: an atomic
publish, release only of our own lock, a queue of waiters, fencing numbers.

Differences that remain (README.md lists them with the test results):

- the lock file's bytes are uuidlock's format (``1\\nuuidlock/1?token=<lock_id>\\n``),
  not the bare ``lock_id``; uuid-filelock 1.4 peers wait for it (they compare
  content with their own id), and uuidlock waits for theirs;
- ``prefix`` must be at most 64 printable ASCII characters without spaces,
  not starting with ``-`` (InvalidOptions, a ValueError, from the constructor);
- a second ``acquire`` while holding raises ``uuidlock.AlreadyHeld`` instead
  of waiting for itself until the timeout (or forever);
- a missing directory, a directory at the lock path and the like raise
  uuidlock errors (``uuidlock.LockError``) where uuid-filelock raised
  ``OSError``s (``LockIOError`` is one); ``check_lock`` and ``release`` on a
  lock whose directory is missing answer False / do nothing, as there;
- ``timeout_interval`` counts from the start of ``acquire`` and 0 tries once;
  uuid-filelock tried, slept, and raised only once more than
  ``timeout_interval`` had passed;
- ``LockTimeoutException`` is also a ``uuidlock.Timeout`` (a TimeoutError).
"""

from __future__ import annotations

import os
import uuid
from types import TracebackType
from typing import Any, Optional, Type

from ._errors import LockIOError, NotOwner, Timeout
from ._lock import Core, acquire_blocking
from ._options import Settings, check_prefix, check_timeout

__all__ = ["UUIDFileLock", "LockTimeoutException"]


class LockTimeoutException(Timeout):
    """Acquiring the lock timed out (uuid-filelock's exception; also a uuidlock.Timeout)."""

    def __init__(self, message: str = "acquiring lock timed out", path: Optional[str] = None) -> None:
        super().__init__(message, path)


class UUIDFileLock:
    """uuid-filelock's UUIDFileLock, on uuidlock.

    Args:
        lock_file: path to the lock file.
        prefix: put before the UUID in ``lock_id``.
        verification_delay: seconds to wait before verifying the lock
            (default: ``UUIDFileLock.default_verification_delay``).
        retry_interval: seconds between attempts
            (default: ``UUIDFileLock.default_retry_interval``).
        timeout_interval: seconds to wait; negative waits forever.
    """

    default_verification_delay: float = 0.1
    default_retry_interval: float = 0.1

    def __init__(self, lock_file: Any, prefix: str = "", verification_delay: Optional[float] = None,
                 retry_interval: Optional[float] = None, timeout_interval: float = -1) -> None:
        self.lock_file = str(lock_file)
        self.lock_id = f"{check_prefix(prefix)}{uuid.uuid4()}"
        self.timeout_interval = timeout_interval
        if verification_delay is None:
            self.verification_delay = UUIDFileLock.default_verification_delay
        else:
            self.verification_delay = verification_delay
        if retry_interval is None:
            self.retry_interval = UUIDFileLock.default_retry_interval
        else:
            self.retry_interval = retry_interval
        self._core: Optional[Core] = None

    def _settings(self) -> Settings:
        timeout: Optional[float] = self.timeout_interval
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout < 0:
            timeout = None
        return Settings.check(timeout=timeout, stale_after=None, verification_delay=self.verification_delay,
                              retry_interval=self.retry_interval, prefix="", queue=True, max_clock_skew=0.0)

    def _current(self) -> Core:
        # The attributes may have been changed since the last call, as
        # uuid-filelock reads them at each acquire.
        settings = self._settings()
        core = self._core
        if core is None or core.given != self.lock_file or core.settings != settings:
            fresh = Core(self.lock_file, settings)
            if core is not None and core.given == self.lock_file:
                fresh.token, fresh.fence, fresh.held, fresh.via = core.token, core.fence, core.held, core.via
            core = self._core = fresh
        return core

    def _directory_missing(self) -> bool:
        return not os.path.isdir(os.path.dirname(os.path.abspath(self.lock_file)))

    def acquire(self) -> None:
        """Acquires the lock, waiting as ``timeout_interval`` says; raises
        LockTimeoutException when it runs out."""
        core = self._current()
        token = core.begin(self.lock_id)
        try:
            acquire_blocking(core, token, core.settings.timeout_ns)
        except Timeout as e:
            raise LockTimeoutException(path=e.path) from e
        finally:
            core.busy = False

    def check_lock(self) -> bool:
        """Whether the lock file holds this object's ``lock_id``."""
        if self._directory_missing():
            return False
        core = self._current()
        core.token = self.lock_id
        return core.holds()

    def release(self) -> None:
        """Releases the lock if this object holds it; does nothing otherwise."""
        if self._directory_missing():
            return
        core = self._current()
        core.token = self.lock_id
        try:
            core.release()
        except NotOwner:
            pass

    @property
    def fence(self) -> Optional[int]:
        """uuidlock's fencing number of the latest acquisition (an addition)."""
        return self._core.fence if self._core is not None else None

    def __enter__(self) -> "UUIDFileLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc_value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.release()


# For type checkers: the names uuid-filelock's users import.
_ = (LockIOError, check_timeout)
