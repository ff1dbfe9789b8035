"""Exercise checks for notebook 07 structured pruning (oracle: compresslab.techniques.structured)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from compresslab.exercises.checking import (
    as_tensor,
    call,
    case_seed,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import structured

__all__ = [
    "select_channels_reference",
    "shrink_pair_reference",
    "check_select_channels",
    "check_shrink_pair",
]


def _pair(first: nn.Module, second: nn.Module) -> nn.Sequential:
    return nn.Sequential(OrderedDict([("first", first), ("act", nn.ReLU()), ("second", second)]))


def select_channels_reference(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Reference: the sorted indices of the output units kept by L1-norm structured pruning."""
    out_units = w.shape[0]
    first = nn.Linear(w[0].numel(), out_units, bias=False)
    with torch.no_grad():
        first.weight.copy_(w.reshape(out_units, -1))
    return structured.structured_keep(_pair(first, nn.Linear(out_units, 1)), sparsity, norm=1)["first"]


def shrink_pair_reference(first: nn.Linear, second: nn.Linear, keep: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    """Reference: the two layers of `structured.shrink` keeping units `keep` of `first`."""
    small = structured.shrink(_pair(first, second), {"first": keep}, input_shape=(first.in_features,))
    return small.first, small.second


def _keep(scores: torch.Tensor, sparsity: float, largest: bool = True) -> torch.Tensor:
    n_keep = max(1, int(round((1 - sparsity) * len(scores))))
    return torch.topk(scores, n_keep, largest=largest).indices.sort().values


@exercise_check("select_channels")
def check_select_channels(fn: Callable) -> int:
    """select_channels(w, sparsity) -> sorted indices of the output units of largest L1 norm."""
    name = "select_channels"
    g = seeded_generator(21)
    hand = torch.tensor([[1.0, 1.0, 0.0], [0.1, 0.2, -0.1], [-3.0, 0.0, 0.5], [0.5, 0.5, 0.5]])
    cases = [("w=[[1, 1, 0], [0.1, 0.2, -0.1], [-3, 0, 0.5], [0.5, 0.5, 0.5]], sparsity=0.5", hand, 0.5),
             ("the same w, sparsity=0.25", hand, 0.25),
             ("a (20, 30) Linear weight, sparsity=0.6", torch.randn(20, 30, generator=g), 0.6),
             ("a conv weight (8, 3, 3, 3), sparsity=0.5", torch.randn(8, 3, 3, 3, generator=g), 0.5),
             ("a (6, 4) weight, sparsity=0.99 (at least one unit stays)", torch.randn(6, 4, generator=g), 0.99),
             ("rows with one large entry vs many medium ones (L1 vs L2), sparsity=0.5",
              torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.5, 1.5, 1.5, 1.5], [3.0, 0.0, 0.0, 0.0], [1.2, 1.2, 1.2, 1.2]]), 0.5)]
    for case, w, s in cases:
        before = w.clone()
        got = call(name, fn, case, w, s)
        require_unchanged(name, case, before, w)
        expected = select_channels_reference(before, s)
        rows = before.reshape(before.shape[0], -1)
        got_t = as_tensor(got)
        if got_t is not None and got_t.shape == expected.shape and not torch.equal(got_t.sort().values, got_t):
            raise fail(name, case, "the indices are not sorted", expected, got,
                       "return the kept indices in increasing order, so the layer keeps its units' order")
        mistakes = {
            "you kept the units of SMALLEST norm: structured pruning removes the weakest units": _keep(rows.abs().sum(1), s, False),
            "that is the L2 norm: the exercise scores a unit by the L1 norm (sum of absolute values)": _keep(rows.norm(dim=1), s),
            "score by the sum of ABSOLUTE values: a large negative weight counts as much as a positive one": _keep(rows.sum(1), s),
            "a unit is an output (a row of the weight, dim 0): you scored the inputs (columns)":
                _keep(rows.abs().sum(0), s) if rows.shape[0] == rows.shape[1] else None,
        }
        compare(name, case, got, expected, "score every output unit by the L1 norm of all its weights, keep the "
                 "round((1 - sparsity) * units) best (at least one), sorted", mistakes, atol=0, rtol=0)
    return len(cases)


@exercise_check("shrink_pair")
def check_shrink_pair(fn: Callable) -> int:
    """shrink_pair(first, second, keep) -> (smaller first, smaller second) computing the same function."""
    name = "shrink_pair"
    g = seeded_generator(22)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case_seed(22))
        cases = [("Linear(5, 4) then Linear(4, 3), keep=[0, 2]", nn.Linear(5, 4), nn.Linear(4, 3), torch.tensor([0, 2])),
                 ("Linear(30, 20) then Linear(20, 10), keep 8 units", nn.Linear(30, 20), nn.Linear(20, 10),
                  torch.randperm(20, generator=g)[:8].sort().values),
                 ("Linear(6, 5, bias=False) then Linear(5, 2), keep=[4]", nn.Linear(6, 5, bias=False), nn.Linear(5, 2),
                  torch.tensor([4]))]
    for case, first, second, keep in cases:
        states = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in (first, second)]
        got = call(name, fn, case, first, second, keep.clone())
        for layer, state in zip((first, second), states):
            for key, value in state.items():
                require_unchanged(name, f"{case}; the original layers", value, layer.state_dict()[key])
        ref_first, ref_second = shrink_pair_reference(first, second, keep)
        if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(x, nn.Linear) for x in got)):
            raise fail(name, case, "the result must be a pair of nn.Linear layers", (ref_first, ref_second), got,
                       "return two new nn.Linear layers: (smaller first, smaller second)")
        shapes = [(x.in_features, x.out_features, x.bias is not None) for x in got]
        want = [(x.in_features, x.out_features, x.bias is not None) for x in (ref_first, ref_second)]
        if shapes != want:
            raise fail(name, case, "the layers have the wrong sizes (in, out, has bias)", want, shapes,
                       "the first layer loses OUTPUT units (rows of its weight and entries of its bias); the second "
                       "loses the matching INPUTS (columns of its weight); its bias stays whole")
        x = torch.randn(7, first.in_features, generator=g)
        with torch.no_grad():
            expected = ref_second(torch.relu(ref_first(x)))
            out = got[1](torch.relu(got[0](x)))
            full = second(torch.relu(first(x) * torch.zeros(first.out_features).index_fill(0, keep, 1.0)))
        compare(name, f"{case}; the output on random inputs", out, expected,
                "copy the kept rows (and bias entries) of the first layer and the kept columns of the second "
                "(with its whole bias)", atol=1e-5)
        compare(name, f"{case}; the same as the original with the dropped units zeroed", out, full,
                "the shrunk pair must compute what the original computes with the dropped units switched off", atol=1e-5)
    return len(cases)
