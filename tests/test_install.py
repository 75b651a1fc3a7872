"""What `pip install mtedge` promises: a torch-free runtime, the heavy stack pinned in extras.

`make check-runtime-install` proves it end to end in a venv without torch (slow, once per change of
pyproject.toml); these tests catch the usual ways of breaking it in seconds, in the main venv.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mtedge

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]

HEAVY = ("torch", "transformers", "peft", "optimum", "accelerate", "onnx")
# mtedge/DESIGN.md §3: the stack checked on these machines. Extras must pin exactly these.
PINS = {
    "torch": "2.13.0", "transformers": "4.57.6", "peft": "0.21.2", "optimum": "2.1.0", "optimum-onnx": "0.1.0",
    "onnx": "1.23.2", "onnxruntime": "1.32.0", "ctranslate2": "4.8.5", "sentencepiece": "0.2.3",
    "sacrebleu": "2.6.0", "click": "8.5.1",
}
# Stages that may import the heavy stack at module level; everything else in mtedge is the runtime path.
HEAVY_STAGES = ("mtedge.train", "mtedge.convert", "mtedge.bench", "mtedge.engines.torch_engine")


def _name(requirement: str) -> str:
    for stop in "[=<>!~; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def _pin(requirement: str) -> str | None:
    return requirement.split("==", 1)[1].split(";")[0].strip() if "==" in requirement else None


def test_base_install_has_no_heavy_dependency():
    names = {_name(r) for r in PROJECT["dependencies"]}
    assert not names & set(HEAVY), f"the runtime install would pull {sorted(names & set(HEAVY))}"
    assert {"numpy", "sentencepiece", "onnxruntime", "ctranslate2", "click"} <= names


@pytest.mark.parametrize("group", ["dependencies", "train", "export", "bench"])
def test_stack_is_pinned_as_in_design(group):
    requirements = PROJECT[group] if group == "dependencies" else PROJECT["optional-dependencies"][group]
    for requirement in requirements:
        name = _name(requirement)
        if name in PINS:
            assert _pin(requirement) == PINS[name], f"{group}: {requirement!r}, mtedge/DESIGN.md §3 pins {name}=={PINS[name]}"


def test_all_extra_includes_every_stage():
    extras = PROJECT["optional-dependencies"]
    assert extras["all"] == [f"mtedge[{','.join(name for name in extras if name != 'all')}]"]


def test_license_is_an_spdx_expression():
    assert PROJECT["license"] == "Apache-2.0"  # a table form is deprecated by setuptools (PEP 639)


def test_versions_agree():
    assert PROJECT["version"] == mtedge.__version__ == importlib.metadata.version("mtedge")


def _runtime_modules() -> list[str]:
    # Found on disk, not by importing: importing a heavy stage's package here would defeat the check.
    modules = []
    for path in sorted((ROOT / "mtedge").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not any(name == stage or name.startswith(stage + ".") for stage in HEAVY_STAGES):
            modules.append(name)
    return modules


def test_runtime_modules_do_not_import_the_heavy_stack():
    modules = _runtime_modules()
    assert {"mtedge", "mtedge.cli", "mtedge.data", "mtedge.bundle"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import mtedge, mtedge.cli\n"
        "[mtedge.cli.cli.get_command(None, n) for n in mtedge.cli.cli.list_commands(None)]\n"  # `mtedge --help`
        "getattr(mtedge, 'Translator', None)\n"  # the lazy runtime entry point
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [], "the runtime path imports the heavy stack"


RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"


@pytest.mark.skipif(not RUNTIME_PYTHON.exists(),
                    reason="no .venv-runtime: `make test` builds it (make check-runtime-install) before pytest")
def test_base_install_translates_a_bundle_with_onnx_and_ct2(tiny_unvalidated_bundles):
    """The issue-5 promise, in the venv that holds only `pip install .`: no torch, no transformers."""
    bundle = tiny_unvalidated_bundles("marian")
    proc = subprocess.run([str(RUNTIME_PYTHON), "-P", str(ROOT / "tests" / "runtime_smoke.py"), str(bundle)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" not in proc.stdout + proc.stderr


def test_a_heavy_command_without_its_extra_is_one_line_naming_the_extra(tmp_path):
    # sys.modules[name] = None makes `import torch` fail as it does in a runtime-only install
    code = ("import sys; sys.modules['torch'] = None; from mtedge.cli import main; "
            f"main(['train', 'm', '--train', 'a.tsv', '--dev', 'b.tsv', '-o', {str(tmp_path / 'o')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "pip install 'mtedge[train]'" in proc.stderr and "Traceback" not in proc.stderr
