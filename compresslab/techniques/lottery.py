"""Lottery tickets: iterative magnitude pruning (IMP) with rewinding, and its control branches.

IMP (Frankle & Carbin 2019). Draw theta_0, train T steps. At level L, remove a fraction p of the
weights that survived level L-1 in each layer, those of smallest |w| after training, giving a mask
m_L (so layer l keeps about (1 - p_l)^L of its weights; a pruned weight never returns). Reset the
survivors to theta_k, their values at step k of the dense run, and train the remaining T - k steps:
f(x; m_L * theta_k). k = 0 is the original lottery ticket (reset to the initialisation), k > 0 is
rewinding (Frankle et al. 2020). Frankle & Carbin prune 20% of each hidden layer and 10% of the
output layer per level; scope='global' ranks the hidden layers' survivors together instead.

Learning-rate rewinding (Renda et al. 2020) is its own IMP chain: prune the trained weights, keep
their trained values, and retrain T - k steps replaying the learning-rate schedule from step k.

Controls at the ticket's sparsity, each with an explicit seed:
- random re-initialisation: the ticket's mask m_L on a fresh draw theta_0' ~ D (reinit_seed);
- random mask: a uniformly random mask with the ticket's number of survivors in every layer,
  on theta_k (random_mask_seed); nested across levels like the ticket's masks.

Every run after the dense one trains the steps k..T-1 of the dense run's schedule
(`train(..., start_step=k)`: the same learning rate and batch order as the dense run there).

The early-stopping iteration of a run is the step of minimum validation loss (a split carved from
the training set), counted from theta_0, so a rewound run starts counting at k.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from compresslab.core import metrics
from compresslab.core.data import Dataset
from compresslab.core.params import DATASET, EPOCHS, OPEN_FRACTION, PROFILE, SEED, Param, choice
from compresslab.core.report import Report, transient
from compresslab.core.training import (
    Callback,
    LossFn,
    TrainConfig,
    TrainHistory,
    quiet_default,
    train,
)
from compresslab.core.validate import (
    check_choice,
    check_config,
    check_float,
    check_instance,
    check_int,
    check_seed,
)
from compresslab.techniques.imp import (
    LevelResult,
    Masks,
    RewindPoint,
    State,
    check_unpruned,
    effective_weights,
    level_result,
    prune_survivors,
    prune_survivors_global,
    random_masks_like,
    random_scores,
    reinitialize,
    rewind,
    state_of,
)
from compresslab.techniques.masks import SCOPES, set_masks
from compresslab.techniques.pruning import sparse_size
from compresslab.techniques.registry import Technique, register, tiny_mlp

__all__ = [
    "BRANCHES", "CONTROLS", "DEFAULT_TRAIN", "LotteryConfig", "next_masks", "DenseRun",
    "train_dense", "LotteryReport", "apply_lottery", "pixel_density"
]

BRANCHES = ("ticket", "random_reinit", "random_mask", "lr_rewind")
CONTROLS = ("random_reinit", "random_mask")

# Frankle & Carbin (2019) train LeNet-300-100 with Adam at a constant 1.2e-3 (batch 60, 50k steps);
# 8 epochs of batch 128 keep a whole IMP experiment within a laptop CPU budget.
DEFAULT_TRAIN = TrainConfig(epochs=8, batch_size=128, lr=1.2e-3, optimizer="adam", eval_every=100)


@dataclass(frozen=True)
class LotteryConfig:
    """How to find tickets.

    levels: pruning levels after the dense run (>= 1); fraction: share of a layer's surviving
    weights removed per level, (0, 1); output_fraction: the rate for the output layer (None = same
    as the others; with scope='global', None pools the output layer with the others);
    rewind_step: k, the step of the dense run whose weights survivors are reset to (0 = theta_0),
    must lie inside the run; train: the TrainConfig of the dense run (T steps; each level trains
    steps k..T-1);
    branches: which of BRANCHES to run ('random_reinit' and 'random_mask' need 'ticket');
    control_levels: levels at which the controls run (None = all); reinit_seed, random_mask_seed:
    seeds of the controls.
    """

    levels: int = 12
    fraction: float = 0.2
    output_fraction: float | None = 0.1
    scope: str = "layer"
    rewind_step: int = 0
    train: TrainConfig = DEFAULT_TRAIN
    branches: tuple[str, ...] = ("ticket", "random_reinit", "random_mask")
    control_levels: tuple[int, ...] | None = None
    reinit_seed: int = 1
    random_mask_seed: int = 2

    def __post_init__(self) -> None:
        owner = "LotteryConfig"
        check_int(owner, "levels", self.levels, 1, 60)
        check_float(owner, "fraction", self.fraction, 0, 1, lo_open=True, hi_open=True)
        if self.output_fraction is not None:
            check_float(owner, "output_fraction", self.output_fraction, 0, 1, lo_open=True, hi_open=True)
        check_choice(owner, "scope", self.scope, SCOPES)
        check_int(owner, "rewind_step", self.rewind_step, 0, 2**40)
        check_config(owner, "train", self.train, TrainConfig)
        check_instance(owner, "branches", self.branches, (tuple, list))
        for i, name in enumerate(self.branches):
            check_choice(owner, f"branches[{i}]", name, BRANCHES)
        branches = tuple(self.branches)
        if not branches or len(set(branches)) != len(branches):
            raise ValueError(f"{owner}.branches={self.branches!r} must be distinct names from {BRANCHES}")
        object.__setattr__(self, "branches", branches)
        if set(branches) & set(CONTROLS) and "ticket" not in branches:
            raise ValueError(f"{owner}.branches={branches!r}: the controls {CONTROLS} use the ticket's masks; "
                             "add 'ticket'")
        if self.control_levels is not None:
            check_instance(owner, "control_levels", self.control_levels, (tuple, list))
            for i, v in enumerate(self.control_levels):
                check_int(owner, f"control_levels[{i}]", v, 1, self.levels)
            object.__setattr__(self, "control_levels", tuple(sorted(set(self.control_levels))))
        check_seed(owner, "reinit_seed", self.reinit_seed)
        check_seed(owner, "random_mask_seed", self.random_mask_seed)

    def rates(self, layer_names: Sequence[str]) -> dict[str, float]:
        """Per-level pruning rate p_l of each layer: `fraction`, `output_fraction` for the last one."""
        names = list(layer_names)
        out = {n: float(self.fraction) for n in names}
        if self.output_fraction is not None and names:
            out[names[-1]] = float(self.output_fraction)
        return out

    def runs_control(self, level: int) -> bool:
        return self.control_levels is None or level in self.control_levels


# ----------------------------------------------------------------- masks per level

def next_masks(weights: dict[str, torch.Tensor], masks: Masks, config: LotteryConfig) -> Masks:
    """One IMP level: prune each layer's survivors at its rate (scope 'layer'), or rank the layers'
    survivors together (scope 'global'; the output layer keeps its own rate if output_fraction is set)."""
    names = list(weights)
    rates = config.rates(names)
    if config.scope == "layer":
        return {n: prune_survivors(weights[n], masks[n], rates[n]) for n in names}
    pooled = names if config.output_fraction is None else names[:-1]
    out = prune_survivors_global({n: weights[n] for n in pooled}, masks, config.fraction) if pooled else {}
    for n in names:
        if n not in out:
            out[n] = prune_survivors(weights[n], masks[n], rates[n])
    return out


# ----------------------------------------------------------------- the dense run

@dataclass
class DenseRun:
    """The dense network trained from theta_0, with its state saved at the rewind steps."""

    config: TrainConfig
    init: State
    snapshots: dict[int, State]
    model: nn.Module
    history: TrainHistory


def train_dense(
    model: nn.Module, data: Dataset, config: TrainConfig, rewind_steps: Sequence[int] = (0,),
    progress: bool | None = None,
) -> DenseRun:
    """Train a copy of the unpruned `model` (weights theta_0) with `config`; keep theta_k for each k."""
    check_unpruned(model)
    total = config.total_steps(len(data.train))
    for k in rewind_steps:
        if not 0 <= k < total:
            raise ValueError(f"rewind_step={k} must be in [0, {total - 1}] (the run has {total} steps)")
    init = state_of(model)
    net = copy.deepcopy(model)
    saver = RewindPoint(rewind_steps)
    history = train(net, data, config, callbacks=[saver], progress=progress)
    return DenseRun(config, init, saver.states, net, history)


# ----------------------------------------------------------------- the report

@dataclass(kw_only=True, repr=False)
class LotteryReport(Report):
    """Per level and branch: remaining weights, test accuracy (percent), early-stopping iteration,
    curves. accuracy_before: the dense network; accuracy_after: the returned network (the last
    level's ticket, or its learning-rate-rewound net). Stored bytes as pruning.sparse_size.

    masks[branch][level] holds each branch's mask per level (the ticket's are also the random
    re-initialisation's); init_state is theta_0, rewind_state theta_k (neither is in to_dict)."""

    total_steps: int = 0
    results: list[LevelResult] = field(default_factory=list)
    masks: dict = transient(factory=dict)
    init_state: dict = transient(factory=dict)
    rewind_state: dict = transient(factory=dict)
    notes: list[str] = field(default_factory=list)

    technique = "lottery ticket"

    @property
    def dense(self) -> LevelResult:
        return self.get("dense", 0)

    def get(self, branch: str, level: int) -> LevelResult:
        for r in self.results:
            if r.branch == branch and r.level == level:
                return r
        if level == 0 and branch in BRANCHES:
            return self.get("dense", 0)
        raise KeyError(f"no result for branch={branch!r} at level={level}")

    def curve(self, branch: str) -> list[LevelResult]:
        """The branch's results by level, starting from the dense network at level 0."""
        return [self.dense] + sorted((r for r in self.results if r.branch == branch), key=lambda r: r.level)

    def series(self, branch: str, value: str = "test_accuracy") -> tuple[list[float], list[float]]:
        """(% of weights remaining, `value`) per level of `branch`, the dense network first."""
        curve = self.curve(branch)
        return [100 * r.remaining for r in curve], [getattr(r, value) for r in curve]

    def table(self):
        """One row per level: % of weights remaining, then per branch the final test accuracy (%)
        and the early-stopping step (level 0 is the dense network in every branch)."""
        import pandas as pd

        branches = [b for b in BRANCHES if b in self.config.branches]
        rows = []
        for level in range(self.config.levels + 1):
            found = {}
            for b in branches:
                try:
                    found[b] = self.get(b, level)
                except KeyError:
                    continue
            if not found:
                continue
            row = {"level": level, "remaining %": round(100 * next(iter(found.values())).remaining, 2)}
            row.update({f"{b} acc %": round(r.test_accuracy, 2) for b, r in found.items()})
            row.update({f"{b} early stop": r.early_stop_step for b, r in found.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def headline_extra(self) -> list[str]:
        cfg = self.config
        return [f"IMP, {cfg.levels} levels at {100 * cfg.fraction:g}% per level ({cfg.scope}), rewind to step "
                f"k={cfg.rewind_step} of {self.total_steps}"]


# ----------------------------------------------------------------- the model-level verb

def _control_seed(seed: int, level: int) -> int:
    return (seed * 10007 + level) % 2**64


def apply_lottery(
    model: nn.Module,
    config: LotteryConfig,
    data: Dataset | None = None,
    *,
    inplace: bool = False,
    progress: bool | None = None,
    loss_fn: LossFn | None = None,
    dense: DenseRun | None = None,
    callbacks: Sequence[Callback] = (),
) -> tuple[nn.Module, LotteryReport]:
    """Run IMP on a copy of the unpruned `model`, whose weights are theta_0.

    Level 0 trains the dense network for T steps (or reuses `dense`, trained from the same theta_0
    with the same config and theta_k saved). Each level L >= 1 prunes, rewinds to theta_k and trains
    T - k steps, once per branch. `callbacks` go to every training after the dense one.
    loss_fn: the loss of every training run after the dense one (cross-entropy when None).
    Returns the last level's trained ticket (masks attached) and the report; inplace=True puts the
    ticket's masks and weights into `model` itself and returns it.
    """
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_lottery needs a Dataset to train on, got {type(data).__name__}")
    from tqdm.auto import tqdm

    check_unpruned(model)
    if data.val is None or len(data.val) == 0:
        raise ValueError("the early-stopping iteration needs a validation split: data.load(..., val_size=5000)")
    start = time.perf_counter()
    cfg, k = config, config.rewind_step
    total = cfg.train.total_steps(len(data.train))
    if k >= total:
        raise ValueError(f"rewind_step={k} must be in [0, {total - 1}] (the run has {total} steps)")
    if dense is None:
        dense = train_dense(model, data, cfg.train, rewind_steps=(k,), progress=progress)
    else:
        if dense.config != cfg.train:
            raise ValueError("dense was trained with another TrainConfig than config.train")
        if k not in dense.snapshots:
            raise ValueError(f"dense has no state at rewind_step={k}; saved steps: {sorted(dense.snapshots)}")
        if any(not torch.equal(v, dense.init[n]) for n, v in state_of(model).items()):
            raise ValueError("dense was trained from another initialisation than `model`")
    theta_k = dense.snapshots[k]
    template = copy.deepcopy(model).cpu()
    template.load_state_dict(dense.init)
    device = next(model.parameters()).device
    ones = {n: torch.ones_like(w) for n, w in effective_weights(dense.model).items()}
    results = [level_result(0, "dense", ones, dense.history)]
    masks: dict[str, dict[int, Masks]] = {b: {0: ones} for b in cfg.branches if b != "random_reinit"}
    scores = random_scores({n: m.shape for n, m in ones.items()}, cfg.random_mask_seed)
    prev = {"ticket": dense.model, "lr_rewind": dense.model}

    def run(net: nn.Module, level: int, branch: str, mask: Masks) -> nn.Module:
        net.to(device)
        history = train(net, data, cfg.train, loss_fn=loss_fn, callbacks=callbacks, progress=False, start_step=k)
        results.append(level_result(level, branch, mask, history))
        return net

    show = (not quiet_default()) if progress is None else progress
    for level in tqdm(range(1, cfg.levels + 1), desc="IMP levels", disable=not show):
        if "ticket" in cfg.branches:
            mask = next_masks(effective_weights(prev["ticket"]), masks["ticket"][level - 1], cfg)
            masks["ticket"][level] = mask
            prev["ticket"] = run(rewind(template, theta_k, mask), level, "ticket", mask)
            if cfg.runs_control(level):
                if "random_reinit" in cfg.branches:
                    fresh = state_of(reinitialize(template, _control_seed(cfg.reinit_seed, level)))
                    run(rewind(template, fresh, mask), level, "random_reinit", mask)
                if "random_mask" in cfg.branches:
                    rand = random_masks_like(mask, scores)
                    masks["random_mask"][level] = rand
                    run(rewind(template, theta_k, rand), level, "random_mask", rand)
        if "lr_rewind" in cfg.branches:
            mask = next_masks(effective_weights(prev["lr_rewind"]), masks["lr_rewind"][level - 1], cfg)
            masks["lr_rewind"][level] = mask
            trained = {n: v.cpu() for n, v in prev["lr_rewind"].state_dict().items()}
            state = {n: trained.get(f"{n}_orig", trained.get(n)) for n in template.state_dict()}
            prev["lr_rewind"] = run(rewind(template, state, mask), level, "lr_rewind", mask)
    branch = "ticket" if "ticket" in cfg.branches else "lr_rewind"
    net = prev[branch]
    if inplace:
        set_masks(model, masks[branch][cfg.levels])
        model.load_state_dict(net.state_dict())
        net = model
    last = next(r for r in reversed(results) if r.branch == branch)
    report = LotteryReport(
        config=cfg, total_steps=total, results=results, masks=masks, init_state=dense.init, rewind_state=theta_k,
        accuracy_before=results[0].test_accuracy, accuracy_after=last.test_accuracy,
        size_before=metrics.model_size(dense.model), size_after=sparse_size(net),
        seconds=time.perf_counter() - start)
    return net, report


# ----------------------------------------------------------------- views for the notebook

def pixel_density(mask: torch.Tensor, image_shape: Sequence[int] = (28, 28)) -> np.ndarray | None:
    """Share of a first Linear layer's weights kept per input pixel (mean of the mask over its rows),
    as an image; None when the layer does not read the flattened image."""
    if mask.dim() != 2 or mask.shape[1] != math.prod(image_shape):
        return None
    return mask.float().mean(dim=0).reshape(tuple(image_shape)).numpy()


# ----------------------------------------------------------------- registration

register(Technique(
    name="lottery", apply=apply_lottery, config=LotteryConfig,
    example=lambda: (tiny_mlp(), LotteryConfig(levels=1, train=TrainConfig(epochs=1, batch_size=64, lr=0.05, eval_every=2),
                                               branches=("ticket",)), {}),
    notebook="02_lottery_ticket_rewinding",
    params={
        "profile": PROFILE, "model_name": choice("lenet300", "lenet5"), "dataset": DATASET,
        "levels": Param("int", 1, 60), "fraction": OPEN_FRACTION,
        "output_fraction": Param("float", 0, 1, lo_open=True, hi_open=True, optional=True),
        "scope": choice("layer", "global"), "epochs": EPOCHS, "batch_size": Param("int", 1, 60000),
        "lr": Param("float", 0, 10, lo_open=True), "rewind_step": Param("int", 0, 10**9),
        "control_every": Param("int", 1, 60), "seed": SEED, "reinit_seed": SEED, "random_mask_seed": SEED,
    },
    references={"prune_survivors": prune_survivors, "rewind": rewind, "random_masks_like": random_masks_like}))
