"""The folder tree is the architecture: imports go one way, and the light layers stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxr"
# lower layers first; a module may import its own layer and the ones before it
LAYERS = ("models", "metrics", "data", "tasks", "inference", "config", "reporting", "cli")
RANK = {
    "models": 0,
    "metrics": 0,
    "data": 1,
    "tasks": 2,
    "inference": 3,
    "config": 4,
    "reporting": 5,
    "cli": 6,
}
FREE = {"bench", "synth", "progress", "files"}  # tools and helpers outside the layering


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cxr" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0]
        if layer in RANK:
            yield path, layer


@pytest.mark.parametrize("path,layer", list(_modules()), ids=lambda v: str(v).rsplit("cxr/", 1)[-1])
def test_imports_only_go_down_the_layers(path, layer):
    upward = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if (target := _layer(module)) in RANK and RANK[target] > RANK[layer]
    ]
    assert not upward, f"{path.relative_to(PACKAGE.parent)} imports a higher layer: {upward}"


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_cxr_models_loads_only_torch_torchvision_and_timm():
    loaded = _loaded_after("import cxr.models")
    assert not loaded & {"pytorch_lightning", "lightning", "hydra", "omegaconf", "albumentations", "pandas"}


def test_inference_loads_neither_lightning_nor_hydra():
    modules = [
        "checkpoint",
        "members",
        "inputs",
        "optimise",
        "predict",
        "export",
        "postprocess",
        "submission",
    ]
    loaded = _loaded_after("; ".join(f"import cxr.inference.{m}" for m in modules))
    assert not loaded & {"pytorch_lightning", "lightning", "hydra"}
