"""Mixed precision: one option per layer, chosen by an exact integer program under a budget.

HAWQ-V3's formulation. Layer l takes option o with the binary variable x_lo:

    minimise    sum_lo s_lo x_lo                  (s: layer l's measured sensitivity to option o)
    subject to  sum_o x_lo = 1 for every layer    (one option each)
                sum_lo c_lo x_lo <= B             (c: the option's bytes, or milliseconds)

Costs may also carry pair terms (a latency table's interactions between neighbouring layers):
p[l1,l2][o1,o2] is added to the cost when l1 takes o1 and l2 takes o2. The product x_{l1,o1} x_{l2,o2}
is linearised exactly with a continuous y in [0, 1]:

                y <= x_{l1,o1},   y <= x_{l2,o2},   y >= x_{l1,o1} + x_{l2,o2} - 1
                sum_lo c_lo x_lo + sum p y <= B

(binary x force y = x_{l1,o1} x_{l2,o2}, whatever the sign of p).

Summing the per-layer sensitivities assumes their effects add up (true to first order for small
changes); the notebook measures how far that holds. `solve` hands the program to the HiGHS
mixed-integer solver (`scipy.optimize.milp`); `brute_force` enumerates every configuration and is the
oracle on small cases. `accuracy_aware` is the other strategy the toolkits ship: start from the most
aggressive setting and restore the most sensitive layers, one evaluation each, until the accuracy
drop is within the limit.

The verb `apply_mixed_precision` measures, for each layer alone at every bit width, the output KL
divergence from the FP32 model on selection images (`sensitivity.measure`; never the test set),
solves the program under a budget of file bytes (a multiple of a uniform packed file's), and stores
each layer at its width in one packed file (`packedfile`, per-channel codes): the accuracy reported is
that of the file's weights. KL rather than the loss change: clipping the weights' range shrinks
the logits, which can lower an over-confident model's held-out cross-entropy while its accuracy drops,
so a loss change can be negative for a harmful option; KL(p_FP32 || p) is zero only for an unchanged
output and grows with any change.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from compresslab.core.data import Dataset
from compresslab.core.metrics import model_size
from compresslab.core.models import prunable_layers
from compresslab.core.params import DATASET, PROFILE, SEED, WEIGHT, Param, choice
from compresslab.core.report import Report
from compresslab.core.training import LossFn, evaluate
from compresslab.core.validate import check_choice, check_float, check_int
from compresslab.techniques import packedfile
from compresslab.techniques.registry import StepContext, Technique, register, tiny_mlp
from compresslab.techniques.sensitivity import QUANT_OPTIONS, measure, selection_split, with_options

__all__ = ["Table", "PairTable", "layer_bytes", "total", "total_cost", "solve", "brute_force", "budget_sweep",
           "Tuning", "accuracy_aware", "MixedPrecisionConfig", "MixedPrecisionReport", "apply_mixed_precision"]

Table = Mapping[str, Mapping[str, float]]  # layer -> option -> value
PairTable = Mapping[tuple[str, str], Mapping[tuple[str, str], float]]  # (l1, l2) -> (o1, o2) -> extra cost


def _check_tables(scores: Table, costs: Table) -> list[tuple[str, list[str]]]:
    if not scores:
        raise ValueError("scores is empty: give {layer: {option: sensitivity}}")
    if set(scores) != set(costs):
        raise ValueError(f"scores and costs must name the same layers, got {sorted(scores)} and {sorted(costs)}")
    layout = []
    for layer, row in scores.items():
        if not row or set(row) != set(costs[layer]):
            raise ValueError(f"layer {layer!r}: scores and costs must give the same non-empty options, "
                             f"got {sorted(row)} and {sorted(costs[layer])}")
        for table, name in ((row, "scores"), (costs[layer], "costs")):
            bad = [o for o, v in table.items() if not (isinstance(v, (int, float)) and math.isfinite(v))]
            if bad:
                raise ValueError(f"{name}[{layer!r}] has non-finite or non-numeric values for {bad}")
        layout.append((layer, list(row)))
    return layout


def _check_pairs(costs: Table, pair_costs: PairTable | None) -> list[tuple[str, str, str, str, float]]:
    """pair_costs as (l1, l2, o1, o2, cost) terms: two distinct known layers, options each layer
    has, finite numbers; None or {} gives no terms."""
    if pair_costs is None:
        return []
    if not isinstance(pair_costs, Mapping):
        raise TypeError(f"pair_costs={pair_costs!r} must be a mapping {{(layer1, layer2): {{(option1, option2): cost}}}}")
    terms = []
    for layers, row in pair_costs.items():
        if not (isinstance(layers, tuple) and len(layers) == 2 and all(k in costs for k in layers)
                and layers[0] != layers[1]):
            raise ValueError(f"pair_costs key {layers!r} must be a tuple of two different layers of {sorted(costs)}")
        if not isinstance(row, Mapping):
            raise TypeError(f"pair_costs[{layers!r}]={row!r} must be a mapping {{(option1, option2): cost}}")
        for options, value in row.items():
            if not (isinstance(options, tuple) and len(options) == 2 and options[0] in costs[layers[0]]
                    and options[1] in costs[layers[1]]):
                raise ValueError(f"pair_costs[{layers!r}] key {options!r} must be (option of {layers[0]!r}, option "
                                 f"of {layers[1]!r}) from {sorted(costs[layers[0]])} x {sorted(costs[layers[1]])}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"pair_costs[{layers!r}][{options!r}]={value!r} must be a finite number")
            terms.append((*layers, *options, float(value)))
    return terms


def total(table: Table, config: Mapping[str, str]) -> float:
    """sum_l table[l][config[l]].

    >>> total({"a": {"x": 1.0, "y": 2.0}, "b": {"x": 10.0}}, {"a": "y", "b": "x"})
    12.0
    """
    return float(sum(table[layer][option] for layer, option in config.items()))


def total_cost(costs: Table, config: Mapping[str, str], pair_costs: PairTable | None = None) -> float:
    """sum_l costs[l][config[l]] + sum over pair terms p[l1,l2][config[l1],config[l2]] (an option
    pair not listed: 0).

    >>> costs = {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 10.0, "y": 20.0}}
    >>> total_cost(costs, {"a": "y", "b": "y"}, {("a", "b"): {("y", "y"): -5.0}})
    17.0
    """
    out = total(costs, config)
    for (first, second), row in (pair_costs or {}).items():
        out += row.get((config[first], config[second]), 0.0)
    return float(out)


def layer_bytes(model: nn.Module, options: Sequence[str] = QUANT_OPTIONS) -> dict[str, dict[str, int]]:
    """Per layer and packed kind: the bytes that layer adds to a packed file (codes, scales and bias;
    the file adds a header of a few hundred bytes on top)."""
    for option in options:
        check_choice("layer_bytes", "options", option, packedfile.KINDS)
    out = {}
    for name, layer in prunable_layers(model).items():
        out[name] = {}
        for option in options:
            packed = packedfile.pack_layer(layer.weight, layer.bias, option)
            out[name][option] = (len(packed.codes) + 4 * packed.scale.size
                                 + (0 if packed.bias is None else 4 * packed.bias.size))
    return out


def solve(scores: Table, costs: Table, budget: float, *, pair_costs: PairTable | None = None) -> dict[str, str]:
    """The configuration minimising the summed score with total cost <= budget (`total_cost`, pair
    terms included: the module docstring's program, exactly, by HiGHS branch and bound). ValueError
    if no configuration fits."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    layout = _check_tables(scores, costs)
    terms = _check_pairs(costs, pair_costs)
    check_float("solve", "budget", budget, None, None)
    cheapest = sum(min(costs[layer].values()) for layer, _ in layout)  # a lower bound with negative pair terms
    cheapest += sum(min(0.0, cost) for *_, cost in terms)
    if budget < cheapest - 1e-9 * max(1.0, abs(cheapest)):
        raise ValueError(f"budget={budget!r} is below the cheapest configuration's cost {cheapest!r}")
    index = [(layer, option) for layer, options in layout for option in options]
    column = {key: i for i, key in enumerate(index)}
    n, m = len(index), len(terms)
    c = np.concatenate([[scores[lay][o] for lay, o in index], np.zeros(m)])
    cost = np.array([costs[lay][o] for lay, o in index] + [t[-1] for t in terms], dtype=np.float64)
    one_each = np.array([[1.0 if lay == layer else 0.0 for lay, _ in index] + [0.0] * m for layer, _ in layout])
    constraints = [LinearConstraint(one_each, 1, 1), LinearConstraint(cost[None, :], -np.inf, budget)]
    if terms:  # y_t - x1 <= 0, y_t - x2 <= 0, x1 + x2 - y_t <= 1
        link = np.zeros((3 * m, n + m))
        for t, (first, second, o1, o2, _) in enumerate(terms):
            x1, x2, y = column[(first, o1)], column[(second, o2)], n + t
            link[3 * t, [y, x1]] = 1.0, -1.0
            link[3 * t + 1, [y, x2]] = 1.0, -1.0
            link[3 * t + 2, [x1, x2, y]] = 1.0, 1.0, -1.0
        constraints.append(LinearConstraint(link, -np.inf, np.tile([0.0, 0.0, 1.0], m)))
    integrality = np.concatenate([np.ones(n), np.zeros(m)])
    result = milp(c, constraints=constraints, integrality=integrality, bounds=Bounds(0, 1))
    if result.x is None:
        raise ValueError(f"the integer program found no configuration within budget={budget!r} "
                         f"({result.message})")
    chosen = {lay: o for (lay, o), v in zip(index, result.x[:n]) if v > 0.5}
    return {layer: chosen[layer] for layer, _ in layout}


def brute_force(scores: Table, costs: Table, budget: float, limit: int = 1_000_000, *,
                pair_costs: PairTable | None = None) -> dict[str, str]:
    """The same optimum by trying every configuration (at most `limit` of them; cost: `total_cost`);
    ties go to the lower cost, then to the first in option order."""
    layout = _check_tables(scores, costs)
    _check_pairs(costs, pair_costs)
    count = math.prod(len(options) for _, options in layout)
    if count > limit:
        raise ValueError(f"{count} configurations exceed limit={limit}")
    best, best_key = None, None
    for combo in itertools.product(*(options for _, options in layout)):
        config = {layer: o for (layer, _), o in zip(layout, combo)}
        cost = total_cost(costs, config, pair_costs)
        if cost > budget:
            continue
        key = (total(scores, config), cost)
        if best_key is None or key < best_key:
            best, best_key = config, key
    if best is None:
        raise ValueError(f"no configuration fits budget={budget!r}")
    return best


def budget_sweep(scores: Table, costs: Table, budgets: Sequence[float], *,
                 pair_costs: PairTable | None = None) -> list[dict]:
    """`solve` at each budget (those no configuration fits skipped): rows {"budget", "config", "cost"
    (`total_cost`, pair terms included), "score"}, one per distinct configuration, in budget order."""
    _check_tables(scores, costs)
    for i, budget in enumerate(budgets):
        check_float("budget_sweep", f"budgets[{i}]", budget)
    cheapest = sum(min(row.values()) for row in costs.values())
    cheapest += sum(min(0.0, cost) for *_, cost in _check_pairs(costs, pair_costs))  # a lower bound
    rows, seen = [], set()
    for budget in sorted(budgets):
        if budget < cheapest:
            continue
        try:
            config = solve(scores, costs, budget, pair_costs=pair_costs)
        except ValueError:  # the tables were checked above: only an infeasible budget is left
            continue
        key = tuple(config.items())
        if key not in seen:
            seen.add(key)
            rows.append({"budget": budget, "config": config, "cost": total_cost(costs, config, pair_costs),
                         "score": total(scores, config)})
    return rows


@dataclass(frozen=True)
class Tuning:
    """accuracy_aware's result: the final configuration and accuracy (%), whether it met the limit,
    and every evaluation in order ({"config", "accuracy", "restored"})."""

    config: dict
    accuracy: float
    met: bool
    trace: list

    @property
    def evaluations(self) -> int:
        return len(self.trace)


def accuracy_aware(evaluate_config: Callable[[dict], float], start: Mapping[str, str], order: Sequence[str],
                   restore: str | Mapping[str, str], reference: float, max_drop: float) -> Tuning:
    """Neural Compressor / NNCF style tuning: evaluate `start`; while the accuracy is more than
    `max_drop` points below `reference`, set the next layer of `order` (most sensitive first) to its
    `restore` option and evaluate again. At most len(order) + 1 evaluations.

    >>> acc = lambda c: 90.0 - sum(v == "int2" for v in c.values())  # each int2 layer costs a point
    >>> t = accuracy_aware(acc, {"a": "int2", "b": "int2", "c": "int2"}, ["b", "a", "c"], "int8", 90.0, 1.0)
    >>> t.config, t.accuracy, t.evaluations
    ({'a': 'int8', 'b': 'int8', 'c': 'int2'}, 89.0, 3)
    """
    check_float("accuracy_aware", "max_drop", max_drop, 0, None)
    if set(order) - set(start):
        raise ValueError(f"order names layers {sorted(set(order) - set(start))} that start does not")
    config = dict(start)
    accuracy = evaluate_config(dict(config))
    trace = [{"config": dict(config), "accuracy": accuracy, "restored": None}]
    for layer in order:
        if reference - accuracy <= max_drop:
            break
        config[layer] = restore if isinstance(restore, str) else restore[layer]
        accuracy = evaluate_config(dict(config))
        trace.append({"config": dict(config), "accuracy": accuracy, "restored": layer})
    return Tuning(config, accuracy, reference - accuracy <= max_drop, trace)


# ----------------------------------------------------------------- the verb

@dataclass(frozen=True)
class MixedPrecisionConfig:
    """options: the packed per-channel kinds a layer may take; budget: budget_scale x the bytes of
    the model packed uniformly at budget_kind; select_images: training images the sensitivities are
    measured on (the validation split if the data has one); clip: each channel's scale, max|w_c| or
    the squared-error minimiser (`packedfile.channel_codes`)."""

    options: tuple[str, ...] = QUANT_OPTIONS
    budget_kind: str = "int3"
    budget_scale: float = 1.0
    select_images: int = 2048
    clip: str = "mse"

    def __post_init__(self) -> None:
        owner = "MixedPrecisionConfig"
        if not isinstance(self.options, tuple) or not self.options:
            raise ValueError(f"{owner}.options={self.options!r} must be a non-empty tuple of {QUANT_OPTIONS}")
        for option in self.options:
            check_choice(owner, "options", option, QUANT_OPTIONS)
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"{owner}.options={self.options!r} names an option twice")
        check_choice(owner, "budget_kind", self.budget_kind, QUANT_OPTIONS)
        check_float(owner, "budget_scale", self.budget_scale, 0, 100, lo_open=True)
        check_int(owner, "select_images", self.select_images, 1, 1_000_000)
        check_choice(owner, "clip", self.clip, packedfile.CLIPS)


