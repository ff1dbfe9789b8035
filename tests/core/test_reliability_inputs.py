"""Round two of reliability: bad values inside documented ranges, composed configs, per-layer names,
damaged files and archives, non-finite or empty inputs to every primitive."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_dataset

from compresslab.core import models, training
from compresslab.techniques import groupquant as gq


def _lenet300(seed: int = 0) -> torch.nn.Module:
    training.seed_everything(seed)
    return models.create("lenet300")


# ----------------------------------------------------------------- 1. GPTQ on a singular Hessian

def test_gptq_with_no_damping_on_lenet300_calibration_does_not_crash():
    data = make_tiny_dataset()  # 64 calibration windows < 784 inputs: the Hessian is singular
    x = data.train.tensors(64)[0].reshape(64, -1).float()
    assert torch.linalg.matrix_rank(gq.hessian(x)) < 784
    model, report = gq.apply_groupquant(_lenet300(), gq.GroupQuantConfig(method="gptq", damp=0.0, group_size=4), data)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(row["output_error"] < 1 for row in report.layers)


def test_inverse_cholesky_raises_damping_only_as_far_as_needed():
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = gq.hessian(x)  # rank 3 of 6
    u, d = gq.inverse_cholesky(h, damp=0.0)
    assert d > 0
    damped = h + d * torch.diag(h).mean() * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(u.T @ u, torch.linalg.inv(damped), rtol=1e-6, atol=1e-6 * float(torch.linalg.inv(damped).abs().max()))
    assert torch.linalg.cholesky_ex(h + d / 10 * torch.diag(h).mean() * torch.eye(6, dtype=torch.float64)).info != 0 \
        or d == 1e-8  # a tenth of it would not have done (or it is the smallest step)
    full = gq.hessian(torch.randn(50, 6, dtype=torch.float64))  # positive definite: damp kept as given
    assert gq.inverse_cholesky(full, damp=0.0)[1] == 0.0


def test_gptq_rejects_a_non_finite_hessian_with_a_clear_error():
    h = torch.eye(4)
    h[1, 2] = float("nan")
    with pytest.raises(ValueError, match="hessian has 1 non-finite"):
        gq.gptq(torch.randn(2, 4), h, 4, 0)


# ----------------------------------------------------------------- 2. composed configs check what they forward

@pytest.mark.parametrize("temperature", [1e5, 1e-300, 0.0, float("nan")])
def test_deep_compression_rejects_the_temperatures_distillation_rejects(temperature):
    from compresslab.techniques.deepcompression import DeepCompressionConfig
    from compresslab.techniques.distillation import DistillConfig

    with pytest.raises(ValueError, match=r"DistillConfig\.temperature"):
        DistillConfig(temperature=temperature)  # the oracle: what distillation itself allows
    with pytest.raises(ValueError, match=r"DeepCompressionConfig\.distill_temperature=.* \[0\.001, 10000"):
        DeepCompressionConfig(distill_temperature=temperature)


def test_a_recipe_step_rejects_the_temperatures_distillation_rejects():
    from compresslab.combine.recipes import Step
    from compresslab.techniques.lowbit import LowBitConfig

    with pytest.raises(ValueError, match=r"teacher_temperature=1e-300"):
        Step("lowbit", LowBitConfig(), teacher_temperature=1e-300)
    assert Step("lowbit", LowBitConfig(), teacher_temperature=1e-3).teacher_temperature == 1e-3


# ----------------------------------------------------------------- 3. per-layer names are checked against the model

def _unknown_layer_cases():
    from compresslab.core.training import TrainConfig
    from compresslab.techniques.deepcompression import DeepCompressionConfig, apply_deep_compression
    from compresslab.techniques.lowbit import LowBitConfig, apply_lowbit
    from compresslab.techniques.lowrank import LowRankConfig, apply_lowrank
    from compresslab.techniques.pruning import PruneConfig, apply_pruning
    from compresslab.techniques.sharing import ShareConfig, apply_sharing
    from compresslab.techniques.wanda import WandaConfig, apply_wanda

    one = TrainConfig(epochs=1, batch_size=64)
    prune = PruneConfig(sparsity=0.5, scope="layer", schedule="iterative", iterations=1)
    return [
        ("DeepCompressionConfig.threshold_std", apply_deep_compression, DeepCompressionConfig(threshold_std={"fc_1": 1.0}, prune=prune)),
        ("DeepCompressionConfig.prune.layer_sparsity", apply_deep_compression,
         DeepCompressionConfig(prune=PruneConfig(layer_sparsity={"fc_1": 0.5}, scope="layer", schedule="iterative", finetune=one))),
        ("DeepCompressionConfig.share.layer_bits", apply_deep_compression,
         DeepCompressionConfig(prune=prune, share=ShareConfig(layer_bits={"fc_1": 4}))),
        ("PruneConfig.layer_sparsity", apply_pruning, PruneConfig(layer_sparsity={"fc_1": 0.5}, scope="layer")),
        ("ShareConfig.layer_bits", apply_sharing, ShareConfig(layer_bits={"fc_1": 4})),
        ("ShareConfig.layers", apply_sharing, ShareConfig(layers=("fc_1",))),
        ("LowRankConfig.rank", apply_lowrank, LowRankConfig(rank={"fc_1": 4})),
        ("LowRankConfig.layers", apply_lowrank, LowRankConfig(rank=4, layers=("fc_1",))),
        ("LowBitConfig.layers", apply_lowbit, LowBitConfig(layers=("fc_1",), finetune=None)),
        ("WandaConfig.layers", apply_wanda, WandaConfig(layers=("fc_1",))),
        ("GroupQuantConfig.layers", gq.apply_groupquant, gq.GroupQuantConfig(layers=("fc_1",), group_size=0)),
    ]


@pytest.mark.parametrize("case", range(11))
def test_every_per_layer_mapping_rejects_an_unknown_layer(case):
    where, apply, config = _unknown_layer_cases()[case]
    with pytest.raises(ValueError, match=rf"{where} names unknown layers \['fc_1'\]; the model's layers are "
                                         r"\['fc1', 'fc2', 'fc3'\]"):
        apply(_lenet300(), config, make_tiny_dataset())


def test_threshold_std_with_the_right_name_prunes_and_its_oracle_is_the_rule():
    from compresslab.techniques.deepcompression import std_threshold_sparsity

    model = _lenet300()
    rates = std_threshold_sparsity(model, {"fc1": 1.0})
    w = model.fc1.weight.detach()
    assert rates["fc1"] == pytest.approx(float((w.abs() < w.std()).float().mean()))
    assert rates["fc2"] == 0.0
    with pytest.raises(ValueError, match=r"threshold_std names unknown layers \['fc_1'\]"):
        std_threshold_sparsity(model, {"fc_1": 1.0})


@pytest.mark.parametrize("make", [
    lambda: __import__("compresslab.techniques.lowrank", fromlist=["x"]).LowRankConfig(rank={}),
    lambda: __import__("compresslab.techniques.pruning", fromlist=["x"]).PruneConfig(layer_sparsity={}),
    lambda: __import__("compresslab.techniques.sharing", fromlist=["x"]).ShareConfig(layer_bits={}),
    lambda: __import__("compresslab.techniques.deepcompression", fromlist=["x"]).DeepCompressionConfig(threshold_std={}),
])
def test_an_empty_per_layer_mapping_is_rejected_at_construction(make):
    with pytest.raises(ValueError, match=r"=\{\} must name at least one layer"):
        make()


def test_a_lowrank_report_without_target_layers_has_a_headline():
    from compresslab.core.metrics import model_size
    from compresslab.techniques.lowrank import LowRankConfig, LowRankReport

    size = model_size(_lenet300())
    report = LowRankReport(config=LowRankConfig(rank=4), size_before=size, size_after=size)
    assert report.reduction == 0.0
    assert "0.0% fewer params" in report.headline()


# ----------------------------------------------------------------- 4. packed files: unknown kinds, missing keys

def _packed_with_header(tmp_path, edit):
    import json
    import struct

    from compresslab.techniques import packedfile as pf

    path = tmp_path / "m.pk"
    pf.save_model(_lenet300(), path, "binary")
    raw = path.read_bytes()
    (n,) = struct.unpack("<I", raw[5:9])
    header = json.loads(raw[9:9 + n])
    edit(header)
    head = json.dumps(header).encode()
    path.write_bytes(raw[:5] + struct.pack("<I", len(head)) + head + raw[9 + n:])
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda h: h[0].update(kind="int5"), r"layer 'fc1': unknown kind 'int5'"),
    (lambda h: h[1].pop("lengths"), r"layer 'fc2': the header has no 'lengths'"),
    (lambda h: h[0].pop("shape"), r"layer 'fc1': the header has no 'shape'"),
    (lambda h: h[0].update(lengths=h[0]["lengths"][:3]), r"must give 4 blob lengths"),
    (lambda h: h[0].update(lengths=[-1] + h[0]["lengths"][1:]), r"lengths=.* non-negative integers"),
    (lambda h: h[0].update(scale_shape=[]), r"scale_shape=\[\] does not fit a binary weight"),
    (lambda h: h[2].update(name="fc1"), r"layer 'fc1' appears twice"),
    (lambda h: h.__setitem__(0, 7), r"header entry 0 is not a layer record"),
    (lambda h: h[0].update(sparse="yes"), r"sparse='yes' is not a bool"),
])
def test_a_damaged_packed_header_is_a_format_error(tmp_path, edit, message):
    from compresslab.techniques import packedfile as pf

    with pytest.raises(ValueError, match=message):
        pf.read(_packed_with_header(tmp_path, edit))


def test_an_unchanged_header_reads_back_every_kind(tmp_path):
    from compresslab.techniques import packedfile as pf

    model = _lenet300()
    for kind in pf.KINDS:
        pf.save_model(model, tmp_path / kind, kind, sparse=kind == "int8")
        layers = pf.read(tmp_path / kind)
        expected = pf.pack_model(model, kind, sparse=kind == "int8")
        assert all(torch.equal(layers[n].weight(), expected[n].weight()) for n in expected)
    with pytest.raises(ValueError, match=r"pack_model.kind names unknown layers \['fc_1'\]"):
        pf.pack_model(model, {"fc_1": "int8"})


# ----------------------------------------------------------------- 6, 9. the cache folder, entries and temporaries

def test_a_cache_folder_that_cannot_be_created_is_one_clear_line(monkeypatch):
    from compresslab.core import cache
    from compresslab.core.training import TrainConfig

    monkeypatch.setenv("COMPRESSLAB_CACHE", "/proc/no-such-process/cache")
    with pytest.raises(NotADirectoryError, match=r"^the baseline cache /proc/no-such-process/cache \(COMPRESSLAB_CACHE\) "
                                                 r"is not a usable folder .*: point COMPRESSLAB_CACHE at a folder$"):
        cache.pretrained("lenet300", make_tiny_dataset(), TrainConfig(epochs=1))


def test_a_folder_in_place_of_a_cache_entry_trains_without_caching(monkeypatch, tmp_path):
    from compresslab.core import cache
    from compresslab.core.training import TrainConfig

    monkeypatch.setenv("COMPRESSLAB_CACHE", str(tmp_path))
    data, config = make_tiny_dataset(), TrainConfig(epochs=1, batch_size=64)
    key, _ = cache.cache_key("lenet300", {}, data, config)
    (tmp_path / f"lenet300-{data.name}-{key}.pt").mkdir()
    with pytest.warns(UserWarning, match=r"could not store the baseline at .*lenet300-tiny-.*\.pt .*folder of that name"):
        baseline = cache.pretrained("lenet300", data, config, progress=False)
    assert not baseline.from_cache and 0 <= baseline.accuracy <= 100


def test_write_bytes_atomic_names_a_folder_in_the_way(tmp_path):
    from compresslab.core.io import write_bytes_atomic

    (tmp_path / "x.bin").mkdir()
    with pytest.raises(IsADirectoryError, match=r"cannot write the file .*x\.bin: a folder of that name is in the way"):
        write_bytes_atomic(tmp_path / "x.bin", b"abc")
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_a_save_killed_midway_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from compresslab.core.io import write_bytes_atomic

    target = tmp_path / "entry.pt"
    write_bytes_atomic(target, b"old")
    child = ("import os, signal, sys\n"
             "from compresslab.core import io\n"
             "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename\n"
             "io.write_bytes_atomic(sys.argv[1], b'new' * 1000)\n")
    run = subprocess.run([sys.executable, "-c", child, str(target)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir() if p.name != "entry.pt"]
    assert len(left) == 1 and left[0].startswith(".entry.pt.") and left[0].endswith(".tmp")
    assert target.read_bytes() == b"old"  # the target is untouched by the killed save
    write_bytes_atomic(target, b"newer")
    assert [p.name for p in tmp_path.iterdir()] == ["entry.pt"]
    assert target.read_bytes() == b"newer"


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    import os

    from compresslab.core.io import remove_stale_temporaries

    mine = tmp_path / f".x.bin.{os.getpid()}.abc.tmp"
    mine.write_bytes(b"in progress")
    assert remove_stale_temporaries(tmp_path / "x.bin") == []
    assert mine.exists()


# ----------------------------------------------------------------- 7. a model argument's wrong value

@pytest.mark.parametrize("kwargs, error, message", [
    ({"hidden": (2.5,)}, TypeError, r"^mlp\.hidden\[0\]=2\.5 must be an integer in \[1, 1048576\]$"),
    ({"hidden": (100, 0)}, ValueError, r"^mlp\.hidden\[1\]=0 must be an integer in \[1, 1048576\]$"),
    ({"hidden": 100}, ValueError, r"^mlp\.hidden=100 must be a non-empty list of positive integer widths$"),
    ({"dropout": 1.5}, ValueError, r"^mlp\.dropout=1\.5 must be in \[0\.0, 1\.0\)$"),
    ({"width": 3}, ValueError, r"^model='mlp' does not take arguments \['width'\]; it takes \['hidden', 'dropout'\]$"),
])
def test_create_names_the_bad_value_or_the_unknown_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        models.create("mlp", **kwargs)


def test_create_still_builds_what_it_built():
    model = models.create("mlp", hidden=[20, 30])  # a list, as an architecture read back from JSON gives it
    assert [tuple(m.weight.shape) for m in models.prunable_layers(model).values()] == [(20, 784), (30, 20), (10, 30)]


# ----------------------------------------------------------------- 10. non-finite, empty, mismatched and mistyped inputs

def _bad_input_cases():
    from compresslab.core import metrics
    from compresslab.techniques import packedfile as pf
    from compresslab.techniques import sharing, smoothquant, svd, tensordecomp, wanda

    nan = torch.tensor([[1.0, float("nan")], [0.5, 1.0]])
    inf = torch.tensor([[1.0, float("inf")], [0.5, 1.0]])
    kernel = torch.full((2, 2, 3, 3), float("nan"))
    non_finite = r"has \d+ non-finite value\(s\) \(NaN or inf\)"
    return [
        ("rtn", lambda: gq.rtn(nan, 4, 0), ValueError, non_finite),
        ("quantize_groups inf", lambda: gq.quantize_groups(inf, 4, 0), ValueError, non_finite),
        ("hessian", lambda: gq.hessian(inf), ValueError, non_finite),
        ("wanda_scores", lambda: wanda.wanda_scores(nan, torch.ones(2)), ValueError, non_finite),
        ("input_norms", lambda: wanda.input_norms(inf), ValueError, non_finite),
        ("row_mask", lambda: wanda.row_mask(nan, 0.5), ValueError, non_finite),
        ("nm_mask", lambda: wanda.nm_mask(torch.full((1, 4), float("nan"))), ValueError, non_finite),
        ("smooth_scales", lambda: smoothquant.smooth_scales(torch.ones(2), nan), ValueError, non_finite),
        ("smooth_scales absmax", lambda: smoothquant.smooth_scales(torch.tensor([1.0, float("inf")]), torch.ones(2, 2)),
         ValueError, non_finite),
        ("fake_quant_activations", lambda: smoothquant.fake_quant_activations(nan), ValueError, non_finite),
        ("fake_quant_activations per token", lambda: smoothquant.fake_quant_activations(inf, 8, "per_token"),
         ValueError, non_finite),
        ("pack_layer int8", lambda: pf.pack_layer(nan, None, "int8"), ValueError, non_finite),
        ("tucker2", lambda: tensordecomp.tucker2(kernel, (1, 1)), ValueError, non_finite),
        ("cp_als", lambda: tensordecomp.cp_als(kernel, 2), ValueError, non_finite),
        ("fake_quant_activations empty", lambda: smoothquant.fake_quant_activations(torch.empty(0, 4)), ValueError,
         r"x is empty \(shape \(0, 4\)\)"),
        ("channel_absmax empty", lambda: smoothquant.channel_absmax(torch.empty(0, 3)), ValueError,
         r"x is empty \(shape \(0, 3\)\)"),
        ("smooth_scales shapes", lambda: smoothquant.smooth_scales(torch.ones(3), torch.ones(2, 2)), ValueError,
         r"act_absmax has shape \(3,\), \(2,\) expected"),
        ("kmeans_1d seed", lambda: sharing.kmeans_1d(torch.randn(10), 2, seed="abc"), TypeError,
         r"seed='abc' must be an integer in \[0, 9223372036854775807\]"),
        ("weight_sparsity", lambda: metrics.weight_sparsity(torch.nn.Sequential(torch.nn.ReLU())), ValueError,
         r"without Linear/Conv2d weights \(Sequential\) is undefined"),
        ("rank_for_energy empty", lambda: svd.rank_for_energy(torch.empty(0), 0.9), ValueError,
         r"singular values is empty"),
        ("energy_curve nan", lambda: svd.energy_curve(torch.tensor([1.0, float("nan")])), ValueError, non_finite),
    ]


@pytest.mark.parametrize("case", range(21))
def test_bad_inputs_to_every_primitive_raise_a_clear_error(case):
    name, call, error, message = _bad_input_cases()[case]
    with pytest.raises(error, match=message):
        call()


def test_the_spectrum_of_a_zero_matrix_keeps_all_its_energy_at_rank_one():
    from compresslab.techniques import svd

    s = torch.linalg.svdvals(torch.zeros(3, 4))
    assert svd.energy_curve(s).tolist() == [1.0, 1.0, 1.0]
    assert svd.rank_for_energy(s, 0.9) == 1


# ----------------------------------------------------------------- 11. what centroid fine-tuning promises about threads

def _shared_weights(threads: int) -> dict[str, torch.Tensor]:
    from compresslab.core.training import TrainConfig
    from compresslab.techniques import sharing

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = _lenet300()
        data = make_tiny_dataset(n_train=128, n_test=32, n_val=0)
        training.train(model, data, TrainConfig(epochs=1, batch_size=32, lr=0.05), progress=False)
        config = sharing.ShareConfig(fc_bits=4, finetune=TrainConfig(epochs=1, batch_size=32, lr=0.01))
        shared, _ = sharing.apply_sharing(model, config, data)
        return {k: v.clone() for k, v in shared.state_dict().items()}
    finally:
        torch.set_num_threads(old)


def test_shared_weight_promises_only_what_holds_across_thread_counts():
    from compresslab.techniques.sharing import SharedWeight

    one, two = _shared_weights(1), _shared_weights(2)
    again = _shared_weights(1)
    assert all(torch.equal(one[k], again[k]) for k in one)  # what it promises: same thread count, same bits
    doc = " ".join(SharedWeight.__doc__.split())
    assert "any thread count" not in doc
    assert "same thread count and kind of CPU" in doc
    if not all(torch.equal(one[k], two[k]) for k in one):  # the measured reason it must not promise more
        assert "Across thread counts or CPUs it does not" in doc


# ----------------------------------------------------------------- 12. damaged archives and unpacked files

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_root(tmp_path, suffix: str):
    """A data root whose MNIST/raw links to the real files ending in `suffix` ('' unpacked, '.gz' archives)."""
    import os

    from compresslab.core import data

    src = data.resolve_root(None) / "MNIST" / "raw"
    if not all((src / (f + suffix)).is_file() for f in MNIST_FILES):
        pytest.skip(f"needs the MNIST files{suffix}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        os.symlink(src / (f + suffix), raw / (f + suffix))
    return tmp_path, src, raw


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_archive_is_named_and_said_to_fail_its_checksum(tmp_path, monkeypatch, damage):
    import torchvision

    from compresslab.core import data

    root, src, raw = _mnist_root(tmp_path, ".gz")
    good = (src / "train-labels-idx1-ubyte.gz").read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]
    (raw / "train-labels-idx1-ubyte.gz").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(bad)

    def no_download(*args, **kwargs):
        raise AssertionError("a damaged archive must not lead to a download")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", no_download)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: the archive failed its checksum \(MD5 [0-9a-f]{32}, "
                                         r"expected d53e105ee54ea40749a09fcbcd1e9432\): it is truncated or corrupted"):
        data.load("mnist", root=root)


def test_intact_archives_pass_the_checksum(tmp_path):
    from compresslab.core import data

    _, _, raw = _mnist_root(tmp_path, ".gz")
    data.check_archives("mnist", raw)  # the oracle: torchvision's own MD5 of each file


@pytest.mark.parametrize("name", MNIST_FILES)
def test_garbage_appended_to_an_unpacked_file_is_rejected(tmp_path, name):
    from compresslab.core import data

    root, src, raw = _mnist_root(tmp_path, "")
    garbage = torch.randint(0, 256, (100_000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    (raw / name).unlink()
    (raw / name).write_bytes((src / name).read_bytes() + garbage.numpy().tobytes())
    with pytest.raises(ValueError, match=rf"{name}: followed by extra bytes: its header declares .* the file has"):
        data.load("mnist", root=root)


def test_a_packed_file_with_a_nan_weight_or_scale_is_damaged(tmp_path):
    import json
    import struct

    import numpy as np

    from compresslab.techniques import packedfile as pf

    for kind, blob in (("fp32", 0), ("int8", 2)):  # fp32: a NaN code; int8: a NaN scale
        path = tmp_path / f"{kind}.pk"
        pf.save_model(_lenet300(), path, kind)
        raw = bytearray(path.read_bytes())
        (n,) = struct.unpack("<I", raw[5:9])
        lengths = json.loads(raw[9:9 + n])[0]["lengths"]
        at = 9 + n + sum(lengths[:blob])
        raw[at:at + 4] = np.float32("nan").tobytes()
        path.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="non-finite"):
            pf.unpack_into(_lenet300(), pf.read(path))


def test_the_drift_monitor_rejects_non_finite_or_empty_signals():
    import numpy as np

    from compresslab.deploy.monitor import DriftConfig, drift_trace

    config = DriftConfig(window=10, stride=5)
    good = np.linspace(0.5, 1.0, 40)
    assert len(drift_trace(good, good, config).positions) == 7  # windows ending at 10, 15, ..., 40
    with pytest.raises(ValueError, match=r"stream has 1 non-finite"):
        drift_trace(np.where(np.arange(40) == 3, np.nan, good), good, config)
    with pytest.raises(ValueError, match=r"reference must be a non-empty 1-D"):
        drift_trace(good, [], config)
    with pytest.raises(TypeError, match=r"stream must be a sequence of numbers"):
        drift_trace(object(), good, config)


def test_smoothquant_rejects_an_unknown_layer_before_any_work():
    from compresslab.techniques.smoothquant import SmoothQuantConfig, apply_smoothquant

    with pytest.raises(ValueError, match=r"apply_smoothquant.layers names unknown layers \['fc_1'\]; "
                                         r"the model's layers are \['fc1', 'fc2', 'fc3'\]"):
        apply_smoothquant(_lenet300(), SmoothQuantConfig(), make_tiny_dataset(), layers=("fc_1",))


def test_an_energy_estimate_that_overflows_is_an_error_not_inf():
    from compresslab.core.energy import estimate_energy

    assert estimate_energy(1e6, 1e300).memory_nj == pytest.approx(1e300 / 4 * 640 / 1000)  # DRAM reads, by hand
    with pytest.raises(ValueError, match=r"the memory energy .* overflowed to inf or NaN"):
        estimate_energy(1e6, 1e308)
