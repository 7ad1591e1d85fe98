"""Build hook: compile the merge's hot modules (and the tar codec's) with mypyc when it and a C compiler are at hand.

Everything else about the package is in pyproject.toml. The merge parses, applies and frames every
tar entry in Python; compiled, the same code runs in a fraction of the CPU time (bench/README.md).
The .py files are always installed beside the extension modules, and Python imports an extension
module before a source file of the same name, so the pure-Python merge is what runs wherever the
build could not compile: with ``OCISQUASH_MYPYC=0``, without mypy (a build without isolation), or
without a working C compiler. ``OCISQUASH_MYPYC=1`` makes a failed compile an error instead.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The modules a squash spends its Python time in (workers.py is not: it forks and pickles): the merge's
# and the tar codec's it parses and writes headers with.
HOT = ("merge/records", "merge/tarread", "merge/tarwrite", "merge/tree", "merge/plan", "merge/layerwrite",
       "merge/oneread", "tar/header", "tar/encode")
_MODE = os.environ.get("OCISQUASH_MYPYC", "auto").strip().lower()


class _OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python modules when compiling fails (no compiler)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # CompileError, LinkError, PlatformError, a missing cc: all the same here
            if _MODE == "1":
                raise
            self._fallback(e)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as e:
            if _MODE == "1":
                raise
            self._fallback(e)

    @staticmethod
    def _fallback(e: Exception) -> None:
        print(f"ocisquash: mypyc build failed ({e}); installing the pure-Python merge", file=sys.stderr)


def _ext_modules() -> list[object]:
    if _MODE in ("0", "no", "false"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if _MODE == "1":
            raise
        print("ocisquash: mypyc not available; installing the pure-Python merge", file=sys.stderr)
        return []
    paths = [os.path.join("ocisquash", *m.split("/")) + ".py" for m in HOT]
    # The build environment has mypy but not the project's dependencies (httpx, isal, ...), which the
    # rest of the package imports: the compiled modules need types of their own, not a clean
    # `mypy --strict` of everything (CI runs that, with the dependencies installed).
    options = ["--config-file=", "--python-version=3.11", "--ignore-missing-imports", "--follow-imports=silent"]
    try:
        return list(mypycify([*options, *paths], opt_level="3", debug_level="0", group_name="ocisquash_merge"))
    except (Exception, SystemExit) as e:  # mypy's errors end in SystemExit
        if _MODE == "1":
            raise
        print(f"ocisquash: mypyc could not compile ({e!r}); installing the pure-Python merge", file=sys.stderr)
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _OptionalBuildExt})
