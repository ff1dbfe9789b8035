"""Which layer tolerates what: one layer changed at a time and measured, with cheap proxies beside it.

An option changes one layer's weight W into W' and nothing else:

    int8 / int4 / int3 / int2   symmetric per-channel codes, exactly the packed file's
                                (`packedfile.channel_codes`: s_c = r_c max|w_c| / (2^(b-1) - 1), r_c = 1
                                with clip="max", the squared-error minimiser with clip="mse")
    sparse50 / 75 / 90          magnitude pruning of that layer alone (`masks.magnitude_mask`)
    rank1/2 / rank1/4           the truncated SVD keeping that share of the weights (a conv as its
                                C k k x N matrix, `lowrank.factorize_layer` in channel mode)

The measured effect of (layer, option) is the change of the mean cross-entropy and of the accuracy
on selection images. The proxies need no evaluation pass over them:

- HAWQ's second-order estimate: Omega = Tr(H) / n * ||W' - W||^2, with H the Hessian of the loss
  with respect to the layer's n weights on a calibration batch and its trace estimated by
  Hutchinson's method: Tr(H) = E[v^T H v] for random v with independent +-1 entries, each v^T H v one
  Hessian-vector product (the gradient of g . v, g the loss gradient, by double back-propagation);
- the weight SQNR, 10 log10(||W||^2 / ||W' - W||^2) (higher: a smaller relative change);
- the output KL divergence KL(p_FP32 || p_changed) on the calibration batch, in nats.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import models
from compresslab.core.data import Dataset, Split
from compresslab.core.training import split_logits
from compresslab.core.validate import check_int, check_layer_names, check_seed
from compresslab.techniques.lowrank import factorize_layer, layer_matrix, reconstructed_weight
from compresslab.techniques.masks import magnitude_mask
from compresslab.techniques.packedfile import CHANNEL_BITS, channel_codes
from compresslab.techniques.quantops import sqnr_db
from compresslab.techniques.svd import rank_for_ratio

__all__ = ["OPTIONS", "QUANT_OPTIONS", "option_kind", "changed_weight", "option_weights", "with_options", "selection_split",
           "measure", "rademacher", "hutchinson", "layer_traces", "hawq_score", "output_kl", "proxies",
           "PROXIES"]

QUANT_OPTIONS = tuple(CHANNEL_BITS)  # int8, int4, int3, int2
OPTIONS = (*QUANT_OPTIONS, "sparse50", "sparse75", "sparse90", "rank1/2", "rank1/4")
PROXIES = ("hawq", "neg_sqnr", "kl")  # each: larger = more sensitive


def option_kind(option: str) -> tuple[str, float]:
    """('bits', b) | ('sparsity', s) | ('rank', share) of an option name (ValueError naming the options).

    >>> option_kind("int3"), option_kind("sparse75"), option_kind("rank1/4")
    (('bits', 3), ('sparsity', 0.75), ('rank', 0.25))
    """
    if option in CHANNEL_BITS:
        return "bits", CHANNEL_BITS[option]
    if option in ("sparse50", "sparse75", "sparse90"):
        return "sparsity", int(option[6:]) / 100
    if option in ("rank1/2", "rank1/4"):
        return "rank", 1 / int(option[-1])
    raise ValueError(f"option={option!r} is not one of {OPTIONS}")


def changed_weight(layer: nn.Module, option: str, clip: str = "mse") -> torch.Tensor:
    """The layer's weight as `option` leaves it (a new float32 tensor of the same shape; see the
    module docstring; clip: the integer options' scale choice)."""
    kind, value = option_kind(option)
    w = layer.weight.detach().float()
    if kind == "bits":
        q, s = channel_codes(w, option, clip)
        return q * s.reshape(-1, *[1] * (w.dim() - 1))
    if kind == "sparsity":
        return w * magnitude_mask(w, value)
    m, n = layer_matrix(layer).shape
    return reconstructed_weight(factorize_layer(layer, rank_for_ratio(m, n, value))).reshape(w.shape).float()


