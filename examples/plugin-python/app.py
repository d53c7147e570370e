"""An example plugin in Python: takes the lock N times and, holding it, adds
one to a counter file, the read-modify-write that two plugins in two
processes would corrupt without the lock. The Rust example
(`examples/plugin-rust`) does the same, line for line.

`counter-plugin LOCK COUNTER N` prints one line per turn,
`ENTER_NS EXIT_NS FENCE` (wall-clock nanoseconds when it held the lock, and
the acquisition's fencing number), so that a test can check that no two
turns overlapped and that fences rose turn after turn.

Built with componentize-py against `wit/world.wit`, which includes
uuidlock's `plugin` world; `uuidlock compose` then joins in the lock (or a
host provides it):

    componentize-py -d ../../wit -d wit -w example:counter-plugin/counter-plugin \\
        componentize app -o counter-plugin.wasm
"""

import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import lock, types

USAGE = "usage: counter-plugin LOCK COUNTER N"


class Run(exports.Run):
    def run(self) -> None:
        if len(sys.argv) != 4:
            fail(USAGE)
        _, path, counter, turns = sys.argv
        if not turns.isdigit():
            fail(f"counter-plugin: N must be a whole number, not {turns!r}")
        options = lock.default_options()
        options.prefix = "counter-plugin-py-"
        options.verification_delay_ns = 0
        options.retry_interval_ns = 1_000_000
        options.timeout_ns = 60_000_000_000
        for _ in range(int(turns)):
            try:
                turn(path, counter, options)
            except Err as err:
                fail(f"counter-plugin: {message(err.value)}")


def turn(path: str, counter: str, options: types.Options) -> None:
    """One turn: the lock taken, the counter incremented, the lock released
    as the `with` block ends (the guard is a context manager)."""
    with lock.Guard.acquire(path, options) as guard:
        enter = time.time_ns()
        try:
            with open(counter) as f:
                count = int(f.read().strip())
        except FileNotFoundError:
            count = 0
        with open(counter, "w") as f:
            f.write(f"{count + 1}\n")
        leave = time.time_ns()
        print(f"{enter} {leave} {guard.fence()}", flush=True)


def message(error: types.Error) -> str:
    if isinstance(error, types.Error_Timeout):
        return "the lock stayed busy past the timeout"
    if isinstance(error, types.Error_NotOwner):
        return "the lock is no longer ours"
    return error.value


def fail(why: str) -> None:
    """Prints `why` and ends the run with an error (a non-zero exit)."""
    print(why, file=sys.stderr, flush=True)
    raise Err(None)
