"""The release a user installs: the wheel holds the library, its license and its type marker.

The wheel is built the way ``pip install .`` builds it, from a copy of the checkout (so the build's
``build/`` and ``*.egg-info/`` never land in the work tree), without build isolation and without
an index (no network): the ``dev`` extra brings the setuptools it needs.
"""

import email.parser
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import optax_lr

ROOT = Path(__file__).resolve().parents[1]
# The standard text of the Apache License 2.0, unmodified (the copy at apache.org, and Debian's
# /usr/share/common-licenses/Apache-2.0).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
# What building needs from pyproject.toml (build-system.requires; also in the dev extra).
SETUPTOOLS_MIN = (77,)
# Build outputs and local state the copy of the checkout leaves out: these names anywhere, and
# the work folders of .gitignore only at the root (train/workdir.py is source).
_NOT_COPIED_ANYWHERE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis", ".venv")
_NOT_COPIED_AT_ROOT = shutil.ignore_patterns("build", "dist", "runs", "workdir*")


def _not_copied(folder, names):
  ignored = set(_NOT_COPIED_ANYWHERE(folder, names))
  if Path(folder) == ROOT:
    ignored |= set(_NOT_COPIED_AT_ROOT(folder, names))
  if Path(folder) == ROOT / "docs":
    ignored |= {"_build"} & set(names)
  return ignored


def _version_tuple(text):
  return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  have = importlib.metadata.version("setuptools")
  if _version_tuple(have) < SETUPTOOLS_MIN:
    pytest.fail(f"building the wheel needs setuptools>={SETUPTOOLS_MIN[0]} (found {have}): "
                'pip install -e ".[dev]"')
  tmp = tmp_path_factory.mktemp("release")
  source = tmp / "source"
  shutil.copytree(ROOT, source, ignore=_not_copied)
  out = tmp / "dist"
  done = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
       "--quiet", "--wheel-dir", str(out), str(source)],
      capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  (path,) = out.glob("optax_lr-*.whl")
  with zipfile.ZipFile(path) as archive:
    yield archive


def _dist_info(wheel):
  (name,) = {entry.split("/")[0] for entry in wheel.namelist()
             if entry.split("/")[0].endswith(".dist-info")}
  assert re.fullmatch(r"optax_lr-[^-/]+\.dist-info", name), name
  return name


def _metadata(wheel):
  return email.parser.Parser().parsestr(
      wheel.read(f"{_dist_info(wheel)}/METADATA").decode("utf-8"))


def test_wheel_holds_exactly_the_library_and_its_metadata(wheel):
  names = wheel.namelist()
  top = {name.split("/")[0] for name in names}
  assert top == {"optax_lr", _dist_info(wheel)}
  # Every module of the library, the PEP 561 marker, and nothing else: no models/, train/,
  # tests/ or docs/, no caches.
  library = {name for name in names if name.startswith("optax_lr/")}
  modules = {f"optax_lr/{path.name}" for path in (ROOT / "optax_lr").glob("*.py")}
  assert "optax_lr/__init__.py" in modules
  assert library == modules | {"optax_lr/py.typed"}
  assert wheel.read("optax_lr/py.typed") == b""
  for name in names:
    assert not name.startswith(("models/", "train/", "tests/", "docs/")), name
    assert "__pycache__" not in name and not name.endswith(".pyc"), name


def test_wheel_carries_the_apache_license(wheel):
  dist_info = _dist_info(wheel)
  in_wheel = {name for name in wheel.namelist()
              if name.startswith(dist_info) and "LICENSE" in name}
  # PEP 639 puts license files under .dist-info/licenses/ (setuptools>=77).
  assert in_wheel == {f"{dist_info}/licenses/LICENSE"}
  text = wheel.read(f"{dist_info}/licenses/LICENSE")
  assert text == (ROOT / "LICENSE").read_bytes()
  assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256, (
      "LICENSE is not the standard, unmodified Apache License 2.0 text")
  metadata = _metadata(wheel)
  assert metadata["License-Expression"] == "Apache-2.0"
  assert metadata.get_all("License-File") == ["LICENSE"]


def test_wheel_version_is_the_package_version(wheel):
  metadata = _metadata(wheel)
  assert metadata["Name"] == "optax_lr"
  assert metadata["Version"] == optax_lr.__version__
  assert _dist_info(wheel) == f"optax_lr-{optax_lr.__version__}.dist-info"


def test_changelog_has_the_current_version():
  changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
  assert "## [Unreleased]" in changelog
  assert re.search(rf"^## \[{re.escape(optax_lr.__version__)}\]", changelog, re.MULTILINE), (
      f"CHANGELOG.md has no section for version {optax_lr.__version__}")