@dataclass(kw_only=True)
class MixedPrecisionReport(Report):
    """The chosen kind per layer, the budget and what the choice costs."""

    kinds: dict = field(default_factory=dict)
    budget_bytes: float = 0.0
    layer_bytes: float = 0.0  # the chosen layers' bytes (the program's cost)
    file_bytes: int | None = None  # the packed file's bytes when one was written
    predicted_kl: float = 0.0  # the program's objective: the summed per-layer output KL divergences (nats)

    technique = "mixed precision"

    def headline_extra(self) -> list[str]:
        chosen = ", ".join(f"{k}: {v}" for k, v in self.kinds.items())
        file = "" if self.file_bytes is None else f"; file {self.file_bytes:,} bytes"
        return [f"per layer: {chosen}; {self.layer_bytes:,.0f} of {self.budget_bytes:,.0f} budget bytes{file}"]


def apply_mixed_precision(model: nn.Module, config: MixedPrecisionConfig, data: Dataset | None = None, *,
                          inplace: bool = False, progress: bool | None = None, loss_fn: LossFn | None = None,
                          path: str | Path | None = None) -> tuple[nn.Module, MixedPrecisionReport]:
    """Measure, solve, store: each layer at the width the integer program chose (module docstring).
    The returned model holds the dequantized weights (read back from the file at `path` if given).
    progress is unused and loss_fn must be None: nothing is trained."""
    if loss_fn is not None:
        raise ValueError("loss_fn must be None: mixed precision trains nothing")
    if not isinstance(data, Dataset):
        raise ValueError(f"apply_mixed_precision needs data (a Dataset) to measure sensitivities, got "
                         f"{type(data).__name__}")
    start = time.perf_counter()
    work = model if inplace else copy.deepcopy(model)
    work.eval()
    split = selection_split(data, config.select_images)
    rows = measure(work, split, config.options, clip=config.clip)
    scores = {}
    for row in rows:
        scores.setdefault(row["layer"], {})[row["option"]] = row["kl"]
    costs = layer_bytes(work, config.options)
    budget = config.budget_scale * sum(costs[name][config.budget_kind] for name in costs)
    kinds = solve(scores, costs, budget)
    before = evaluate(model, data.test).accuracy
    size_before = model_size(model)
    file_bytes = None
    if path is not None:
        file_bytes = packedfile.save_model(work, path, kinds, clip=config.clip)
        packedfile.unpack_into(work, packedfile.read(path))
    else:
        work.load_state_dict(with_options(work, kinds, config.clip).state_dict())
    report = MixedPrecisionReport(
        config=config, accuracy_before=before, accuracy_after=evaluate(work, data.test).accuracy,
        size_before=size_before, size_after=model_size(work, stored_bytes=file_bytes or total(costs, kinds)), seconds=time.perf_counter() - start,
        layers=[{"layer": name, "kind": kinds[name], "bytes": costs[name][kinds[name]],
                 "kl": scores[name][kinds[name]]} for name in kinds],
        kinds=kinds, budget_bytes=budget, layer_bytes=total(costs, kinds), file_bytes=file_bytes,
        predicted_kl=total(scores, kinds))
    return work, report


