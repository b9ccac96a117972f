"""Build the optional Cython frame decoder; fall back to pure Python when it cannot be built.

ORPHEUS_TRIO_NO_EXT=1 skips the extension on purpose (the pure decoder is used).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compile leaves a working pure-Python package, with a warning saying why."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure means "no extension"
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: Exception) -> None:
        print(
            f"WARNING: orpheus_trio.protocol._fastframe was not built ({exc}); "
            "the pure-Python frame decoder will be used.",
            file=sys.stderr,
        )


def extensions() -> list[Extension]:
    if os.environ.get("ORPHEUS_TRIO_NO_EXT") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython not available; building without _fastframe.", file=sys.stderr)
        return []
    ext = Extension(
        "orpheus_trio.protocol._fastframe",
        ["src/orpheus_trio/protocol/_fastframe.pyx"],
        extra_compile_args=["-O3"],
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
