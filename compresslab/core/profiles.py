"""Run profiles: the set-up every notebook starts with, in one place.

`profile="full"` is the real, paper-scale experiment; `profile="quick"` shrinks data and epochs so
that a notebook runs in CI, through the same cells. A notebook's first cell after its parameters is

    run = profiles.start(profile, dataset, seed, quick={"train_subset": 8000, "test_subset": 2000})
    ds, QUICK, run_start = run.data, run.quick, run.started
    print(run)

and its baseline is `profiles.baseline_for(model_name, run, epochs=run.pick(quick=2, full=15))`.
Each notebook passes its own subset sizes and epochs: they are part of its recorded numbers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

from compresslab.core import data as data_mod
from compresslab.core import textdata
from compresslab.core.cache import Baseline, pretrained
from compresslab.core.data import Dataset
from compresslab.core.training import TrainConfig, seed_everything

__all__ = [
    "PROFILES",
    "BASELINE_RECIPE",
    "check_profile",
    "Run",
    "start",
    "baseline_config",
    "baseline_for",
    "describe_baseline",
]

PROFILES = ("quick", "full")

# The workbook's common baseline recipe (SGD with momentum 0.9, batch 128 from TrainConfig's defaults).
BASELINE_RECIPE: Mapping[str, object] = {"lr": 0.05, "lr_schedule": "cosine", "weight_decay": 1e-4}

T = TypeVar("T")


def check_profile(profile: str) -> bool:
    """True for "quick", False for "full"; anything else raises ValueError.

    >>> check_profile("quick"), check_profile("full")
    (True, False)
    >>> check_profile("fast")
    Traceback (most recent call last):
    ...
    ValueError: profile='fast' must be 'quick' or 'full'
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} must be 'quick' or 'full'")
    return profile == "quick"


@dataclass(frozen=True)
class Run:
    """One notebook run: its profile, seed and data, and the clocks started with it."""

    profile: str
    seed: int
    data: Dataset
    started: float  # time.perf_counter() at the start
    cpu_started: float  # time.process_time() at the start

    @property
    def quick(self) -> bool:
        return self.profile == "quick"

    def pick(self, quick: T, full: T) -> T:
        """`quick` under the quick profile, `full` under the full one.

        >>> Run("quick", 0, None, 0.0, 0.0).pick(quick=2, full=15)
        2
        """
        return quick if self.quick else full

    def seconds(self) -> float:
        """Wall-clock seconds since the start."""
        return time.perf_counter() - self.started

    def describe(self) -> str:
        """'<dataset>: <n> training[, <n> validation] and <n> test images; torch threads: <t>'."""
        ds = self.data
        if isinstance(ds, textdata.TextDataset):
            return f"{ds.summary()}; torch threads: {torch.get_num_threads()}"
        val = f", {len(ds.val):,} validation (carved from training)" if ds.val is not None else ""
        return (f"{ds.name}: {len(ds.train):,} training{val} and {len(ds.test):,} test images; "
                f"torch threads: {torch.get_num_threads()}")

    __str__ = describe


def start(profile: str, dataset: str, seed: int, quick: Mapping[str, int] | None = None,
          full: Mapping[str, int] | None = None, data_seed: int = 0, root: str | None = None) -> Run:
    """Check the profile, seed every RNG with `seed`, start the clocks and load `dataset`.

    quick / full: `data.load` arguments (train_subset, test_subset, val_size) of each profile, or for
    the text corpus `textdata.CORPUS` the `textdata.load_corpus` budgets (`textdata.LOAD_OPTIONS`);
    data_seed: the seed of the data's shuffle and validation split (`data.load(seed=...)`).
    """
    is_quick = check_profile(profile)
    started, cpu_started = time.perf_counter(), time.process_time()
    seed_everything(seed)
    options = dict((quick if is_quick else full) or {})
    if dataset == textdata.CORPUS:
        unknown = sorted(set(options) - set(textdata.LOAD_OPTIONS))
        if unknown:
            raise ValueError(f"unknown load_corpus option(s) {unknown}; give {', '.join(textdata.LOAD_OPTIONS)}")
        return Run(profile, seed, textdata.load_corpus(root=root, **options), started, cpu_started)
    unknown = sorted(set(options) - {"train_subset", "test_subset", "val_size"})
    if unknown:
        raise ValueError(f"unknown data.load option(s) {unknown}; give train_subset, test_subset or val_size")
    ds = data_mod.load(dataset, root=root, seed=data_seed, **options)
    return Run(profile, seed, ds, started, cpu_started)


def baseline_config(epochs: float, seed: int, **overrides) -> TrainConfig:
    """The workbook's baseline recipe (`BASELINE_RECIPE`) for `epochs`, with `overrides` applied.

    >>> c = baseline_config(15, seed=0)
    >>> (c.epochs, c.lr, c.lr_schedule, c.weight_decay, c.optimizer, c.batch_size)
    (15, 0.05, 'cosine', 0.0001, 'sgd', 128)
    >>> baseline_config(2, seed=1, lr=0.02, weight_decay=0.0).lr
    0.02
    """
    return TrainConfig(**{**BASELINE_RECIPE, "epochs": epochs, "seed": seed, **overrides})


def baseline_for(model_name: str, run: Run, epochs: float, model_kwargs: dict | None = None,
                 progress: bool | None = None, **overrides) -> Baseline:
    """The cached baseline of `model_name` on the run's data, trained with `baseline_config(epochs,
    run.seed, **overrides)` the first time (see `cache.pretrained`)."""
    config = baseline_config(epochs, run.seed, **overrides)
    return pretrained(model_name, run.data, config, model_kwargs=model_kwargs, progress=progress)


def describe_baseline(label: str, baseline: Baseline) -> str:
    """'<label>: test accuracy a%, error e% (from cache | trained in s s)'."""
    origin = "from cache" if baseline.from_cache else f"trained in {baseline.train_seconds:.0f} s"
    return (f"{label}: test accuracy {baseline.accuracy:.2f}%, error {100 - baseline.accuracy:.2f}% "
            f"({origin})")
