"""Exercise checks: the references pass, plausible wrong answers fail with a useful message, stubs get
a friendly message, and outcomes are recorded for grading."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compresslab.exercises import checking, checks
from compresslab.techniques import (
    distillation,
    filelayers,
    lowrank,
    quantops,
    sharing,
    svd,
)
from compresslab.techniques import masks as mask_ops


@pytest.fixture(autouse=True)
def no_ledger(monkeypatch):
    monkeypatch.delenv("COMPRESSLAB_RESULTS_DIR", raising=False)


@pytest.mark.parametrize("name", sorted(checks.REFERENCES))
def test_reference_passes(name, capsys):
    checks.CHECKS[name](checks.REFERENCES[name])
    out = capsys.readouterr().out
    if name in checks.TARGETS:  # an open target reports its measurement
        assert out.startswith(f"[ok] {name}: ") and "accuracy" in out or "fewer" in out
    else:
        assert out.startswith(f"[ok] {name}: all ") and "cases match the reference" in out


def failure(name: str, fn) -> str:
    """The message of the CheckFailed that check_<name>(fn) must raise."""
    with pytest.raises(checking.CheckFailed) as info:
        checks.CHECKS[name](fn)
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    assert f"{name} is not right yet" in message or name in message
    assert "expected" in message and "got" in message and "hint" in message
    return message


# ----------------------------------------------------------------- wrong answers, check by check

def _mask_k(w, k, largest):
    mask = torch.ones_like(w)
    if k:
        mask.view(-1)[torch.topk(w.abs().flatten(), k, largest=largest).indices] = 0
    return mask


def test_magnitude_mask_rejects_plausible_mistakes():
    largest = lambda w, s: _mask_k(w, round(s * w.numel()), largest=True)  # noqa: E731
    assert "LARGEST" in failure("magnitude_mask", largest)
    signed = lambda w, s: torch.where(w <= torch.kthvalue(w.flatten(), max(1, round(s * w.numel())))[0], 0.0, 1.0)  # noqa: E731
    failure("magnitude_mask", signed)
    keeps_fraction = lambda w, s: _mask_k(w, w.numel() - round(s * w.numel()), largest=False)  # noqa: E731
    failure("magnitude_mask", keeps_fraction)
    floor_k = lambda w, s: _mask_k(w, int(s * w.numel()), largest=False)  # noqa: E731
    assert "floor" in failure("magnitude_mask", floor_k)

    def in_place(w, s):
        w.abs_()
        return mask_ops.magnitude_mask(w, s)

    assert "in place" in failure("magnitude_mask", in_place)
    failure("magnitude_mask", lambda w, s: mask_ops.magnitude_mask(w, s).flatten())  # wrong shape


def test_global_masks_reject_layerwise_and_missing_keys():
    layerwise = lambda ws, s: {k: mask_ops.magnitude_mask(w, s) for k, w in ws.items()}  # noqa: E731
    assert "layer-wise" in failure("global_magnitude_masks", layerwise)
    failure("global_magnitude_masks", lambda ws, s: list(mask_ops.global_magnitude_masks(ws, s).values()))


def test_cubic_sparsity_rejects_linear_and_unclamped():
    def linear(step, initial, final, start, n, interval):
        p = min(max((step - start) / (n * interval), 0.0), 1.0)
        return final + (initial - final) * (1 - p)

    def unclamped(step, initial, final, start, n, interval):
        return final + (initial - final) * (1 - (step - start) / (n * interval)) ** 3

    assert "linear" in failure("cubic_sparsity", linear)
    assert "clamp" in failure("cubic_sparsity", unclamped)


def test_prune_survivors_rejects_ignoring_the_mask():
    assert "survivors" in failure("prune_survivors", lambda w, m, r: mask_ops.magnitude_mask(w, r))
    # re-ranking everything (pruned weights can come back) is caught explicitly
    assert "came back" in failure("prune_survivors", lambda w, m, r: mask_ops.magnitude_mask(w, r * m.mean().item()))


def test_rewind_rejects_in_place_unattached_and_ignored_state():
    def in_place(template, state, masks):
        template.load_state_dict(state)
        mask_ops.set_masks(template, masks)
        return template

    def multiplies_once(template, state, masks):
        model = copy.deepcopy(template)
        model.load_state_dict(state)
        with torch.no_grad():
            for name, mask in masks.items():
                getattr(model, name).weight.mul_(mask)
        return model

    def ignores_state(template, state, masks):
        model = copy.deepcopy(template)
        mask_ops.set_masks(model, masks)
        return model

    assert "template" in failure("rewind", in_place)
    assert "mask helper" in failure("rewind", multiplies_once)
    assert "state" in failure("rewind", ignores_state)


def test_random_masks_rejects_lowest_scores():
    def lowest(masks, scores):
        out = {}
        for n, m in masks.items():
            new = torch.zeros(m.numel())
            count = int(m.sum())
            if count:
                new[torch.topk(scores[n].flatten(), count, largest=False).indices] = 1
            out[n] = new.reshape(m.shape)
        return out

    assert "highest" in failure("random_masks_like", lowest)


def test_choose_qparams_rejects_wide_grid_unwidened_range_and_float_zero_point():
    def wide_grid(lo, hi, bits, scheme):
        s, z = quantops.choose_qparams(lo, hi, bits, scheme)
        if scheme == "symmetric":
            s = s * (2 ** (bits - 1) - 1) / 2 ** (bits - 1)
        return s, z

    def unwidened(lo, hi, bits, scheme):
        qmin, qmax = quantops.qrange(bits, scheme)
        lo, hi = torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)
        if scheme == "symmetric":
            return torch.clamp(torch.maximum(lo.abs(), hi.abs()) / qmax, min=1e-7), torch.zeros_like(lo)
        s = (hi - lo) / (qmax - qmin)
        return s, torch.clamp(qmin - torch.round(lo / s), qmin, qmax)

    def float_zero_point(lo, hi, bits, scheme):
        s, z = quantops.choose_qparams(lo, hi, bits, scheme)
        lo = torch.clamp(torch.as_tensor(lo, dtype=torch.float32), max=0)
        return s, (quantops.qrange(bits, scheme)[0] - lo / s) if scheme == "asymmetric" else z

    assert "narrow range" in failure("choose_qparams", wide_grid)
    assert "include 0" in failure("choose_qparams", unwidened)
    assert "integer" in failure("choose_qparams", float_zero_point)


def test_quantize_affine_rejects_floor_and_missing_clamp_and_accepts_division():
    floor = lambda x, s, z, lo, hi: torch.clamp(torch.floor(x / s) + z, lo, hi).to(torch.int32)  # noqa: E731
    no_clamp = lambda x, s, z, lo, hi: (torch.round(x / s) + z).to(torch.int32)  # noqa: E731
    minus_z = lambda x, s, z, lo, hi: torch.clamp(torch.round(x / s) - z, lo, hi).to(torch.int32)  # noqa: E731
    assert "NEAREST" in failure("quantize_affine", floor)
    assert "clamp" in failure("quantize_affine", no_clamp)
    assert "ADDED" in failure("quantize_affine", minus_z)
    # x / s instead of the reference's x * (1 / s) is also correct
    checks.check_quantize_affine(lambda x, s, z, lo, hi: torch.clamp(torch.round(x / s) + z, lo, hi).to(torch.int32))


def test_fake_quantize_rejects_missing_ste_unclipped_ste_and_integers():
    def no_ste(x, s, z, qmin, qmax):  # torch.round has zero gradient
        return (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s

    def identity_ste(x, s, z, qmin, qmax):
        x_hat = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s
        return x + (x_hat - x).detach()

    def integers(x, s, z, qmin, qmax):
        q = torch.clamp(torch.round(x / s) + z, qmin, qmax)
        return x + (q - x).detach()

    def clamp_ste(x, s, z, qmin, qmax):  # the notebook's formulation: correct
        x_hat = (torch.clamp(torch.round(x / s) + z, qmin, qmax) - z) * s
        x_c = torch.clamp(x, torch.as_tensor((qmin - z) * s), torch.as_tensor((qmax - z) * s))
        return x_c + (x_hat - x_c).detach()

    assert "zero everywhere" in failure("fake_quantize", no_ste)
    assert "clipped" in failure("fake_quantize", identity_ste)
    assert "dequantized" in failure("fake_quantize", integers)
    checks.check_fake_quantize(clamp_ste)


def test_soft_targets_rejects_dividing_probabilities_and_wrong_dim():
    assert "LOGITS" in failure("soft_targets", lambda z, t: F.softmax(z, -1) / t)
    assert "classes" in failure("soft_targets", lambda z, t: F.softmax(z / t, 0))


def _kl(s, t, temperature):
    p_t = F.softmax(t / temperature, -1)
    return (p_t * (F.log_softmax(t / temperature, -1) - F.log_softmax(s / temperature, -1))).sum(-1).mean()


@pytest.mark.filterwarnings("ignore:reduction")
def test_kd_loss_rejects_missing_t_squared_and_other_mistakes():
    def no_t2(s, t, y, temperature, alpha):
        return alpha * _kl(s, t, temperature) + (1 - alpha) * F.cross_entropy(s, y)

    def reversed_kl(s, t, y, temperature, alpha):
        return alpha * temperature**2 * _kl(t, s, temperature) + (1 - alpha) * F.cross_entropy(s, y)

    def mean_reduction(s, t, y, temperature, alpha):
        soft = F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="mean")
        return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)

    def soft_cross_entropy(s, t, y, temperature, alpha):
        soft = -(F.softmax(t / temperature, -1) * F.log_softmax(s / temperature, -1)).sum(-1).mean()
        return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)

    def detached(s, t, y, temperature, alpha):
        return distillation.kd_loss(s, t, y, temperature, alpha).detach()

    def manual(s, t, y, temperature, alpha):  # the same loss written out by hand: correct
        return alpha * temperature**2 * _kl(s, t, temperature) + (1 - alpha) * F.cross_entropy(s, y)

    assert "T^2" in failure("kd_loss", no_t2)
    assert "not symmetric" in failure("kd_loss", reversed_kl)
    assert "batchmean" in failure("kd_loss", mean_reduction)
    assert "cross-entropy" in failure("kd_loss", soft_cross_entropy)
    assert "gradient" in failure("kd_loss", detached)
    checks.check_kd_loss(manual)


def test_svd_factorize_rejects_smallest_values_and_missing_s():
    def smallest(w, r):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, -r:] * s[-r:], vh[-r:]

    def no_s(w, r):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :r], vh[:r]

    def unbalanced(w, r):  # a = U_r S_r, b = Vh_r is also a correct factorization
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :r] * s[:r], vh[:r]

    assert "LARGEST" in failure("svd_factorize", smallest)
    assert "missing" in failure("svd_factorize", no_s)
    failure("svd_factorize", lambda w, r: svd.svd_factorize(w, r)[::-1])  # factors swapped
    checks.check_svd_factorize(unbalanced)


def test_rank_for_energy_rejects_unsquared_and_off_by_one():
    def unsquared(s, e):
        c = torch.cumsum(s.double(), 0) / s.double().sum()
        return min(int((c < e).sum()) + 1, len(s))

    def zero_based(s, e):
        c = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
        return min(int((c < e).sum()), len(s))

    def strict(s, e):
        c = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
        return min(int((c <= e).sum()) + 1, len(s))

    assert "SQUARED" in failure("rank_for_energy", unsquared)
    assert "from 1" in failure("rank_for_energy", zero_based)
    assert ">=" in failure("rank_for_energy", strict)
    assert "integer" in failure("rank_for_energy", lambda s, e: float(svd.rank_for_energy(s, e)))


def test_factorize_linear_rejects_extra_bias_and_modified_layer():
    def both_biases(layer, r):
        a, b = svd.svd_factorize(layer.weight.detach(), r)
        first, second = nn.Linear(layer.in_features, r), nn.Linear(r, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            first.weight.copy_(b)
            second.weight.copy_(a)
            if layer.bias is not None:
                second.bias.copy_(layer.bias)
        return nn.Sequential(first, second)

    def modifies(layer, r):
        out = lowrank.factorize_layer(layer, r)
        with torch.no_grad():
            layer.weight.zero_()
        return out

    def no_bias_copy(layer, r):
        out = lowrank.factorize_layer(layer, r)
        if layer.bias is not None:
            with torch.no_grad():
                out[1].bias.zero_()
        return out

    assert "parameters" in failure("factorize_linear", both_biases)
    assert "modified" in failure("factorize_linear", modifies)
    failure("factorize_linear", no_bias_copy)


def test_init_centroids_rejects_symmetric_linear_and_wrong_quantiles():
    def symmetric(w, k, method="linear"):
        m = float(w.abs().max())
        return torch.linspace(-m, m, k) if method == "linear" else sharing.init_centroids(w, k, method)

    def end_quantiles(w, k, method="linear"):
        if method == "linear":
            return sharing.init_centroids(w, k, method)
        return torch.quantile(w.flatten().double(), torch.linspace(0, 1, k, dtype=torch.float64)).float()

    assert "min(w)" in failure("init_centroids", symmetric)
    assert "(i + 1/2) / k" in failure("init_centroids", end_quantiles)
    assert "sorted" in failure("init_centroids", lambda w, k, method="linear": sharing.init_centroids(w, k, method).flip(0))


def test_huffman_code_rejects_non_prefix_fixed_length_and_wrong_symbols():
    def not_prefix_free(counts):
        used = [s for s, c in enumerate(counts) if c > 0]
        return {s: format(i, "b") for i, s in enumerate(used)}  # '0', '1', '10', ...: '1' starts '10'

    def fixed_length(counts):
        used = [s for s, c in enumerate(counts) if c > 0]
        width = max(1, (len(used) - 1).bit_length())
        return {s: format(i, f"0{width}b") for i, s in enumerate(used)}

    def every_symbol(counts):
        code = checks.REFERENCES["huffman_code"](counts)
        return {**code, **{s: "1" * 30 for s, c in enumerate(counts) if c == 0}}

    def flipped(counts):  # swapping 0 and 1 keeps the code optimal and prefix-free: correct
        return {s: w.translate(str.maketrans("01", "10")) for s, w in checks.REFERENCES["huffman_code"](counts).items()}

    assert "prefix" in failure("huffman_code", not_prefix_free)
    assert "not optimal" in failure("huffman_code", fixed_length)
    assert "only to those" in failure("huffman_code", every_symbol)
    failure("huffman_code", lambda counts: [len(counts)])
    checks.check_huffman_code(flipped)


def test_relative_encode_rejects_gaps_from_zero_and_missing_fillers():
    def from_zero(positions, bits):
        return filelayers.relative_encode(np.asarray(positions) - 1, bits) if len(positions) and positions[0] > 0 \
            else filelayers.relative_encode(positions, bits)

    def no_fillers(positions, bits):
        return np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)

    def floor_fillers(positions, bits):
        m, out = 2**bits - 1, []
        for g in np.diff(np.asarray(positions, dtype=np.int64), prepend=-1).tolist():
            out += [0] * (g // m) + [g - m * (g // m)]
        return out

    assert "-1" in failure("relative_encode", from_zero)
    assert "filler" in failure("relative_encode", no_fillers)
    assert "(gap - 1) // M" in failure("relative_encode", floor_fillers)


# ----------------------------------------------------------------- stubs, errors, grading records

def _stub(*args, **kwargs):
    raise NotImplementedError("magnitude_mask: not written yet (see the hint above)")


def test_stub_gets_a_friendly_message():
    with pytest.raises(checking.ExerciseNotDone) as info:
        checks.check_magnitude_mask(_stub)
    message = str(info.value)
    assert "not implemented yet" in message and "raise NotImplementedError" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    rendered = info.value._render_traceback_()  # what Jupyter shows instead of a traceback
    assert len(rendered) == 1 and rendered[0].startswith("ExerciseNotDone:") and "File " not in rendered[0]
    assert isinstance(info.value, NotImplementedError)


@pytest.mark.parametrize("name", sorted(checks.CHECKS))
def test_every_check_turns_a_stub_into_the_friendly_message(name):
    with pytest.raises(checking.ExerciseNotDone, match="not implemented yet"):
        checks.CHECKS[name](_stub)


def test_other_errors_in_student_code_propagate_with_a_note():
    def broken(w, s):
        raise TypeError("my bug")

    with pytest.raises(TypeError, match="my bug") as info:
        checks.check_magnitude_mask(broken)
    assert any("check_magnitude_mask" in note for note in getattr(info.value, "__notes__", []))


def test_non_callable_is_rejected_clearly():
    with pytest.raises(checking.CheckFailed, match="Pass the function itself"):
        checks.check_magnitude_mask(torch.ones(3))


def test_checks_write_nothing(tmp_path, monkeypatch):
    """Checks in a student's kernel record nothing: grading never trusts the kernel."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMPRESSLAB_RESULTS_DIR", str(tmp_path))
    checks.check_cubic_sparsity(mask_ops.cubic_sparsity)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------- per-student cases

