"""Runs the composed conformance suite under wasmtime-py:
`python run_suite.py COMPOSED FIXTURE`. The guest sees only FIXTURE, as
/work, no environment, and its arguments."""
import sys

from wasmtime import Engine, Store, WasiConfig
from wasmtime.component import Component, Linker


def main(composed: str, fixture: str) -> int:
    engine = Engine()
    component = Component.from_file(engine, composed)
    linker = Linker(engine)
    linker.add_wasip2()
    store = Store(engine)
    wasi = WasiConfig()
    wasi.argv = ["conformance", "/work"]
    wasi.preopen_dir(fixture, "/work")
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    instance = linker.instantiate(store, component)
    interface = instance.get_export_index(store, "wasi:cli/run@0.2.0")
    run = instance.get_func(store, instance.get_export_index(store, "run", interface))
    try:
        result = run(store)
    except Exception as error:  # the guest exited with an error, or trapped
        print(f"run_suite.py: {error}", file=sys.stderr)
        return 1
    # `result` with no payloads comes back as a tagged variant.
    return 0 if getattr(result, "tag", None) == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
