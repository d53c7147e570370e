"""Mutual exclusion across processes, and with the native CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import uuidlock

WORKER = r"""
import sys, time, uuidlock
lock_path, counter, log, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for _ in range(n):
    with uuidlock.Lock(lock_path, verification_delay=0, retry_interval=0.002) as lock:
        with open(log, "a") as f:
            f.write(f"enter {lock.fence}\n")
        with open(counter) as f:
            value = int(f.read())
        time.sleep(0.001)  # a non-atomic read-modify-write: any overlap loses counts
        with open(counter, "w") as f:
            f.write(str(value + 1))
        with open(log, "a") as f:
            f.write(f"leave {lock.fence}\n")
"""


def test_processes_exclude_each_other(lockdir: Path) -> None:
    path, counter, log = lockdir / "count.lock", lockdir / "counter", lockdir / "log"
    counter.write_text("0")
    log.write_text("")
    processes, iterations = 4, 25
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(counter), str(log), str(iterations)],
                                stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
    assert counter.read_text() == str(processes * iterations)
    # Critical sections never overlapped, and fences rose with every acquisition.
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2]))
    assert len(events) == 2 * processes * iterations
    fences = []
    for i in range(0, len(events), 2):
        (enter, f1), (leave, f2) = events[i], events[i + 1]
        assert (enter, leave) == ("enter", "leave") and f1 == f2
        fences.append(int(f1))
    assert fences == sorted(fences) and len(set(fences)) == len(fences)
    assert not path.exists()


def test_the_native_cli_and_the_package_share_locks(lockdir: Path, cli: str) -> None:
    path = lockdir / "shared.lock"
    token = subprocess.run([cli, "acquire", str(path), "--timeout", "0"], capture_output=True,
                           text=True).stdout.strip()
    st = uuidlock.status(path)
    assert st is not None and st.token == token
    lock = uuidlock.Lock(path, verification_delay=0)
    try:
        lock.acquire(timeout=0)
        raise AssertionError("acquired a lock the CLI holds")
    except uuidlock.Timeout:
        pass
    assert subprocess.run([cli, "release", str(path), token]).returncode == 0
    with lock:
        done = subprocess.run([cli, "acquire", str(path), "--timeout", "0"], capture_output=True, text=True)
        assert done.returncode == 1 and lock.token in done.stderr
        done = subprocess.run([cli, "holds", str(path), lock.token], capture_output=True, text=True)
        assert done.returncode == 0
    done = subprocess.run([cli, "status", str(path)], capture_output=True, text=True)
    assert done.returncode == 1  # free