# ----------------------------------------------------------------- registration

def _recipe_step(model: nn.Module, config: MixedPrecisionConfig, data: Dataset, context: StepContext):
    """A recipe's mixed_precision step: the packed file written to context.file (if any)."""
    if context.file is not None:
        Path(context.file).parent.mkdir(parents=True, exist_ok=True)
    return apply_mixed_precision(model, config, data, progress=context.progress, path=context.file)


def _frontier(arch: str, epochs: float, seed: int) -> list[dict]:
    """Notebook 08: the integer program's choice at the bytes of uniform INT3 and of uniform INT4
    (no fine-tuning)."""
    return [{"name": f"mixed ({kind.upper()} size)", "precision": "int4", "family": "single",
             "steps": [("mixed_precision", MixedPrecisionConfig(budget_kind=kind))]} for kind in ("int3", "int4")]


register(Technique(
    name="mixed_precision", apply=apply_mixed_precision, config=MixedPrecisionConfig,
    example=lambda: (tiny_mlp(), MixedPrecisionConfig(select_images=128), {}),
    verb="mixed_precision", step=_recipe_step, writes_file=".clpk", frontier=_frontier,
    notebook="11_mixed_precision", params={
        "profile": PROFILE, "model_name": choice("lenet5", "lenet300"), "dataset": DATASET, "seed": SEED,
        "select_images": Param("int", 100, 30_000), "calibration_images": Param("int", 2, 60_000),
        "hutchinson_samples": Param("int", 2, 10_000), "max_drop": Param("float", 0, 100),
        "tuning_start": choice(*QUANT_OPTIONS), "runtimes": Param("choices", choices=("onnxruntime", "openvino")),
        "runtime_batches": Param("ints", 1, 4096), "budget_share": WEIGHT, "threads": Param("int", 1, 256),
    }))
