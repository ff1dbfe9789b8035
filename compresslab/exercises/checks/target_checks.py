"""Open targets: one per notebook, graded by a measured result, not by comparison with a reference.

The student's function returns a choice (per-layer sparsities, bits, ranks, widths, a temperature
and alpha); the check applies it with the package's own implementation to a small trained MLP
(784-128-64-10 on 2000 MNIST images, from the baseline cache: seconds on a CPU) and measures
accuracy and size. Every student meets the same target; any choice that meets it passes.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping

import torch

from compresslab.core import cache, data, models, training
from compresslab.exercises.checking import CheckFailed, call, exercise_check
from compresslab.techniques import (
    distillation,
    imp,
    lowrank,
    quantops,
    sharing,
    structured,
)
from compresslab.techniques import masks as mask_ops

__all__ = [
    "TARGETS",
    "target_setup",
    "reference_choices",
    "check_pruning_target",
    "check_ticket_target",
    "check_bits_target",
    "check_distillation_target",
    "check_rank_target",
    "check_deep_compression_target",
    "check_width_target",
]

HIDDEN = (128, 64)
LAYERS = ("fc1", "fc2", "fc3")
TARGETS = {  # the stated target of each, shown in the notebooks and in failure messages
    "pruning_target": "at most 10% of the weights remain and test accuracy >= 85% (no fine-tuning)",
    "ticket_target": "at most 10% of the weights remain and, rewound to their initial values and retrained, "
                     "test accuracy >= 87.5%",
    "bits_target": "average bits per weight <= 3.25 and test accuracy at most 1 point below float",
    "distillation_target": "the distilled student makes at least 25 fewer test errors (of 1000) than the student alone",
    "rank_target": "at most 15% of the model's parameters and test accuracy at most 2 points below the original",
    "deep_compression_target": "compression >= 40x (analytic bits: index + 5-bit gap per non-zero, 32-bit codebook) "
                               "and test accuracy >= 85.5% (no retraining)",
    "width_target": "at most 50% of the model's parameters and test accuracy >= 87% (no fine-tuning)",
}


@functools.lru_cache(maxsize=1)
def target_setup() -> tuple:
    """(data, trained model, its initial state, float accuracy in percent): the small MLP every target uses."""
    ds = data.load("mnist", train_subset=2000, test_subset=1000, seed=0)
    config = training.TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine", seed=0)
    base = cache.pretrained("mlp", ds, config, model_kwargs={"hidden": HIDDEN}, progress=False)
    training.seed_everything(config.seed)
    initial = copy.deepcopy(models.create("mlp", hidden=HIDDEN).state_dict())
    return ds, base.model.eval(), initial, training.evaluate(base.model, ds.test).accuracy


def _accuracy(model) -> float:
    return training.evaluate(model, target_setup()[0].test).accuracy


def _miss(name: str, measured: str, hint: str) -> CheckFailed:
    return CheckFailed(f"{name} does not meet the target yet.\n  case:     the open target\n"
                       f"  problem:  measured {measured}\n  expected: {TARGETS[name]}\n  got:      {measured}\n"
                       f"  hint:     {hint}")


def _choice(name: str, fn: Callable, keys: tuple[str, ...], low: float, high: float, integer: bool = False,
            required: tuple[str, ...] | None = None) -> dict:
    """The student's dict, validated: known keys, numbers in [low, high]."""
    got = call(name, fn, "the open target")
    required = keys if required is None else required
    if not isinstance(got, Mapping) or not set(required) <= set(got) or not set(got) <= set(keys):
        raise CheckFailed(f"{name}: return a dict with the keys {list(required)}"
                          + (f" (optionally {[k for k in keys if k not in required]})" if required != keys else "")
                          + f"; got {got!r}")
    for key, value in got.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if not ok or (integer and int(value) != value):
            kind = "an integer" if integer else "a number"
            raise CheckFailed(f"{name}: {key}={value!r} must be {kind} in [{low:g}, {high:g}]")
    return {k: (int(v) if integer else float(v)) for k, v in got.items()}


def _masked(model, sparsities: dict) -> tuple[torch.nn.Module, dict, float]:
    net = copy.deepcopy(model)
    masks = {n: mask_ops.magnitude_mask(layer.weight.detach(), sparsities.get(n, 0.0))
             for n, layer in models.prunable_layers(net).items()}
    remaining = sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    return net, masks, remaining


