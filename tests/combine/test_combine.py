"""Recipes chain the technique verbs; a built point's bytes, accuracy, MACs and energy follow from
its artifact; recorded runs become points; the catalogue is valid."""

from __future__ import annotations

import pytest
import torch

from compresslab.combine import catalogue, points
from compresslab.combine import recipes as recipes_combine
from compresslab.core import energy, results
from compresslab.core.models import mlp
from compresslab.core.training import TrainConfig, evaluate
from compresslab.techniques import packedfile
from compresslab.techniques.awq import AWQConfig, apply_awq
from compresslab.techniques.distillation import DistillConfig, DistillStep
from compresslab.techniques.lowbit import LowBitConfig
from compresslab.techniques.lowrank import LowRankConfig
from compresslab.techniques.pruning import PruneConfig
from compresslab.techniques.quantization import QATConfig, QuantConfig
from compresslab.techniques.sparsegpt import SparseGPTConfig, apply_sparsegpt

FT = TrainConfig(epochs=1, lr=0.05, batch_size=32)


@pytest.fixture
def teacher(tiny_data):
    from compresslab.core.training import train

    torch.manual_seed(0)
    model = mlp([32])
    train(model, tiny_data, TrainConfig(epochs=3, lr=0.05, batch_size=32), progress=False)
    return model


def test_recipe_chains_the_verbs(tiny_data, teacher):
    recipe = recipes_combine.Recipe("distill -> prune -> ternary", (
        recipes_combine.Step("distill", DistillStep(student_kwargs={"hidden": (16,)}, config=DistillConfig(train=FT))),
        recipes_combine.Step("prune", PruneConfig(sparsity=0.5, scope="global", finetune=FT)),
        recipes_combine.Step("lowbit", LowBitConfig(kind="ternary", finetune=FT), teacher_temperature=4.0),
    ), precision="ternary", family="combination")
    model, reports, dc_file = recipes_combine.run_recipe(recipe, teacher, tiny_data)
    assert [type(r).__name__ for r in reports] == ["DistillReport", "PruningReport", "LowBitReport"]
    assert model.fc1.weight.shape == (16, 784) and dc_file is None
    assert not hasattr(model.fc1, "weight_mask")  # masks folded in
    assert len(model.fc1.weight.abs().unique()) <= 2  # ternary: |w| in {0, alpha}
    assert recipe.verbs == "distill -> prune -> lowbit -> ternary"
    assert teacher.fc1.weight.shape == (32, 784)  # the input model is untouched


def test_qat_step_leaves_plain_layers(tiny_data, teacher):
    recipe = recipes_combine.Recipe("int4", (recipes_combine.Step("qat", QATConfig(quant=QuantConfig(weight_bits=4, act_bits=None),
                                                                   finetune=FT)),), precision="int4")
    model, reports, _ = recipes_combine.run_recipe(recipe, teacher, tiny_data)
    assert type(model.fc1) is torch.nn.Linear and reports[0].method == "qat"


def test_sparsegpt_and_awq_chain_as_recipe_steps(tiny_data, teacher):
    """The calibrated one-shot verbs chain like the others: the recipe equals the two verbs applied by
    hand, the 2:4 zeros survive AWQ's 4-bit grid (0 is always on it), and every group holds at most 16 values."""
    prune_cfg = SparseGPTConfig(sparsity=0.5, pattern="2:4", calibration=64)
    quant_cfg = AWQConfig(bits=4, group_size=4, grid=5, clip_grid=5, calibration=64)
    recipe = recipes_combine.Recipe("sparsegpt 2:4 -> awq", (recipes_combine.Step("sparsegpt", prune_cfg),
                                                               recipes_combine.Step("awq", quant_cfg)))
    dense = teacher.fc1.weight.detach().clone()
    model, reports, written = recipes_combine.run_recipe(recipe, teacher, tiny_data)
    assert [type(r).__name__ for r in reports] == ["SparseGPTReport", "AWQReport"] and written is None
    by_hand, _ = apply_awq(apply_sparsegpt(teacher, prune_cfg, tiny_data)[0], quant_cfg, tiny_data)
    x = tiny_data.test.tensors(200)[0]
    with torch.no_grad():
        assert torch.equal(model(x), by_hand(x))
    groups = model.fc1.weight.detach().reshape(-1, 4)  # the pruned and quantized layer (the head stays FP32)
    assert bool(((groups == 0).sum(1) >= 2).all()) and all(len(g.unique()) <= 16 for g in groups)
    assert recipe.verbs == "sparsegpt -> awq" and torch.equal(teacher.fc1.weight, dense)  # the input model is untouched


