"""The import rules, checked on the source: every import statement in bsnn/ and bsnn_tui/, the
lazy ones inside functions included, relative ones resolved.

- bsnn never imports textual; rich only in bsnn.cli (the dashboard, bsnn_tui, may use both);
- bsnn.snn imports nothing of bsnn but bsnn.errors (and itself);
- bsnn_tui never imports bsnn.cli, bsnn.snn or bsnn.conversion (it goes through
  bsnn.pipeline & co.);
- bsnn.conversion never imports bsnn.pipeline;
- bsnn.options and bsnn.config import neither torch, textual nor rich,
and, in a fresh interpreter, importing bsnn.config, bsnn.options or bsnn.snn.options loads none
of torch, textual and rich (the dashboard checks a config before torch has loaded).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bsnn", "bsnn_tui")
LIGHT = ("bsnn.config", "bsnn.options", "bsnn.snn.options", "bsnn.recipes", "bsnn.energy",
         "bsnn.diagnostics", "bsnn.summary", "bsnn.records", "bsnn.exports", "bsnn.events",
         "bsnn.runlog", "bsnn.runfolder", "bsnn.jobdir", "bsnn.pipeline")  # no torch & co.
HEAVY = ("torch", "textual", "rich")


@dataclass(frozen=True)
class Import:
    """One imported dotted name: `from a.b import c` gives a.b.c, `import a.b` gives a.b."""

    module: str  # the importing module, e.g. bsnn.snn.engine
    path: str  # its file, relative to the repository
    line: int
    name: str
    statement: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.name} ({self.statement})"


def within(name: str, *packages: str) -> bool:
    """Whether dotted `name` is one of `packages` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of `level` dots starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top package in {module}")
    return ".".join(parts[:len(parts) - (level - 1)])


