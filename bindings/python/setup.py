"""Build hook: puts the uuidlock component into the package.

`src/uuidlock/uuidlock.component.wasm` is a build output and is not kept in
git. The build takes it from `$UUIDLOCK_COMPONENT` (a path to the file)
when that is set; else it keeps the copy already there; else it runs
`uuidlock export TMPDIR` with the `uuidlock` on PATH. If neither works, the build stops with one line naming the fix.
Everything else is in pyproject.toml.
"""

import os
import shutil
import subprocess
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
WASM = "uuidlock.component.wasm"
TARGET = os.path.join(HERE, "src", "uuidlock", WASM)
FIX = (
    "install the uuidlock CLI (`cargo install --path host/cli` in the uuidlock repository) so that "
    "`uuidlock export` is on PATH, or set UUIDLOCK_COMPONENT=/path/to/uuidlock.component.wasm"
)


def _fail(why: str) -> "NoReturn":  # noqa: F821
    raise SystemExit(f"uuidlock build: {why}; {FIX}")


def _check_component(path: str) -> None:
    with open(path, "rb") as f:
        header = f.read(8)
    # \0asm, then the component encoding's version and layer (0x0d 0x00, 0x01 0x00).
    if header[:4] != b"\0asm" or header[6:8] != b"\x01\x00":
        _fail(f"{path} is not a WebAssembly component")


def ensure_component() -> str:
    """Returns the path of the component in the source tree, putting it there first: from
    `$UUIDLOCK_COMPONENT` whenever it is set (so that a rebuilt component is never shadowed by an
    old copy), else the copy already there, else `uuidlock export`."""
    source = os.environ.get("UUIDLOCK_COMPONENT")
    if not source and os.path.isfile(TARGET):
        return TARGET
    if source:
        if not os.path.isfile(source):
            _fail(f"UUIDLOCK_COMPONENT={source} is not a file")
        _check_component(source)
        shutil.copyfile(source, TARGET + ".tmp")
        os.replace(TARGET + ".tmp", TARGET)
        return TARGET
    cli = shutil.which("uuidlock")
    if cli is None:
        _fail(f"{os.path.relpath(TARGET, HERE)} is missing, UUIDLOCK_COMPONENT is not set and no `uuidlock` is on PATH")
    with tempfile.TemporaryDirectory(prefix="uuidlock-export-") as tmp:
        done = subprocess.run([cli, "export", tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        exported = os.path.join(tmp, WASM)
        if done.returncode != 0 or not os.path.isfile(exported):
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            _fail(f"`{cli} export` failed ({why})")
        _check_component(exported)
        shutil.copyfile(exported, TARGET + ".tmp")
        os.replace(TARGET + ".tmp", TARGET)
    return TARGET


class BuildPy(build_py):
    """build_py that first makes sure the component is there, and copies it into the build."""

    def run(self) -> None:
        source = ensure_component()
        super().run()
        if not self.editable_mode:
            built = os.path.join(self.build_lib, "uuidlock", WASM)
            if not os.path.isfile(built):
                # The file appeared after setuptools listed the package data.
                self.mkpath(os.path.dirname(built))
                self.copy_file(source, built)


class Sdist(sdist):
    """sdist that ships the component, so that the sdist builds without the CLI."""

    def run(self) -> None:
        ensure_component()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
