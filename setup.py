"""Build hook: a wheel of sag carries the committed data files the book reads (sag/resources.py lists them).

pyproject.toml holds the package's metadata; this file only adds the copy step. The copy lands in the build
folder (never in the repository), under sag/_data/, so the repository's results/ stays the one source.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _resources():
    """sag/resources.py loaded by path (importing sag itself would need torch at build time)."""
    spec = importlib.util.spec_from_file_location("_sag_resources", ROOT / "sag" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithData(build_py):
    """build_py, then a copy of every packaged data file into <build>/sag/_data/ (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable sag reads the repository's own files
            return
        resources = _resources()
        target = Path(self.build_lib) / "sag" / resources.DATA_DIRNAME
        for name in resources.packaged_files(ROOT):
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, dest)


setup(cmdclass={"build_py": BuildPyWithData})