def cases_seen(name: str, student: str | None) -> list:
    """The first argument of every call the check makes, for `student`."""
    seen = []

    def spy(*args):
        seen.append(copy.deepcopy(args[0]))
        return checks.REFERENCES[name](*args)

    with checking.student_cases(student):
        checks.CHECKS[name].run(spy)
    return seen


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(torch.as_tensor(x), torch.as_tensor(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["magnitude_mask", "quantize_affine", "kd_loss", "svd_factorize", "select_channels"])
def test_two_students_get_different_cases_and_one_student_the_same(name):
    alice, bob = cases_seen(name, "alice"), cases_seen(name, "bob")
    assert same(alice, cases_seen(name, "alice"))
    assert not same(alice, bob)
    assert same(cases_seen(name, None), cases_seen(name, None))  # interactive: the default cases
    assert checking.student_seed("alice") == checking.student_seed(" alice ") != checking.student_seed("bob")
    assert checking.student_seed(None) is None and checking.student_seed("") is None


# ----------------------------------------------------------------- hints that point at the mistake

def test_kd_loss_names_probabilities_passed_for_log_probabilities():
    def probs_in(s, t, y, temperature, alpha):
        soft = F.kl_div(F.softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                        reduction="batchmean", log_target=True)
        return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)

    def probs_target(s, t, y, temperature, alpha):
        soft = F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                        reduction="batchmean", log_target=True)
        return alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(s, y)

    assert "LOG-probabilities as its input" in failure("kd_loss", probs_in)
    assert "the target must be the teacher's LOG-probabilities" in failure("kd_loss", probs_target)


