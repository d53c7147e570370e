"""Uncontended acquire+release through the uuidlock package, beside a
plain-Python loop doing the same file steps, on the same directory.

    python bench.py --dir /dev/shm --iterations 500 [--pin]

Rows (medians and 99th percentiles of one acquire+release each, after a
warm-up; ratios to the floor):

- floor: plain Python, exclusive create + write of a token, read back, unlink;
- package: uuidlock.Lock(path, verification_delay=0), acquire() + release();
- package, no queue: the same with queue=False;
- package, generic calls: the package with wasmtime-py's own Func.__call__
  instead of its fast path (UUIDLOCK_FAST_CALLS=0);
- raw component: the two WIT calls (acquire-as, release) through
  wasmtime-py's Func.__call__ on one instance, no package code around them;
- raw, no epoch checks: as raw, on an engine without epoch interruption;
- new instance per call: as the package, but a fresh store and instance
  (engine, deserialize, link, instantiate) for each acquire and release,
  i.e. without store reuse;
- package, default delay: verification_delay=0.1 (few iterations).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Callable, List


def measure(step: Callable[[], None], iterations: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/dev/shm", help="where to make the bench's directory (default /dev/shm)")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--pin", action="store_true",
                        help="run on one CPU (as `taskset -c N`): wasmtime-py's WASI hands every file call to "
                             "another thread, and wake-ups across CPUs cost most under load")
    parser.add_argument("--rows", default="all", help="comma-separated row names to run (default all)")
    args = parser.parse_args()
    if args.iterations < 200:
        parser.error("--iterations must be at least 200")

    if args.pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import wasmtime
    from wasmtime import Config, Engine, Store, WasiConfig
    from wasmtime.component import Component, Linker

    import uuidlock
    from uuidlock import _runtime
    from uuidlock._lock import options_record
    from uuidlock._options import Settings

    base = tempfile.mkdtemp(prefix="uuidlock-bench-", dir=args.dir)
    directory = os.path.realpath(base)
    lock_path = os.path.join(directory, "bench.lock")
    rows = []

    steps: "List[tuple]" = []  # (name, step, iterations)

    def row(name: str, step: Callable[[], None], iterations: int = args.iterations) -> None:
        steps.append((name, step, iterations))

    def wanted(name: str) -> bool:
        return args.rows == "all" or name in args.rows.split(",")

    # floor
    floor_path = os.path.join(directory, "floor.lock")

    def floor() -> None:
        token = str(uuid.uuid4()).encode()
        fd = os.open(floor_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, token)
        finally:
            os.close(fd)
        with open(floor_path, "rb") as f:
            if f.read() != token:
                raise AssertionError("read back another token")
        os.unlink(floor_path)

    row("floor", floor)

    if wanted("package"):
        lock = uuidlock.Lock(lock_path, verification_delay=0)

        def package() -> None:
            lock.acquire()
            lock.release()

        row("package", package)

    if wanted("noqueue"):
        lock_nq = uuidlock.Lock(lock_path, verification_delay=0, queue=False)

        def package_nq() -> None:
            lock_nq.acquire()
            lock_nq.release()

        row("package, no queue", package_nq)

    if wanted("generic"):
        generic_dir = os.path.join(directory, "generic")
        os.mkdir(generic_dir)
        _runtime.FAST_CALLS = False  # instances made from now on (a new directory: new ones)
        lock_g = uuidlock.Lock(os.path.join(generic_dir, "bench.lock"), verification_delay=0)

        def package_generic() -> None:
            lock_g.acquire()
            lock_g.release()

        package_generic()  # its instance is made now, and reused from the pool
        _runtime.FAST_CALLS = True
        row("package, generic calls", package_generic)

    settings = Settings.check(timeout=None, stale_after=None, verification_delay=0, retry_interval=0.1, prefix="",
                              queue=True, max_clock_skew=0.0)
    record = options_record(settings, None)

    def raw_row(name: str, epoch: bool) -> None:
        config = Config()
        config.epoch_interruption = epoch
        engine = Engine(config)
        component = Component(engine, _runtime.component_bytes())
        linker = Linker(engine)
        linker.add_wasip2()
        store = Store(engine)
        if epoch:
            store.set_epoch_deadline(1)
        wasi = WasiConfig()
        wasi.preopen_dir(directory, directory)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, component)
        iface = instance.get_export_index(store, _runtime.INTERFACE)
        acquire_as = instance.get_func(store, instance.get_export_index(store, "acquire-as", iface))
        release = instance.get_func(store, instance.get_export_index(store, "release", iface))

        def raw() -> None:
            token = str(uuid.uuid4())
            acquired = acquire_as(store, lock_path, token, record)
            if isinstance(acquired, wasmtime.component.Variant):
                raise AssertionError(acquired)
            if release(store, lock_path, token) is not None:
                raise AssertionError("release failed")

        row(name, raw)

    if wanted("raw"):
        raw_row("raw component", True)
    if wanted("raw-noepoch"):
        raw_row("raw, no epoch checks", False)

    if wanted("fresh"):
        def fresh() -> None:
            token = str(uuid.uuid4())
            instance = _runtime.Instance(directory)
            acquired = instance.call("acquire-as", lock_path, token, record)
            if isinstance(acquired, wasmtime.component.Variant):
                raise AssertionError(acquired)
            instance = _runtime.Instance(directory)
            instance.call("release", lock_path, token)

        row("new instance per call", fresh, 200)

    if wanted("delay"):
        slow = uuidlock.Lock(lock_path)

        def package_delay() -> None:
            slow.acquire()
            slow.release()

        row("package, default delay 0.1 s", package_delay, 20)

    # Interleaved in rounds, so that a change of the machine's load (it is
    # shared) falls on every row alike.
    for name, step, _n in steps:
        for _ in range(args.warmup if _n > 20 else 2):
            step()
    times: "dict" = {name: [] for name, _s, _n in steps}
    rounds = 10
    for _ in range(rounds):
        for name, step, n in steps:
            times[name].extend(measure(step, max(1, n // rounds), 0))
    for name, _s, _n in steps:
        t = sorted(times[name])
        rows.append((name, statistics.median(t), t[max(0, int(len(t) * 0.99) - 1)], len(t)))

    floor_median = rows[0][1]
    print(f"uuidlock bench: {directory} (python {sys.version.split()[0]}, wasmtime-py {_runtime.wasmtime_version()}, "
          f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}); compiled component from: "
          f"{_runtime.compiled_source() or 'n/a'}")
    print(f"{'uncontended acquire+release':32} {'median µs':>10} {'p99 µs':>10} {'x floor':>8} {'n':>5}")
    for name, median, p99, n in rows:
        print(f"{name:32} {median * 1e6:10.1f} {p99 * 1e6:10.1f} {median / floor_median:8.1f} {n:5d}")
    shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