def imports_in(source: str, module: str, path: str, is_package: bool = False) -> Iterator[Import]:
    """Every import in `source`, at any depth; importlib.import_module("literal") too."""
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [_base(module, is_package, node.level), base]))
            names = [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        for name in names:
            yield Import(module, path, node.lineno, name, ast.unparse(node))


def _module_name(file: Path) -> tuple[str, bool]:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def project_imports() -> list[Import]:
    found = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            module, is_package = _module_name(file)
            found += imports_in(file.read_text(), module, str(file.relative_to(ROOT)), is_package)
    return found


@dataclass(frozen=True)
class Rule:
    """`applies` to the importing module; `forbidden` of the imported name."""

    rule_id: str
    applies: Callable[[str], bool]
    forbidden: Callable[[str], bool]


RULES = [
    Rule("bsnn-never-imports-textual", lambda m: within(m, "bsnn"),
         lambda n: within(n, "textual")),
    Rule("rich-only-in-bsnn-cli", lambda m: within(m, "bsnn") and not within(m, "bsnn.cli"),
         lambda n: within(n, "rich")),
    Rule("bsnn-snn-imports-only-errors", lambda m: within(m, "bsnn.snn"),
         lambda n: within(n, "bsnn") and not within(n, "bsnn.errors", "bsnn.snn")),
    Rule("bsnn-tui-not-cli-snn-conversion", lambda m: within(m, "bsnn_tui"),
         lambda n: within(n, "bsnn.cli", "bsnn.snn", "bsnn.conversion")),
    Rule("bsnn-conversion-not-run", lambda m: within(m, "bsnn.conversion"),
         lambda n: within(n, "bsnn.pipeline")),
    Rule("options-and-config-stay-light", lambda m: m in ("bsnn.options", "bsnn.config"),
         lambda n: within(n, *HEAVY)),
]


def violations(rule: Rule, found: list[Import]) -> list[str]:
    return [str(i) for i in found if rule.applies(i.module) and rule.forbidden(i.name)]


@pytest.fixture(scope="module")
def found() -> list[Import]:
    return project_imports()


@pytest.mark.parametrize("rule", RULES, ids=[r.rule_id for r in RULES])
def test_import_rule(rule: Rule, found: list[Import]) -> None:
    bad = violations(rule, found)
    assert not bad, f"{rule.rule_id}:\n" + "\n".join(bad)


def test_the_walk_sees_the_project(found: list[Import]) -> None:
    """A walk that found nothing would pass every rule."""
    modules = {i.module for i in found}
    assert {"bsnn.snn.engine", "bsnn.conversion.convert", "bsnn.cli"} <= modules
    assert any(i.module.startswith("bsnn_tui") for i in found)


# --------------------------------------------------------------------------------------------
# the checker itself, on small sources: each rule can fail


SYNTHETIC = {
    "bsnn-never-imports-textual": ("bsnn.pipeline.runner",
                                   "def f():\n    from textual.app import App\n",
                                   2, "textual.app.App"),
    "rich-only-in-bsnn-cli": ("bsnn.exports", "import os\nimport rich.table\n", 2, "rich.table"),
    "bsnn-snn-imports-only-errors": ("bsnn.snn.engine",
                                     "from bsnn.errors import ConfigError\n"
                                     "from . import network\n"
                                     "def f():\n    from ..conversion import chain\n",
                                     4, "bsnn.conversion.chain"),
    "bsnn-tui-not-cli-snn-conversion": ("bsnn_tui.app",
                                        "def f():\n    import bsnn.cli.progress\n",
                                        2, "bsnn.cli.progress"),
    "bsnn-conversion-not-run": ("bsnn.conversion.correction",
                                "from bsnn.pipeline import runner\n", 1,
                                "bsnn.pipeline.runner"),
    "options-and-config-stay-light": ("bsnn.config",
                                      "import importlib\nimportlib.import_module('torch')\n",
                                      2, "torch"),
}


@pytest.mark.parametrize("rule", RULES, ids=[r.rule_id for r in RULES])
def test_each_rule_catches_a_violation(rule: Rule) -> None:
    module, source, line, name = SYNTHETIC[rule.rule_id]
    path = module.replace(".", "/") + ".py"
    bad = violations(rule, list(imports_in(source, module, path)))
    assert len(bad) == 1, bad
    assert bad[0].startswith(f"{path}:{line} imports {name} ("), bad


def test_allowed_imports_pass() -> None:
    """The snn rule allows bsnn.errors and bsnn.snn itself, relative or absolute."""
    source = ("from bsnn.errors import ConfigError\nfrom . import network\n"
              "from .options import SimOptions\nimport torch\n")
    found = list(imports_in(source, "bsnn.snn.engine", "bsnn/snn/engine.py"))
    assert [i.name for i in found] == ["bsnn.errors.ConfigError", "bsnn.snn.network",
                                       "bsnn.snn.options.SimOptions", "torch"]
    assert not any(violations(rule, found) for rule in RULES)


def test_relative_imports_resolve_from_a_package_init() -> None:
    found = list(imports_in("from .engine import Engine\nfrom .. import errors\n",
                            "bsnn.snn", "bsnn/snn/__init__.py", is_package=True))
    assert [i.name for i in found] == ["bsnn.snn.engine.Engine", "bsnn.errors"]


# --------------------------------------------------------------------------------------------
# what importing really loads


@pytest.mark.parametrize("module", LIGHT)
def test_light_module_loads_no_heavy_package(module: str) -> None:
    code = (f"import sys, {module}\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"importing {module} loaded {done.stdout.strip()}"


def test_building_the_cli_loads_no_torch() -> None:
    """Every `bsnn` command builds the whole parser first: a torch import there would keep a
    user in front of a silent terminal for seconds (a detached start, `--help`)."""
    code = ("import sys\nfrom bsnn.cli import build_parser\nbuild_parser()\n"
            "print(' '.join(m for m in ('torch', 'numpy', 'nir') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"building the parser loaded {done.stdout.strip()}"