def test_build_a_point_from_its_artifact(tiny_data, teacher, tmp_path):
    pytest.importorskip("onnxruntime")
    calib = tiny_data.train.tensors(64)[0]
    fp32 = points.build(recipes_combine.Recipe("FP32", precision="fp32", family="precision"), teacher, tiny_data, tmp_path,
                         calibration=calib)
    pruned = points.build(recipes_combine.Recipe("pruned -> INT8", (recipes_combine.Step("prune", PruneConfig(sparsity=0.8)),),
                                          precision="int8", family="combination", sparse=True),
                           teacher, tiny_data, tmp_path, calibration=calib)
    # bytes: the files on disk; the FP32 file is the weights plus a small header
    assert fp32.bytes == fp32.path.stat().st_size and 4 * (784 * 32 + 32 + 330) < fp32.bytes < 4 * 25_800 + 600
    assert pruned.bytes == pruned.path.stat().st_size < fp32.bytes / 5
    # accuracy is the artifact's: the FP32 file reproduces the model; INT8 accuracy comes from the runtime
    assert fp32.accuracy == pytest.approx(evaluate(teacher, tiny_data.test).accuracy)
    assert pruned.accuracy == pruned.runtime_accuracy and pruned.deployed.precision == "int8"
    loaded = packedfile.unpack_into(mlp([32]), packedfile.read(pruned.path))
    assert torch.equal(loaded.fc1.weight, pruned.model.fc1.weight)
    # MACs: dense per example, and the non-zero ones a zero-skipping kernel would execute
    assert fp32.macs == 784 * 32 + 32 * 10 and fp32.macs_executed == pytest.approx(fp32.macs)
    assert pruned.macs_executed == pytest.approx(0.2 * fp32.macs, rel=0.05)
    timings = points.time_points([fp32, pruned], rounds=1, repeats=2)
    assert set(timings) == {(n, e, b) for n in ("FP32", "pruned -> INT8") for e in ("torch", "runtime") for b in (1, 256)}
    rows = points.rows([fp32, pruned], timings, reference_bytes=fp32.bytes, sram_bytes=50_000)
    assert rows[0]["compression"] == 1.0 and rows[1]["compression"] == fp32.bytes / pruned.bytes
    for row, b in zip(rows, (fp32, pruned)):
        est = energy.estimate_energy(b.macs_executed, b.bytes, b.recipe.precision, sram_bytes=50_000)
        assert row["energy_nj"] == pytest.approx(est.total_nj)
        assert row["ms_b256"] == min(row["ms_torch_b256"], row["ms_runtime_b256"])
    assert rows[0]["weights_from"] == "DRAM" and rows[1]["weights_from"] == "SRAM"


def test_wins_at_size_by_hand():
    pts = [{"name": "combo", "family": "combination", "accuracy": 97.0, "bytes": 50},
           {"name": "small single", "family": "single", "accuracy": 96.0, "bytes": 40},
           {"name": "big single", "family": "single", "accuracy": 99.0, "bytes": 60},
           {"name": "tiny combo", "family": "combination", "accuracy": 90.0, "bytes": 10},
           {"name": "loser", "family": "combination", "accuracy": 95.0, "bytes": 55}]
    out = {w["name"]: w for w in points.wins_at_size(pts)}
    assert out["combo"]["beats_all"] and out["combo"]["best_other"] == "small single"
    assert out["combo"]["margin_points"] == 1.0
    assert not out["tiny combo"]["beats_all"] and out["tiny combo"]["unmatched"]
    assert not out["loser"]["beats_all"] and out["loser"]["best_other"] == "small single"


def test_points_from_recorded_runs(tmp_path):
    results.record("05_svd", {"point_accuracy": 97.5, "point_bytes": 20_000, "point_latency_ms": 0.1}, {"seed": 0},
                   tmp_path / "run0")
    results.record("06_deep_compression", {"loaded_accuracy": 98.1, "file_bytes": 26_000}, {}, tmp_path / "run1")
    results.record("08_pareto_frontier", {"points": [{"name": "INT8", "family": "precision", "accuracy": 98.5,
                                                      "bytes": 270_000, "ms_b1": 0.02},
                                                     {"name": "no size", "accuracy": 90.0, "bytes": None}]},
                   {}, tmp_path / "run2")
    results.record("01_magnitude_pruning", {"sparsity": 0.9}, {}, tmp_path / "run3")  # no point in it
    (tmp_path / "broken.results.json").write_text("{")
    with pytest.warns(UserWarning, match="skipping"):
        pts = points.points_from_runs(tmp_path)
    got = {p["name"]: (p["accuracy"], p["bytes"], p["family"]) for p in pts}
    assert got == {"05_svd run0": (97.5, 20_000.0, "recorded"),
                   "06_deep_compression run1": (pytest.approx(98.1), 26_000.0, "recorded"),
                   "run2: INT8": (98.5, 270_000, "recorded")}
    assert points.points_from_runs(tmp_path / "empty") == []


def test_recipe_validation():
    with pytest.raises(ValueError, match=r"Recipe.precision='int5' must be one of"):
        recipes_combine.Recipe("x", precision="int5")
    with pytest.raises(ValueError, match=r"Step.verb='quantum' must be one of"):
        recipes_combine.Step("quantum", None)
    with pytest.raises(TypeError, match="Step.config=.* must be a PruneConfig"):
        recipes_combine.Step("prune", LowRankConfig(rank=2))
    with pytest.raises(ValueError, match=r"teacher_temperature is for a step of \['lowbit'\], not 'prune'"):
        recipes_combine.Step("prune", PruneConfig(), teacher_temperature=2.0)
    with pytest.raises(ValueError, match="Recipe.family='mixed'"):
        recipes_combine.Recipe("x", family="mixed")


def test_catalogue_is_valid_for_both_architectures():
    for arch in ("lenet300", "lenet5"):
        recipes = catalogue.catalogue(arch, epochs=0.5)
        assert len({r.name for r in recipes}) == len(recipes)
        assert {r.family for r in recipes} == {"precision", "single", "combination"}
        # every rung of the ladder; int3 and int2 are widths mixed precision gives single layers, not rungs
        ladder = [k for k in packedfile.KINDS if k not in ("int3", "int2")]
        assert sorted(r.precision for r in recipes if r.family == "precision") == sorted(ladder)
    with pytest.raises(ValueError, match="arch='resnet'"):
        catalogue.catalogue("resnet")
