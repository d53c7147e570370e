"""Arguments checked in Python, before they reach the component: types
(TypeError) and ranges (InvalidOptions / InvalidPath, both ValueErrors), so
that no value wraps on its way into a WIT ``u64``."""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Tuple, Union

from ._errors import InvalidOptions, InvalidPath, LockIOError

#: The component's limits (wit/types.wit).
MAX_DELAY = 3600.0
MIN_LIFETIME = 0.5
MAX_LIFETIME = 86400.0
MAX_CLOCK_SKEW = 86400.0
#: The longest timeout a u64 of nanoseconds holds, in whole seconds.
MAX_TIMEOUT = (2**64 - 1) // 10**9
MAX_PREFIX = 64
#: The most slots a semaphore may have (``slots=``), as the component allows.
MAX_SLOTS = 1024
#: The lifetime a lease declares when none is given (as host/src/lease.rs).
DEFAULT_LIFETIME = 30.0

PathArg = Union[str, "os.PathLike[str]"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds (int or float), not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidOptions(f"{name} must be a finite number of seconds, not {value!r}")
    return value


def nanos(name: str, value: Any, minimum: float, maximum: float, hint: str = "") -> int:
    """Seconds (int or float) to whole nanoseconds, checked against [minimum, maximum]."""
    value = _number(name, value)
    if value < minimum or value > maximum:
        raise InvalidOptions(f"{name} must be from {minimum:g} to {maximum:g} s, not {value!r}{hint}")
    ns = value * 10**9 if isinstance(value, int) else round(value * 1e9)
    return min(int(ns), 2**64 - 1)


def optional_nanos(name: str, value: Any, minimum: float, maximum: float, hint: str = "") -> Optional[int]:
    return None if value is None else nanos(name, value, minimum, maximum, hint)


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if len(prefix) > MAX_PREFIX or any(not ("!" <= c <= "~") for c in prefix):
        raise InvalidOptions(f"prefix must be at most {MAX_PREFIX} printable ASCII characters without spaces, "
                             f"not {prefix!r}")
    if prefix.startswith("-"):
        raise InvalidOptions(f"prefix must not start with '-': {prefix!r}")
    if "&" in prefix:
        raise InvalidOptions(f"prefix must not contain '&', which separates the lock file's fields: {prefix!r}")
    return prefix


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__}")
    return value


#: The WIT ``mode`` cases, as Settings.mode names them.
EXCLUSIVE, SHARED, SLOTS = "exclusive", "shared", "slots"


def check_mode(shared: Any, slots: Any) -> Tuple[str, Optional[int]]:
    """``shared`` and ``slots`` to the WIT ``mode``: ("exclusive", None),
    ("shared", None) or ("slots", N)."""
    shared = check_bool("shared", shared)
    if slots is None:
        return (SHARED if shared else EXCLUSIVE), None
    if isinstance(slots, bool) or not isinstance(slots, int):
        raise TypeError(f"slots must be an int (the number of holders at once) or None, not {type(slots).__name__}")
    if shared:
        raise InvalidOptions(f"shared=True and slots={slots!r} cannot be combined: give shared=True for a "
                             "reader, or slots=N for one of N holders of a semaphore")
    if not 1 <= slots <= MAX_SLOTS:
        raise InvalidOptions(f"slots must be from 1 to {MAX_SLOTS} (a semaphore of that many holders at once), "
                             f"not {slots!r}")
    return SLOTS, slots


@dataclass(frozen=True)
class Settings:
    """The options of a lock, checked, in nanoseconds."""

    timeout_ns: Optional[int]
    stale_after_ns: Optional[int]
    verification_delay_ns: int
    retry_interval_ns: int
    prefix: str
    queue: bool
    max_clock_skew_ns: int
    #: How the lock is held: "exclusive", "shared" or "slots" (the WIT ``mode``).
    mode: str = EXCLUSIVE
    #: A semaphore's number of slots (mode "slots"); None otherwise.
    slots: Optional[int] = None

    @classmethod
    def check(cls, *, timeout: Any, stale_after: Any, verification_delay: Any, retry_interval: Any,
              prefix: Any, queue: Any, max_clock_skew: Any, shared: Any = False, slots: Any = None) -> "Settings":
        delay = nanos("verification_delay", verification_delay, 0, MAX_DELAY)
        lifetime = optional_nanos("stale_after", stale_after, MIN_LIFETIME, MAX_LIFETIME,
                                  "; or None for a lock that is never broken")
        if lifetime is not None and lifetime < 2 * delay:
            raise InvalidOptions(f"stale_after ({stale_after!r} s) must be at least twice verification_delay "
                                 f"({verification_delay!r} s)")
        mode, slots = check_mode(shared, slots)
        return cls(
            timeout_ns=check_timeout(timeout),
            stale_after_ns=lifetime,
            verification_delay_ns=delay,
            retry_interval_ns=nanos("retry_interval", retry_interval, 0, MAX_DELAY),
            prefix=check_prefix(prefix),
            queue=check_bool("queue", queue),
            max_clock_skew_ns=nanos("max_clock_skew", max_clock_skew, 0, MAX_CLOCK_SKEW),
            mode=mode,
            slots=slots,
        )


def check_timeout(timeout: Any) -> Optional[int]:
    return optional_nanos("timeout", timeout, 0, MAX_TIMEOUT, "; or None to wait forever")


def new_token(prefix: str) -> str:
    """A fresh owner token: the prefix and a random UUIDv4, as the component makes them."""
    return f"{prefix}{uuid.uuid4()}"


@dataclass(frozen=True)
class Target:
    """A lock path as the component sees it: the directory that holds it,
    resolved as the OS resolves it, and the file's name in it."""

    given: str
    directory: str
    path: str


def check_path(path: Any) -> str:
    if isinstance(path, (bytes, bytearray)):
        raise TypeError("path must be a str or os.PathLike[str], not bytes")
    try:
        text = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike[str], not {type(path).__name__}") from None
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or os.PathLike[str], not a path of {type(text).__name__}")
    if not text:
        raise InvalidPath("the lock path is empty; name a lock file, e.g. /tmp/job.lock", text)
    if "\0" in text:
        raise InvalidPath(f"the lock path {text!r} contains NUL; name a lock file, e.g. /tmp/job.lock", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath(f"the lock path {text!r} is not valid UTF-8; lock paths must be", text) from None
    return text


def resolve(path: str) -> Target:
    """The directory to grant and the path inside it. The directory is resolved
    (links and ``..``) so that the lock is the very file other programs reach
    through the same path; the last component stays as given (the component
    refuses a symbolic link there)."""
    head, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise InvalidPath(f"{path} does not name a file; name a lock file, e.g. /tmp/job.lock", path)
    directory = os.path.realpath(head or ".")
    if not os.path.isdir(directory):
        if os.path.lexists(directory):
            raise InvalidPath(f"cannot lock {path}: {head or '.'} is not a directory", path)
        raise LockIOError(f"cannot lock {path}: the directory {head or '.'} does not exist; create it first", path)
    if directory == os.path.sep:
        raise InvalidPath(f"cannot lock {path}: uuidlock never grants / to its sandbox; put the lock in a "
                          f"directory of its own, e.g. /tmp/{name}", path)
    return Target(given=path, directory=directory, path=os.path.join(directory, name))
