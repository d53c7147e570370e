"""The wasmtime side: the component compiled once per process (and cached on
disk), instances that each see exactly one directory, pooled per directory,
and guest calls that another thread can interrupt.

Each instance has an engine of its own, made from the one compilation
(``Component.deserialize``, well under a millisecond), so that interrupting
one call (``Engine.increment_epoch`` against a deadline of one tick) traps
that call and no other. A wasmtime store is not thread-safe: an instance is
used by one call at a time, taken from its directory's pool and put back.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import threading
from collections import OrderedDict
from importlib import resources
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import wasmtime
from wasmtime import Config, Engine, Store, WasiConfig, WasmtimeError
from wasmtime.component import Component, Linker

from . import _fastcall
from ._errors import LockIOError

INTERFACE = "uuidlock:lock/lock@0.3.0"
FUNCS = ("default-options", "acquire", "acquire-as", "abandon", "release", "refresh", "holds", "status",
         "holders")
WASM_NAME = "uuidlock.component.wasm"
#: Idle instances kept per directory, and directories kept.
MAX_IDLE = 4
MAX_DIRECTORIES = 16
#: Whether instances call through _fastcall (UUIDLOCK_FAST_CALLS=0: no).
FAST_CALLS = os.environ.get("UUIDLOCK_FAST_CALLS", "1") != "0"


def _config() -> Config:
    config = Config()
    # Every store gets a deadline of one tick: an increment of its own
    # engine's epoch (Instance.interrupt) traps its running call.
    config.epoch_interruption = True
    return config


def component_bytes() -> bytes:
    """The component shipped in the package."""
    try:
        return resources.files(__package__).joinpath(WASM_NAME).read_bytes()
    except (FileNotFoundError, OSError) as e:
        raise LockIOError(
            f"the uuidlock component ({WASM_NAME}) is missing from the installed package ({e}); reinstall it "
            "with the uuidlock CLI on PATH (`cargo install --path host/cli`) or UUIDLOCK_COMPONENT set"
        ) from None


def cache_dir() -> Optional[str]:
    """``$UUIDLOCK_CACHE_DIR`` (empty: no cache), else ``$XDG_CACHE_HOME/uuidlock``,
    else ``~/.cache/uuidlock``: the same directory as the Rust host's."""
    explicit = os.environ.get("UUIDLOCK_CACHE_DIR")
    if explicit is not None:
        return explicit or None
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else None)
    return os.path.join(base, "uuidlock") if base else None


def _private(path: str) -> bool:
    """Loading compiled code runs it: only a file that this user alone can
    write, in a directory this user alone can write, is loaded."""
    try:
        for p in (path, os.path.dirname(path)):
            st = os.stat(p)
            if st.st_mode & 0o022 or st.st_uid != os.geteuid():
                return False
        return True
    except OSError:
        return False


def _store_cache(path: str, data: bytes) -> None:
    """Writes aside under a name of our own, then renames into place."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    aside = os.path.join(directory, f".{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(aside, path)
    except BaseException:
        try:
            os.unlink(aside)
        except OSError:
            pass
        raise


class _Compiled:
    """The component compiled once per process: its serialized code, which
    each new engine deserializes; the first engine and component are handed
    to the first instance."""

    _lock = threading.Lock()
    _serialized: Optional[bytes] = None
    _first: Optional[Tuple[Engine, Component]] = None
    #: Where the compiled code came from: "compiled", "disk cache".
    source: str = ""

    @classmethod
    def engine_and_component(cls) -> Tuple[Engine, Component]:
        with cls._lock:
            if cls._serialized is None:
                cls._load()
            if cls._first is not None:
                first, cls._first = cls._first, None
                return first
            serialized = cls._serialized
        assert serialized is not None
        engine = Engine(_config())
        return engine, Component.deserialize(engine, serialized)

    @classmethod
    def _load(cls) -> None:
        wasm = component_bytes()
        key = hashlib.sha256(wasm + f"|wasmtime-py {wasmtime_version()}|epoch".encode()).hexdigest()[:20]
        directory = cache_dir()
        path = os.path.join(directory, f"python-{key}.cwasm") if directory else None
        engine = Engine(_config())
        if path and _private(path):
            try:
                with open(path, "rb") as f:
                    data = f.read()
                component = Component.deserialize(engine, data)
                cls._serialized, cls._first, cls.source = data, (engine, component), "disk cache"
                return
            except (OSError, WasmtimeError):
                pass  # stale or foreign: compile again
        component = Component(engine, wasm)
        data = bytes(component.serialize())
        if path:
            try:
                _store_cache(path, data)
            except OSError:
                pass  # best effort: without a cache each process compiles again
        cls._serialized, cls._first, cls.source = data, (engine, component), "compiled"


def wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing
        return getattr(wasmtime, "__version__", "unknown")


class Instance:
    """One component instance, granted exactly one directory (under its own
    absolute path), with no environment and no arguments but its name."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.engine, component = _Compiled.engine_and_component()
        linker = Linker(self.engine)
        linker.add_wasip2()
        self.store = Store(self.engine)
        wasi = WasiConfig()
        wasi.argv = ["uuidlock"]
        wasi.env = []
        try:
            wasi.preopen_dir(directory, directory)
        except WasmtimeError as e:
            raise LockIOError(f"cannot grant {directory} to the uuidlock component: {e}", directory) from None
        self.store.set_wasi(wasi)
        self.store.set_epoch_deadline(1)
        instance = linker.instantiate(self.store, component)
        interface = instance.get_export_index(self.store, INTERFACE)
        if interface is None:
            raise LockIOError(f"the uuidlock component does not export {INTERFACE}; rebuild the package")
        self.funcs: Dict[str, Any] = {}
        for name in FUNCS:
            index = instance.get_export_index(self.store, name, interface)
            func = instance.get_func(self.store, index) if index is not None else None
            if func is None:
                raise LockIOError(f"the uuidlock component lacks {INTERFACE}#{name}; rebuild the package")
            # Types computed once (see _fastcall); Func.__call__ otherwise.
            fast = _fastcall.prepare(func, self.store) if FAST_CALLS else None
            self.funcs[name] = fast if fast is not None else functools.partial(func, self.store)
        #: Guest paths acquired through this instance and not yet released by
        #: their owner: the guest remembers them, and would refuse to take
        #: them again (already-held) instead of waiting.
        self.remembered: Set[str] = set()
        self.dead = False
        self.interrupted = False

    def call(self, name: str, *args: Any) -> Any:
        """Calls the export; its ``result`` comes back as the ok value, or as
        a ``Variant`` for an ``err``. A trap makes the instance unusable
        (wasmtime refuses to enter it again): it raises LockIOError."""
        try:
            return self.funcs[name](*args)
        except WasmtimeError as e:
            self.dead = True
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            why = lines[-1] if lines else "trapped"
            if self.interrupted:
                raise Interrupted(f"the uuidlock call {name} was interrupted ({why})") from None
            raise LockIOError(f"the uuidlock component failed in {name}: {why}",
                              args[0] if args and isinstance(args[0], str) else None) from None

    def interrupt(self) -> None:
        """Traps the running call at its next step in wasm: in a wait, at the
        end of the current sleep (the retry interval, or at most 250 ms in
        the queue of waiters). Thread-safe."""
        self.interrupted = True
        self.engine.increment_epoch()