def option_weights(model: nn.Module, options: Sequence[str] = OPTIONS, clip: str = "mse"
                   ) -> dict[tuple[str, str], torch.Tensor]:
    """`changed_weight` of every (layer, option), computed once, for `with_options(..., weights=)` when
    many configurations of one model are built."""
    for option in options:
        option_kind(option)
    return {(name, option): changed_weight(layer, option, clip)
            for name, layer in models.prunable_layers(model).items() for option in options}


def with_options(model: nn.Module, config: Mapping[str, str], clip: str = "mse",
                 weights: Mapping[tuple[str, str], torch.Tensor] | None = None) -> nn.Module:
    """A copy of `model` with each named layer's weight replaced by `changed_weight(layer, option, clip)`
    (taken from `weights` when it holds the pair; layers not named keep their weights); names and
    options are checked before any work."""
    layers = models.prunable_layers(model)
    check_layer_names("with_options", "config", config, layers)
    for option in config.values():
        option_kind(option)
    out = copy.deepcopy(model)
    changed = models.prunable_layers(out)
    with torch.no_grad():
        for name, option in config.items():
            new = weights[(name, option)] if weights is not None and (name, option) in weights \
                else changed_weight(layers[name], option, clip)
            changed[name].weight.copy_(new.to(changed[name].weight.dtype))
    return out


def selection_split(data: Dataset, n: int) -> Split:
    """The images choices are made on: the validation split if the data has one, else the last `n`
    training images (never the test set)."""
    check_int("selection_split", "n", n, 1, None)
    if data.val is not None:
        return data.val
    tr = data.train
    return Split(tr.images[-n:], tr.labels[-n:], tr.mean, tr.std)


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return float(F.cross_entropy(logits, labels)), 100.0 * float((logits.argmax(1) == labels).float().mean())


def measure(model: nn.Module, split: Split, options: Sequence[str] = OPTIONS,
            layers: Sequence[str] | None = None, clip: str = "mse",
            weights: Mapping[tuple[str, str], torch.Tensor] | None = None) -> list[dict]:
    """One row per (layer, option) with only that layer changed, on `split`: loss and accuracy (%),
    their changes from the unchanged model (d_loss, d_accuracy in points) and the output KL divergence
    from it (kl, nats per image); `weights` as in `with_options`."""
    found = models.prunable_layers(model)
    names = list(found) if layers is None else list(layers)
    check_layer_names("measure", "layers", dict.fromkeys(names), found)
    for option in options:
        option_kind(option)
    reference = split_logits(model, split)
    ref_loss, ref_acc = _scores(reference, split.labels)
    rows = []
    for name in names:
        for option in options:
            logits = split_logits(with_options(model, {name: option}, clip, weights), split)
            loss, accuracy = _scores(logits, split.labels)
            rows.append({"layer": name, "option": option, "loss": loss, "accuracy": accuracy,
                         "d_loss": loss - ref_loss, "d_accuracy": accuracy - ref_acc,
                         "kl": output_kl(reference, logits)})
    return rows


def rademacher(samples: int, n: int, seed: int = 0) -> torch.Tensor:
    """(samples, n) independent +-1 entries, each with probability 1/2 (float32, seeded)."""
    check_int("rademacher", "samples", samples, 1, None)
    check_int("rademacher", "n", n, 1, None)
    check_seed("rademacher", "seed", seed)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (samples, n), generator=g).float() * 2 - 1


