"""The documentation: the README's example runs, every public symbol is documented, links resolve.

The site itself is built (warnings as errors) and its examples run by `.ci/run`:
`sphinx-build -W --keep-going -b html docs docs/_build/html` and `... -b doctest ...`.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import optax_lr

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# Hand-written pages: the generated benchmark tables under results/ and figures/ are not pages.
PAGES = sorted(p for p in DOCS.rglob("*.md")
               if p.relative_to(DOCS).parts[0] not in ("results", "figures", "_build"))


def _code_blocks(text, language):
  return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_readme_is_a_landing_page():
  assert len(README.read_text().splitlines()) <= 200


def test_readme_python_example_runs_and_prints_what_it_says():
  blocks = _code_blocks(README.read_text(), "python")
  assert len(blocks) == 1, "the README has one short chain example"
  code = blocks[0]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=True)
  # The example prints the final loss and the learned rate; its comment states what they are.
  loss, rate = (float(v) for v in result.stdout.split())
  assert loss < 1e-6
  assert 0.5 < rate < 2.0  # learned up from 1e-3


def test_readme_shell_commands_are_the_ci_commands():
  commands = [line.split("#")[0].strip()
              for block in _code_blocks(README.read_text(), "bash") for line in block.splitlines()]
  ci = (ROOT / ".ci" / "run").read_text()
  for command in ("pip install -e \".[train,dev,docs]\"", "python -m train", "pytest",
                  "sphinx-build -W --keep-going -b html docs docs/_build/html",
                  "sphinx-build -W --keep-going -b doctest docs docs/_build/doctest"):
    assert command in commands, command
    assert re.search(rf"^{re.escape(command)}$", ci, flags=re.M), command


def test_every_public_symbol_has_an_api_entry():
  documented = set()
  for page in (DOCS / "api").glob("*.md"):
    documented |= set(re.findall(r"^\.\. auto(?:function|class):: (\w+)", page.read_text(),
                                 flags=re.M))
  assert set(optax_lr.__all__) - documented == set()
  assert documented - set(optax_lr.__all__) == set()


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(path):
  text = path.read_text()
  for forbidden in (r"\bseed 00\d", r"ALGORITHMS\.md", r"\.\./shared", r"/work/"):
    assert not re.search(forbidden, text, flags=re.I), (path, forbidden)


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(path):
  text = path.read_text()
  targets = re.findall(r"\]\(([^)\s]+)\)", text)
  targets += re.findall(r"^```\{include\} (\S+)", text, flags=re.M)
  for target in targets:
    if re.match(r"[a-z]+://", target) or target.startswith("#"):
      continue
    resolved = (path.parent / target.split("#")[0]).resolve()
    assert resolved.exists(), (path, target)
    assert ROOT in resolved.parents, (path, target)