@exercise_check("pruning_target")
def check_pruning_target(fn: Callable) -> str:
    """pruning_target() -> {layer: sparsity}; magnitude pruning of the small MLP, no fine-tuning."""
    name = "pruning_target"
    choice = _choice(name, fn, LAYERS, 0.0, 0.999)
    net, masks, remaining = _masked(target_setup()[1], choice)
    with torch.no_grad():
        for n, layer in models.prunable_layers(net).items():
            layer.weight.mul_(masks[n])
    acc = _accuracy(net)
    measured = f"{100 * remaining:.2f}% of the weights remain, accuracy {acc:.1f}%"
    if remaining > 0.10 + 1e-9 or acc < 85:
        raise _miss(name, measured, "the layers are not equally sensitive: prune the big first layer hard and the "
                    "small output layer gently (your sensitivity scan or the global masks tell you how)")
    return measured


@exercise_check("ticket_target")
def check_ticket_target(fn: Callable) -> str:
    """ticket_target() -> {layer: sparsity}; one-shot mask, rewound to init, retrained 4 epochs."""
    name = "ticket_target"
    choice = _choice(name, fn, LAYERS, 0.0, 0.999)
    ds, model, initial, _ = target_setup()
    _, masks, remaining = _masked(model, choice)
    template = models.create("mlp", hidden=HIDDEN)
    ticket = imp.rewind(template, initial, masks)
    training.train(ticket, ds, training.TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine", seed=0), progress=False)
    acc = _accuracy(ticket)
    measured = f"{100 * remaining:.2f}% of the weights remain, retrained ticket accuracy {acc:.1f}%"
    if remaining > 0.10 + 1e-9 or acc < 87.5:
        raise _miss(name, measured, "Frankle & Carbin prune the output layer at a lower rate than the hidden "
                    "layers; which layer holds most of the weights?")
    return measured


@exercise_check("bits_target")
def check_bits_target(fn: Callable) -> str:
    """bits_target() -> {layer: bits}; symmetric per-channel weight PTQ of the small MLP."""
    name = "bits_target"
    choice = _choice(name, fn, LAYERS, 2, 8, integer=True)
    _, model, _, float_acc = target_setup()
    net = copy.deepcopy(model)
    total = bits = 0
    with torch.no_grad():
        for n, layer in models.prunable_layers(net).items():
            w, b = layer.weight, choice[n]
            scale, zero = quantops.choose_qparams(w.amin(1, keepdim=True), w.amax(1, keepdim=True), b, "symmetric")
            w.copy_(quantops.fake_quantize(w, scale, zero, *quantops.qrange(b, "symmetric")))
            total, bits = total + w.numel(), bits + b * w.numel()
    acc = _accuracy(net)
    measured = f"{bits / total:.2f} bits per weight on average, accuracy {acc:.1f}% (float {float_acc:.1f}%)"
    if bits / total > 3.25 + 1e-9 or acc < float_acc - 1 - 1e-7:
        raise _miss(name, measured, "nearly all weights are in fc1: its bits decide the average; "
                    "the small layers can afford more")
    return measured


@exercise_check("distillation_target")
def check_distillation_target(fn: Callable) -> str:
    """distillation_target() -> {"temperature": T, "alpha": a}; a 20-neuron student on 300 images."""
    name = "distillation_target"
    choice = _choice(name, fn, ("temperature", "alpha"), 0.0, 100.0)
    if not (choice["temperature"] > 0 and 0 <= choice["alpha"] <= 1):
        raise CheckFailed(f"{name}: temperature must be > 0 and alpha in [0, 1]; got {choice}")
    teacher = distillation.freeze(target_setup()[1])
    transfer = data.load("mnist", train_subset=300, test_subset=1000, seed=1)
    config = training.TrainConfig(epochs=10, lr=0.05, lr_schedule="cosine", seed=1)

    def errors(temperature: float, alpha: float) -> int:
        training.seed_everything(1)
        student = models.create("mlp", hidden=(20,))

        def loss_fn(logits, targets, inputs):
            with torch.no_grad():
                teacher_logits = teacher(inputs)
            return distillation.kd_loss(logits, teacher_logits, targets, temperature, alpha)

        training.train(student, transfer, config, loss_fn=loss_fn, progress=False)
        return round((1 - training.evaluate(student, transfer.test).accuracy / 100) * len(transfer.test))

    alone, distilled = errors(1.0, 0.0), errors(choice["temperature"], choice["alpha"])
    measured = f"{distilled} test errors distilled vs {alone} alone ({alone - distilled} fewer)"
    if alone - distilled < 25:
        raise _miss(name, measured, "at T = 1 the teacher's probabilities are nearly one-hot; how much weight "
                    "does the soft term get?")
    return measured


@exercise_check("rank_target")
def check_rank_target(fn: Callable) -> str:
    """rank_target() -> {layer: rank} for fc1 and fc2 (fc3 optional); truncated SVD, no fine-tuning."""
    name = "rank_target"
    choice = _choice(name, fn, LAYERS, 1, 64, integer=True, required=("fc1", "fc2"))
    _, model, _, float_acc = target_setup()
    net = copy.deepcopy(model)
    for n, r in choice.items():
        setattr(net, n, lowrank.factorize_layer(getattr(net, n), min(r, min(getattr(net, n).weight.shape))))
    share = sum(p.numel() for p in net.parameters()) / sum(p.numel() for p in model.parameters())
    acc = _accuracy(net)
    measured = f"{100 * share:.1f}% of the parameters, accuracy {acc:.1f}% (original {float_acc:.1f}%)"
    if share > 0.15 + 1e-9 or acc < float_acc - 2 - 1e-7:
        raise _miss(name, measured, "look at the singular values of each trained layer: how many carry most "
                    "of the energy? fc1's rank costs 784 + 128 parameters per unit")
    return measured


@exercise_check("deep_compression_target")
def check_deep_compression_target(fn: Callable) -> str:
    """deep_compression_target() -> {"fc1_sparsity", ..., "fc1_bits", ...}: prune, then k-means share."""
    name = "deep_compression_target"
    keys = tuple(f"{n}_{k}" for n in LAYERS for k in ("sparsity", "bits"))
    choice = _choice(name, fn, keys, 0.0, 8.0)
    if any(not 0 <= choice[f"{n}_sparsity"] < 1 or choice[f"{n}_bits"] not in range(1, 9) for n in LAYERS):
        raise CheckFailed(f"{name}: sparsities must be in [0, 1) and bits integers in 1..8; got {choice}")
    net = copy.deepcopy(target_setup()[1])
    dense = coded = 0
    with torch.no_grad():
        for n, layer in models.prunable_layers(net).items():
            w, bits = layer.weight, int(choice[f"{n}_bits"])
            pruned = w * mask_ops.magnitude_mask(w, choice[f"{n}_sparsity"])
            codebook, indices, mask = sharing.share_layer(pruned, bits)
            w.copy_(torch.where(mask, codebook[indices], torch.zeros_like(w)))
            dense += 32 * w.numel()
            coded += int(mask.sum()) * (bits + 5) + 32 * 2 ** bits
    acc = _accuracy(net)
    measured = f"{dense / coded:.1f}x smaller, accuracy {acc:.1f}%"
    if dense / coded < 40 or acc < 85.5:
        raise _miss(name, measured, "pruning multiplies the ratio, bits add to it; which layer's weights "
                    "dominate the count, and which layer is most sensitive?")
    return measured


@exercise_check("width_target")
def check_width_target(fn: Callable) -> str:
    """width_target() -> {"fc1": neurons kept, "fc2": neurons kept}; L1 channel selection, shrunk model."""
    name = "width_target"
    choice = _choice(name, fn, ("fc1", "fc2"), 1, 128, integer=True)
    _, model, _, _ = target_setup()
    layers = models.prunable_layers(model)
    if choice["fc2"] > layers["fc2"].out_features:
        raise CheckFailed(f"{name}: fc2 has {layers['fc2'].out_features} neurons; got {choice['fc2']}")
    keep = {n: torch.topk(layers[n].weight.detach().abs().sum(1), k).indices.sort().values for n, k in choice.items()}
    small = structured.shrink(model, keep)
    share = sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in model.parameters())
    acc = _accuracy(small)
    measured = f"{100 * share:.1f}% of the parameters, accuracy {acc:.1f}%"
    if share > 0.50 + 1e-9 or acc < 87:
        raise _miss(name, measured, "a neuron of fc1 costs 784 + 1 + 64 parameters, one of fc2 only 128 + 1 + 10: "
                    "which layer is cheaper to keep wide?")
    return measured


def reference_choices() -> dict[str, Callable[[], dict]]:
    """A choice that meets each target (the tests use them; any other that meets it passes too)."""
    sparse = {"fc1": 0.93, "fc2": 0.8, "fc3": 0.3}
    return {
        "pruning_target": lambda: dict(sparse),
        "ticket_target": lambda: dict(sparse),
        "bits_target": lambda: {"fc1": 3, "fc2": 4, "fc3": 8},
        "distillation_target": lambda: {"temperature": 4.0, "alpha": 0.9},
        "rank_target": lambda: {"fc1": 12, "fc2": 12},
        "deep_compression_target": lambda: {"fc1_sparsity": 0.93, "fc2_sparsity": 0.8, "fc3_sparsity": 0.3,
                                            "fc1_bits": 4, "fc2_bits": 4, "fc3_bits": 5},
        "width_target": lambda: {"fc1": 64, "fc2": 48},
    }
