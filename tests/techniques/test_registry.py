"""The technique registry: one registration gives a technique its recipe verb and step, its notebook's
declared parameters, its contract case and its place on notebook 08's frontier; nothing else lists
techniques by hand."""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from compresslab.core.params import Param, choice
from compresslab.core.report import Report
from compresslab.core.validate import check_float
from compresslab.techniques import registry

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ScaleConfig:
    """A toy technique: multiply every weight by `factor`."""

    factor: float = 0.5

    def __post_init__(self) -> None:
        check_float("ScaleConfig", "factor", self.factor, 0, 1)


def apply_scale(model: nn.Module, config: ScaleConfig, data=None, *, inplace: bool = False, progress=None,
                loss_fn=None) -> tuple[nn.Module, Report]:
    model = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(config.factor)
    return model, Report(config=config)


@pytest.fixture
def with_scale(monkeypatch):
    """The registry with the toy technique added (removed again after the test)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry.techniques()))
    technique = registry.register(registry.Technique(
        name="scale", apply=apply_scale, config=ScaleConfig, example=lambda: (registry.tiny_mlp(), ScaleConfig(), {}),
        verb="scale", notebook="99_scale", params={"profile": choice("quick", "full"), "factor": Param("float", 0, 1)},
        frontier=lambda arch, epochs, seed: [{"name": f"scaled {arch}", "steps": [("scale", ScaleConfig(0.25))]}]))
    return technique


def test_one_registration_reaches_recipes_runner_and_frontier(with_scale, tiny_data):
    from compresslab.combine import recipes
    from compresslab.combine.catalogue import catalogue
    from compresslab.running import params

    assert registry.verbs()["scale"] is with_scale
    recipe = recipes.Recipe("half", (recipes.Step("scale", ScaleConfig(0.5)),))
    model = registry.tiny_mlp()
    out, reports, written = recipes.run_recipe(recipe, model, tiny_data)
    assert torch.equal(out.fc1.weight, model.fc1.weight * 0.5) and written is None and len(reports) == 1
    with pytest.raises(TypeError, match="ScaleConfig"):
        recipes.Step("scale", object())
    assert params.spec_for("99_scale")["factor"].hi == 1
    with pytest.raises(ValueError, match="99_scale.factor=2"):
        params.check_values("99_scale", {"factor": 2})
    book = catalogue("lenet300", epochs=1.0)
    assert book[-1].name == "scaled lenet300" and book[-1].steps[0].config.factor == 0.25


def apply_other(model, config, data=None, *, inplace=False, progress=None, loss_fn=None):  # pragma: no cover
    return model, Report(config=config)


def test_registering_the_same_name_twice_is_refused(with_scale):
    other = registry.Technique(name="scale", apply=apply_other, config=ScaleConfig, example=with_scale.example)
    with pytest.raises(ValueError, match="clashes with 'scale': same name"):
        registry.register(other)


def test_every_notebook_has_a_declared_owner():
    """Every notebook has declared parameters (from one technique, or several: ptq and adaround for 03)."""
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(registry.notebook_specs()) == notebooks


def test_several_techniques_may_declare_one_notebook(with_scale):
    """A second technique adds its parameters to the notebook's; declaring a shared name differently is refused."""
    extra = registry.Technique(name="scale2", apply=apply_other, config=ScaleConfig, example=with_scale.example,
                               notebook="99_scale", params={"profile": choice("quick", "full"), "rounds": Param("int", 1, 9)})
    registry.register(extra)
    spec = registry.notebook_specs()["99_scale"]
    assert list(spec) == ["profile", "factor", "rounds"] and spec["rounds"].hi == 9
    clashing = registry.Technique(name="scale3", apply=apply_other, config=ScaleConfig, example=with_scale.example,
                                  notebook="99_scale", params={"factor": Param("float", 0, 2)})
    with pytest.raises(ValueError, match="parameter 'factor' declared differently"):
        registry.register(clashing)


def _hand_lists(tree: ast.AST) -> list[str]:
    """Module-level dict / tuple / list literals whose values name technique verbs or configs."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            names = {getattr(v, "attr", getattr(v, "id", None)) for v in node.value.values}
            if {"PruneConfig", "apply_pruning", "LowRankConfig"} & names:
                found.append(ast.unparse(node.targets[0]))
    return found


def test_no_module_keeps_a_hand_list_of_techniques():
    """What the registry derives (verbs, cases, specs, references) is not also kept by hand."""
    offenders = {}
    for path in [*(ROOT / "compresslab").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        names = _hand_lists(ast.parse(path.read_text(encoding="utf-8")))
        if names:
            offenders[str(path.relative_to(ROOT))] = names
    assert not offenders


def test_adding_a_technique_lists_the_files_it_touches():
    """docs/architecture.md's "Adding a technique" names every file a new technique touches, and
    the package files among them are at most four (plus its tests, notebook and exercise)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Adding a technique", 1)[1].split("\n## ", 1)[0]
    section = section.split("The files a new technique touches", 1)[1]
    files = {f for f in _backticked(section) if "/" in f and "." in f.rsplit("/", 1)[-1]}
    package = {f for f in files if f.startswith("compresslab/")}
    assert 1 <= len(package) <= 4, package
    for f in files:
        parent = (ROOT / f).parent
        assert parent.is_dir(), f"{f}: its folder {parent} does not exist"
    # and what the registry replaces is no longer listed by hand anywhere in the package
    assert "running/params.py" not in section and "combine/recipes.py" not in section


def _backticked(text: str) -> list[str]:
    parts = text.split("`")
    return [parts[i] for i in range(1, len(parts), 2)]