def hutchinson(hvp: Callable[[torch.Tensor], torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
    """v^T H v for each probe row v (H given by its product hvp(v) = H v); their mean estimates Tr(H),
    exactly over the 2^n sign vectors, since E[v v^T] = I.

    >>> h = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    >>> signs = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    >>> hutchinson(lambda v: h @ v, signs).tolist()  # mean 5 = Tr(H)
    [7.0, 3.0, 3.0, 7.0]
    """
    return torch.stack([torch.dot(v, hvp(v).reshape(-1)) for v in probes])


def layer_traces(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 64, seed: int = 0,
                 layers: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per layer: Hutchinson's estimate of the trace of the loss Hessian w.r.t. its weight on (x, y)
    ({"trace", "stderr", "n", "trace_per_weight"}); one Hessian-vector product per probe and layer."""
    found = models.prunable_layers(model)
    names = list(found) if layers is None else list(layers)
    check_layer_names("layer_traces", "layers", dict.fromkeys(names), found)
    check_int("layer_traces", "samples", samples, 2, None)
    model = copy.deepcopy(model).eval()
    params = [found_w.weight for found_w in models.prunable_layers(model).values()]
    by_name = dict(zip(models.prunable_layers(model), params))
    loss = F.cross_entropy(model(models.prepare_input(x, model)), y)
    grads = dict(zip(by_name, torch.autograd.grad(loss, params, create_graph=True)))
    out = {}
    for i, name in enumerate(names):
        p, g = by_name[name], grads[name]
        probes = rademacher(samples, p.numel(), seed + i)

        def hvp(v: torch.Tensor, p=p, g=g) -> torch.Tensor:
            return torch.autograd.grad(g, p, grad_outputs=v.reshape(p.shape), retain_graph=True)[0]

        values = hutchinson(hvp, probes).double()
        trace = float(values.mean())
        out[name] = {"trace": trace, "stderr": float(values.std() / math.sqrt(samples)), "n": p.numel(),
                     "trace_per_weight": trace / p.numel()}
    return out


def hawq_score(trace: float, n: int, w: torch.Tensor, w_changed: torch.Tensor) -> float:
    """HAWQ's Omega = Tr(H) / n * ||W' - W||^2 (the second-order loss change if the change were
    spread evenly over the Hessian's eigen-directions).

    >>> hawq_score(8.0, 4, torch.zeros(4), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    4.0
    """
    check_int("hawq_score", "n", n, 1, None)
    return float(trace) / n * float(((w_changed.float() - w.float()) ** 2).sum())


@torch.no_grad()
def output_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over examples of KL(p_ref || p) in nats, p = softmax(logits).

    >>> output_kl(torch.zeros(3, 4), torch.zeros(3, 4))
    0.0
    """
    log_p = F.log_softmax(reference_logits.float(), 1)
    log_q = F.log_softmax(logits.float(), 1)
    return float((log_p.exp() * (log_p - log_q)).sum(1).mean())


def proxies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: Sequence[str] = OPTIONS,
            layers: Sequence[str] | None = None, samples: int = 64, seed: int = 0,
            clip: str = "mse") -> tuple[list[dict], dict]:
    """The proxies of every (layer, option) on one calibration batch (x, y): rows {"layer", "option",
    "hawq", "sqnr_db", "neg_sqnr", "kl"}, and the layers' Hessian traces (`layer_traces`)."""
    traces = layer_traces(model, x, y, samples, seed, layers)
    found = models.prunable_layers(model)
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref = reference(models.prepare_input(x, reference))
    rows = []
    for name in traces:
        w = found[name].weight.detach()
        for option in options:
            w_new = changed_weight(found[name], option, clip)
            changed = with_options(model, {name: option}, clip, weights={(name, option): w_new}).eval()
            with torch.no_grad():
                kl = output_kl(ref, changed(models.prepare_input(x, changed)))
            sqnr = sqnr_db(w, w_new)
            rows.append({"layer": name, "option": option,
                         "hawq": hawq_score(traces[name]["trace"], traces[name]["n"], w, w_new),
                         "sqnr_db": sqnr, "neg_sqnr": -sqnr if math.isfinite(sqnr) else -1e9, "kl": kl})
    return rows, traces
