"""The exceptions: one class per case of the WIT `error` variant, under one base."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
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


class LockError(Exception):
    """Base of every uuidlock error. ``message`` is the component's one-line
    message (it names the path and the fix); ``path`` is the lock path the
    call was about, when there is one."""

    #: The WIT ``error`` case this class stands for.
    case: str = ""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message


class Timeout(LockError, TimeoutError):
    """The lock stayed held by someone else until the timeout."""

    case = "timeout"


class NotOwner(LockError):
    """The lock is not held by this token (absent, held by another, broken as
    stale, or already released). Nothing was deleted or changed."""

    case = "not-owner"


class AlreadyHeld(LockError):
    """This owner already holds the lock: a second acquire would wait for itself."""

    case = "already-held"


class InvalidPath(LockError, ValueError):
    """The path can never name a lock file (empty, NUL, a directory, a symbolic
    link, through a file that is not a directory)."""

    case = "invalid-path"


class InvalidOptions(LockError, ValueError):
    """An option is out of range (the prefix, a duration)."""

    case = "invalid-options"


class InvalidToken(LockError, ValueError):
    """The token is not one uuidlock could have made."""

    case = "invalid-token"


class OutsideSandbox(LockError):
    """The path leads outside the directory granted to the component."""

    case = "outside-sandbox"


class LockIOError(LockError, OSError):
    """Any other I/O error: a missing directory, a permission, a full disk;
    also a failure of the WebAssembly guest itself."""

    case = "io"


_BY_CASE: Dict[str, Type[LockError]] = {
    cls.case: cls
    for cls in (Timeout, NotOwner, AlreadyHeld, InvalidPath, InvalidOptions, InvalidToken, OutsideSandbox, LockIOError)
}


def from_wit(error: Any, path: str, *, token: Optional[str] = None, timeout: Optional[float] = None,
             holder: Optional[str] = None) -> LockError:
    """The exception for a WIT ``error`` value (wasmtime-py gives it as a
    ``Variant`` with ``tag`` and ``payload``). The two cases without a payload
    get a message of the same style as the component's."""
    tag = getattr(error, "tag", None)
    payload = getattr(error, "payload", None)
    cls = _BY_CASE.get(tag or "", LockIOError)
    if isinstance(payload, str):
        message = payload
    elif cls is Timeout:
        waited = "no wait (timeout 0)" if timeout == 0 else f"{timeout:g} s" if timeout is not None else "waiting"
        held = f" (held by {holder})" if holder else ""
        message = f"timed out after {waited} waiting for {path}{held}; try again later or with a longer timeout"
    elif cls is NotOwner:
        message = (f"{path} is not held by token {token}: it was released, broken as stale, or is held by "
                   "another; nothing was deleted")
    else:
        message = f"the uuidlock component returned an unexpected error for {path}: {error!r}"
    return cls(message, path)