class Interrupted(LockIOError):
    """A guest call stopped on request (internal: the caller undoes it)."""


class Sandbox:
    """The instances granted one directory: a call takes an idle one (or
    makes one) and puts it back."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._idle: List[Instance] = []
        self._lock = threading.Lock()

    def take(self, avoid: Optional[str] = None) -> Instance:
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if avoid is None or avoid not in self._idle[i].remembered:
                    return self._idle.pop(i)
        return Instance(self.directory)

    def put(self, instance: Instance) -> None:
        if instance.dead:
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(instance)

    def forget(self, instance: Optional[Instance], path: str) -> None:
        if instance is not None:
            with self._lock:
                instance.remembered.discard(path)

    def call(self, name: str, *args: Any, remember: Optional[str] = None) -> Tuple[Any, Instance]:
        """Runs ``name`` on an idle instance. With ``remember`` (an acquire's
        path), the instance is one that does not remember that path, and
        remembers it after a success."""
        instance = self.take(remember)
        try:
            result = instance.call(name, *args)
            if remember is not None and not is_error(result):
                instance.remembered.add(remember)
            return result, instance
        finally:
            self.put(instance)

    def start(self, name: str, *args: Any, remember: Optional[str] = None) -> "Call":
        """As ``call``, on a thread of its own, interruptible."""
        return Call(self, name, args, remember)


class Call:
    """A guest call running on a thread of its own; ``future`` gives its
    (result, instance); ``interrupt`` stops it at its next step in wasm."""

    def __init__(self, sandbox: Sandbox, name: str, args: Tuple[Any, ...], remember: Optional[str]) -> None:
        self.future: "concurrent.futures.Future[Tuple[Any, Instance]]" = concurrent.futures.Future()
        self._sandbox = sandbox
        self._instance = sandbox.take(remember)
        self._name, self._args, self._remember = name, args, remember
        thread = threading.Thread(target=self._run, name=f"uuidlock-{name}", daemon=True)
        thread.start()

    def _run(self) -> None:
        instance = self._instance
        try:
            result = instance.call(self._name, *self._args)
            if self._remember is not None and not is_error(result):
                instance.remembered.add(self._remember)
        except BaseException as e:  # delivered to the waiter
            self._sandbox.put(instance)
            self.future.set_exception(e)
            return
        self._sandbox.put(instance)
        self.future.set_result((result, instance))

    def interrupt(self) -> None:
        if not self.future.done():
            self._instance.interrupt()


def is_error(result: Any) -> bool:
    """wasmtime-py lifts ``result<T, error>`` untagged when T and the error's
    Python types differ: the ok value as is, the error as a ``Variant``."""
    return isinstance(result, wasmtime.component.Variant)


_sandboxes: "OrderedDict[str, Sandbox]" = OrderedDict()
_sandboxes_lock = threading.Lock()


def sandbox(directory: str) -> Sandbox:
    """The pool of instances granted ``directory`` (kept for the last
    MAX_DIRECTORIES directories used)."""
    with _sandboxes_lock:
        found = _sandboxes.get(directory)
        if found is None:
            found = _sandboxes[directory] = Sandbox(directory)
            while len(_sandboxes) > MAX_DIRECTORIES:
                _sandboxes.popitem(last=False)
        else:
            _sandboxes.move_to_end(directory)
        return found


def wait_through(future: "concurrent.futures.Future[Any]") -> None:
    """Waits until ``future`` is done, through further interruptions (the
    guest stops at its next wake-up, so this is short)."""
    while True:
        try:
            concurrent.futures.wait([future])
            return
        except BaseException:
            continue


def compiled_source() -> str:
    """Where this process's compiled component came from ("compiled" or
    "disk cache"); empty before the first instance."""
    return _Compiled.source


Callback = Callable[..., Any]
