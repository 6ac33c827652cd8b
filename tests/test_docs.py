"""The API reference in docs/api/ lists every public name of gradest.

The check reads the reStructuredText sources (``.. currentmodule::``, ``.. automodule::``
and the entries of ``.. autosummary::`` blocks), so it needs no Sphinx and runs with the
rest of the suite. A public name is a module's ``__all__``, or, for a module without
``__all__``, every function and class it defines whose name has no leading underscore.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import gradest

API_DIR = Path(__file__).resolve().parent.parent / "docs" / "api"

# Imported explicitly (not by ``import gradest``); they need the flax and adapters extras.
EXTRA_PACKAGES = ("gradest.flax", "gradest.models", "gradest.numpyro")

_DIRECTIVE = re.compile(r"^\.\.\s+([\w-]+)::\s*(\S*)\s*$")
_OPTION = re.compile(r"^\s+:[\w-]+:")


def parse_api_sources(texts: list[str]) -> tuple[set[str], set[str]]:
  """(documented modules, documented qualified names) of reStructuredText sources."""
  modules: set[str] = set()
  names: set[str] = set()
  for text in texts:
    current = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
      match = _DIRECTIVE.match(lines[i])
      i += 1
      if not match:
        continue
      directive, argument = match.groups()
      if directive in ("currentmodule", "module"):
        current = argument
      elif directive == "automodule":
        modules.add(argument)
        current = argument
      elif directive == "autosummary":
        while i < len(lines) and (not lines[i].strip() or _OPTION.match(lines[i])):
          i += 1
        while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
          entry = lines[i].strip().lstrip("~")
          if not entry.startswith("gradest.") and current:
            entry = f"{current}.{entry}"
          names.add(entry)
          i += 1
  return modules, names


def api_sources() -> list[str]:
  return [p.read_text() for p in sorted(API_DIR.glob("*.rst"))]


def public_modules() -> list[str]:
  """gradest and every public module below it (``_src`` and private names skipped)."""
  for name in EXTRA_PACKAGES:
    importlib.import_module(name)
  found = ["gradest"]
  for info in pkgutil.walk_packages(gradest.__path__, "gradest."):
    if any(part.startswith("_") for part in info.name.split(".")):
      continue
    found.append(info.name)
  return sorted(found)


def public_names(module_name: str) -> list[str]:
  module = importlib.import_module(module_name)
  if hasattr(module, "__all__"):
    return list(module.__all__)
  return sorted(
    name
    for name, obj in vars(module).items()
    if not name.startswith("_")
    and (inspect.isfunction(obj) or inspect.isclass(obj))
    and obj.__module__ == module_name
  )


def _resolve(qualified: str):
  module_name, _, attr = qualified.rpartition(".")
  try:
    return getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError):
    return None


def missing_from_reference(modules: set[str], names: set[str]) -> list[str]:
  """Public names that neither the listed names nor the listed modules cover."""
  documented_objects = {
    id(obj) for obj in map(_resolve, names) if inspect.isfunction(obj) or inspect.isclass(obj)
  }
  missing = []
  for module_name in public_modules():
    if module_name not in modules:
      missing.append(module_name)
    for name in public_names(module_name):
      qualified = f"{module_name}.{name}"
      obj = getattr(importlib.import_module(module_name), name)
      if qualified in names:
        continue
      if inspect.ismodule(obj) and obj.__name__ in modules:
        continue
      if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) in documented_objects:
        continue  # a re-export of a documented function or class (gradest.models.elbo)
      missing.append(qualified)
  return missing


def test_every_public_name_is_in_the_api_reference():
  modules, names = parse_api_sources(api_sources())
  assert missing_from_reference(modules, names) == []


def test_every_listed_name_exists():
  _, names = parse_api_sources(api_sources())
  assert [n for n in sorted(names) if _resolve(n) is None] == []


def test_an_incomplete_reference_fails():
  modules, names = parse_api_sources(api_sources())
  assert "gradest.fisher.find_layers" in names
  assert missing_from_reference(modules, names - {"gradest.fisher.find_layers"}) == [
    "gradest.fisher.find_layers"
  ]
  assert "gradest.numpyro" in missing_from_reference(modules - {"gradest.numpyro"}, names)


@pytest.mark.parametrize("indent", ["   ", "    "])
def test_parser_reads_autosummary_blocks(indent):
  text = (
    ".. currentmodule:: gradest.fisher\n\n"
    ".. autosummary::\n"
    f"{indent}:toctree: _autosummary\n"
    f"{indent}:template: autosummary/alias.rst\n\n"
    f"{indent}fisher_diagonal\n"
    f"{indent}~gradest.samplers.Candidates\n\n"
    "not_a_name\n\n"
    ".. automodule:: gradest.models.sbn\n"
  )
  modules, names = parse_api_sources([text])
  assert modules == {"gradest.models.sbn"}
  assert names == {"gradest.fisher.fisher_diagonal", "gradest.samplers.Candidates"}


def documented_ci_commands(pattern: str) -> list[str]:
  """The commands of ``.ci/run`` matching ``pattern``; each must be in docs/development.md."""
  root = API_DIR.parent.parent
  commands = re.findall(pattern, (root / ".ci" / "run").read_text())
  development = (root / "docs" / "development.md").read_text()
  for command in commands:
    assert command.strip() in development, command
  return commands


def test_ci_builds_the_docs_with_the_documented_command():
  """CI's docs step is the command docs/development.md gives, warnings as errors."""
  commands = documented_ci_commands(r"sphinx-build [^'\"\n]*")
  assert commands, ".ci/run builds no documentation"
  for command in commands:
    assert " -W " in f" {command} " and " -n " in f" {command} ", command


def test_ci_runs_the_numerical_tests_with_default_compile_settings():
  """CI reruns the ``numerics`` tests with XLA's defaults, as docs/development.md says."""
  commands = documented_ci_commands(r"GRADEST_TEST_XLA_OPTIMIZE=1 pytest [^'\"\n]*")
  assert commands, ".ci/run does not rerun the numerical tests with the default settings"
  for command in commands:
    assert "-m numerics" in command, command
