"""Exercise checks for notebook 02 lottery tickets."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    short,
)
from compresslab.techniques import imp
from compresslab.techniques import masks as mask_ops

from .pruning_checks import mask_with_k

__all__ = [
    "check_prune_survivors",
    "check_rewind",
    "check_random_masks_like",
]

# ----------------------------------------------------------------- 02 lottery tickets

@exercise_check("prune_survivors")
def check_prune_survivors(fn: Callable) -> int:
    """prune_survivors(w, mask, rate) -> next mask: remove round(rate * n) of the n survivors by |w|."""
    name = "prune_survivors"
    g = seeded_generator(3)
    w_hand = torch.tensor([0.9, -0.1, 0.5, -0.7, 0.2, 0.05])
    m_hand = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    w_rand = torch.randn(30, 40, generator=g)
    m_rand = (torch.rand(30, 40, generator=g) < 0.6).float()
    cases = [
        ("w=[0.9, -0.1, 0.5, -0.7, 0.2, 0.05], mask=[1, 1, 1, 1, 0, 0], rate=0.5", w_hand, m_hand, 0.5),
        ("the same w with an all-ones mask (the first level), rate=0.5", w_hand, torch.ones(6), 0.5),
        ("random (30, 40) layer, 60% survivors, rate=0.2", w_rand, m_rand, 0.2),
        ("random (30, 40) layer, 60% survivors, rate=0.1", w_rand, m_rand, 0.1),
        ("random conv (8, 3, 5, 5), all survive, rate=0.2", torch.randn(8, 3, 5, 5, generator=g), torch.ones(8, 3, 5, 5), 0.2),
    ]
    for case, w, mask, rate in cases:
        w_before, m_before = w.clone(), mask.clone()
        got = call(name, fn, case, w, mask, rate)
        require_unchanged(name, case, w_before, w)
        require_unchanged(name, case, m_before, mask)
        expected = imp.prune_survivors(w_before, m_before, rate)
        got_t = as_tensor(got)
        if got_t is not None and got_t.shape == mask.shape and bool(((got_t != 0) & (m_before == 0)).any()):
            raise fail(name, case, "a weight pruned at an earlier level came back (mask 0 -> 1)", expected, got,
                        "masks nest: a weight with mask 0 stays 0; rank only the survivors (mask == 1)")
        mistakes = {
            "you ranked ALL weights, including those pruned before: rank only the survivors (mask == 1) and "
            "remove round(rate * number of survivors) of them": mask_ops.magnitude_mask(w_before, rate),
            "the number to remove is round(rate * n) with n = the number of SURVIVORS, not of all weights":
                m_before * mask_with_k(w_before * m_before + (1 - m_before) * 1e9, int(round(rate * w.numel()))),
        }
        compare(name, case, got, expected,
                 "among the n survivors (mask == 1) remove the round(rate * n) of smallest |w|; pruned positions stay 0", mistakes)
    return len(cases)


def _tiny_net(seed: int) -> nn.Sequential:
    torch.manual_seed(case_seed(seed))
    from collections import OrderedDict

    return nn.Sequential(OrderedDict([("fc1", nn.Linear(6, 5)), ("relu", nn.ReLU()), ("fc2", nn.Linear(5, 3))]))


@exercise_check("rewind")
def check_rewind(fn: Callable) -> int:
    """rewind(template, state, masks) -> a new model holding `state`, with `masks` attached (torch prune)."""
    name = "rewind"
    with torch.random.fork_rng(devices=[]):
        template = _tiny_net(0)
        trained = _tiny_net(1)  # stands in for the weights at step k
    g = seeded_generator(4)
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    masks = {"fc1": (torch.rand(5, 6, generator=g) < 0.5).float(), "fc2": (torch.rand(3, 5, generator=g) < 0.7).float()}
    template_before = {k: v.clone() for k, v in template.state_dict().items()}
    case = "a 6-5-3 MLP, `state` = another network's state_dict, masks keeping about 50% / 70%"
    got = call(name, fn, case, template, {k: v.clone() for k, v in state.items()}, {k: v.clone() for k, v in masks.items()})
    after = template.state_dict()
    if set(after) != set(template_before) or any(not torch.equal(after[k], template_before[k]) for k in template_before):
        raise fail(name, case, "the template network was modified", "template unchanged", "template changed",
                    "work on copy.deepcopy(template); the template keeps theta_0 for the next level and the controls")
    if got is template:
        raise fail(name, case, "you returned the template itself", "a new model", "the template",
                    "return a new model (a deep copy of the template), not the template itself")
    if not isinstance(got, nn.Module):
        raise fail(name, case, "the result is not a model", "an nn.Module", got, "return the rewound copy of the template")
    expected = imp.rewind(template, state, masks)
    layers = dict(got.named_children())
    for lname, mask in masks.items():
        layer = layers.get(lname)
        if layer is None:
            raise fail(name, case, f"the result has no layer {lname!r}", f"layer {lname!r}", list(layers),
                        "copy the template so the layers keep their names")
        weight = (layer.weight_orig * layer.weight_mask) if hasattr(layer, "weight_mask") else layer.weight
        mistakes = {"the surviving weights must take their values from `state` (theta_k), not keep the "
                    "template's / trained values: load_state_dict(state) first": template_before[f"{lname}.weight"] * mask}
        compare(name, f"{case}; weight of {lname}", weight.detach(), state[f"{lname}.weight"] * mask,
                 "load `state` into the copy, then attach `masks` through torch.nn.utils.prune (the package's mask helper) so that "
                 "surviving weights equal state and pruned weights are zero", mistakes)
        compare(name, f"{case}; bias of {lname}", layer.bias.detach(), state[f"{lname}.bias"],
                 "biases are not pruned: they also come from `state`")
    x = torch.randn(7, 6, generator=g)
    with torch.no_grad():
        compare(name, f"{case}; outputs on a random batch", got(x), expected(x),
                 "the rewound network must compute f(x; masks * state)")
    # the mask must survive training: one SGD step must keep pruned weights at zero
    got(x).pow(2).sum().backward()
    with torch.no_grad():  # a plain gradient step (what any optimizer does to the parameters)
        for p in got.parameters():
            if p.grad is not None:
                p.sub_(0.5 * p.grad)
    for lname, mask in masks.items():
        layer = layers[lname]
        with torch.no_grad():
            _ = got(x)  # torch's prune recomputes weight = weight_orig * weight_mask in the forward pre-hook
        weight = (layer.weight_orig * layer.weight_mask) if hasattr(layer, "weight_mask") else layer.weight
        leaked = (weight.detach() != 0) & (mask == 0)
        if leaked.any():
            raise fail(name, f"{case}; after one SGD step on the result", f"{int(leaked.sum())} pruned weights of "
                        f"{lname} became non-zero during training", "pruned weights stay 0", short(weight.detach()),
                        "multiplying the weights by the mask once is not enough: attach the mask with "
                        "the package's mask helper (torch.nn.utils.prune), so it applies at every step")
    return 4


@exercise_check("random_masks_like")
def check_random_masks_like(fn: Callable) -> int:
    """random_masks_like(masks, scores) -> per layer, as many survivors as `masks`, those of highest score."""
    name = "random_masks_like"
    g = seeded_generator(5)
    cases = [
        ("masks={'a': [1, 0, 1, 0]}, scores={'a': [0.1, 0.9, 0.5, 0.3]}",
         {"a": torch.tensor([1.0, 0.0, 1.0, 0.0])}, {"a": torch.tensor([0.1, 0.9, 0.5, 0.3])}),
        ("two random layers with 30% and 80% survivors",
         {"fc1": (torch.rand(20, 30, generator=g) < 0.3).float(), "fc2": (torch.rand(10, 20, generator=g) < 0.8).float()},
         {"fc1": torch.rand(20, 30, generator=g), "fc2": torch.rand(10, 20, generator=g)}),
        ("a conv layer (4, 2, 3, 3) with 10% survivors",
         {"conv": (torch.rand(4, 2, 3, 3, generator=g) < 0.1).float()}, {"conv": torch.rand(4, 2, 3, 3, generator=g)}),
    ]
    for case, masks, scores in cases:
        got = call(name, fn, case, {k: v.clone() for k, v in masks.items()}, {k: v.clone() for k, v in scores.items()})
        expected = imp.random_masks_like(masks, scores)
        if not isinstance(got, Mapping) or set(got) != set(expected):
            raise fail(name, case, "the result must be a dict with one mask per layer (same keys as masks)",
                        expected, got, "return {name: new_mask for each layer}")
        for key in expected:
            count = int(masks[key].sum())
            low = torch.zeros(masks[key].numel())
            if count:
                low[torch.topk(scores[key].reshape(-1), count, largest=False).indices] = 1.0
            compare(name, f"{case}; layer {key!r}", got[key], expected[key],
                     "in each layer keep exactly int(masks[name].sum()) weights: those with the HIGHEST scores "
                     "(torch.topk(scores[name].flatten(), count).indices), in the layer's shape",
                     {"keep the highest scores, not the lowest": low.reshape(masks[key].shape),
                      "the random mask must not depend on the ticket's mask, only on its COUNT per layer: "
                      "rank all positions by score": (masks[key] * scores[key] > 0).float()})
    return len(cases)