# ----------------------------------------------------------------- 07 structured pruning

def test_select_channels_rejects_l2_smallest_signed_and_unsorted():
    def scores(w):
        return w.reshape(w.shape[0], -1)

    def keep(values, s, largest=True):
        n = max(1, round((1 - s) * len(values)))
        return torch.topk(values, n, largest=largest).indices

    assert "L2 norm" in failure("select_channels", lambda w, s: keep(scores(w).norm(dim=1), s).sort().values)
    assert "SMALLEST norm" in failure("select_channels", lambda w, s: keep(scores(w).abs().sum(1), s, False).sort().values)
    assert "ABSOLUTE" in failure("select_channels", lambda w, s: keep(scores(w).sum(1), s).sort().values)
    assert "not sorted" in failure("select_channels",
                                   lambda w, s: keep(scores(w).abs().sum(1), s).sort(descending=True).values)


def test_shrink_pair_rejects_wrong_sizes_and_a_lost_bias():
    def rows_of_second(first, second, keep):  # slices the second layer's rows instead of its columns
        a, b = nn.Linear(first.in_features, len(keep)), nn.Linear(second.in_features, len(keep))
        return a, b

    assert "wrong sizes" in failure("shrink_pair", rows_of_second)

    def no_bias_copy(first, second, keep):
        a = nn.Linear(first.in_features, len(keep), bias=first.bias is not None)
        b = nn.Linear(len(keep), second.out_features, bias=second.bias is not None)
        with torch.no_grad():
            a.weight.copy_(first.weight[keep])
            b.weight.copy_(second.weight[:, keep])
        return a, b

    assert "values differ" in failure("shrink_pair", no_bias_copy)


# ----------------------------------------------------------------- open targets

def test_open_targets_fail_with_the_measurement_and_validate_the_choice():
    message = failure("pruning_target", lambda: {"fc1": 0.9, "fc2": 0.9, "fc3": 0.9})
    assert "does not meet the target" in message and "of the weights remain" in message
    assert "10%" in message  # the stated target
    with pytest.raises(checking.CheckFailed, match="keys"):
        checks.check_pruning_target(lambda: {"conv1": 0.5})
    with pytest.raises(checking.CheckFailed, match="must be an integer"):
        checks.check_bits_target(lambda: {"fc1": 3.5, "fc2": 4, "fc3": 8})
    message = failure("bits_target", lambda: {"fc1": 8, "fc2": 8, "fc3": 8})
    assert "8.00 bits per weight" in message
    message = failure("distillation_target", lambda: {"temperature": 1.0, "alpha": 0.0})
    assert "fewer" in message


def test_every_open_target_is_named_and_has_a_reachable_reference():
    assert set(checks.TARGETS) <= set(checks.CHECKS) and len(checks.TARGETS) == 7
    for name in checks.TARGETS:
        assert checks.FORBIDDEN[name] == ()  # any package function may help reach a target
