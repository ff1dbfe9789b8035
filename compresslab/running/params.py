"""The declared type and allowed values of every notebook parameter.

`compresslab run` checks a run's values against these before executing anything, and `compresslab
list` shows them; a test checks that every parameter of every notebook's parameters cell is declared
here and that its default is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compresslab.core.data import DATASETS
from compresslab.core.validate import SEED_LIMIT, check_choice, check_float, check_int, show

__all__ = [
    "Param",
    "SPECS",
    "spec_for",
    "check_values",
]


@dataclass(frozen=True)
class Param:
    """One parameter: kind int | float | choice | choices (a list of choices) | ints | floats |
    fractions (a dict name -> [0, 1)) | text (a string, e.g. a folder; "" for none),
    bounds lo/hi (open where lo_open/hi_open), choices, whether None is allowed, whether a list may be empty."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    optional: bool = False
    lo_open: bool = False
    hi_open: bool = False
    empty_ok: bool = False

    def describe(self) -> str:
        """The allowed values in words, e.g. 'float in (0, 1]' or "one of ('mnist', 'fashion_mnist')"."""
        if self.kind == "text":
            text = "str"
        elif self.kind == "choice":
            text = f"one of {self.choices}"
        elif self.kind == "choices":
            text = f"list of values from {self.choices}"
        else:
            lo = "" if self.lo is None else f"{'(' if self.lo_open else '['}{self.lo}"
            hi = "" if self.hi is None else f"{self.hi}{')' if self.hi_open else ']'}"
            bounds = f" in {lo}, {hi}" if lo and hi else (f" >= {self.lo}" if lo else "")
            text = {"int": "int", "float": "float", "ints": "list of int", "floats": "list of float",
                    "fractions": "dict layer -> float"}[self.kind] + bounds
        return text + (" or None" if self.optional else "")

    def check(self, owner: str, name: str, value: object) -> None:
        """Raise ValueError / TypeError naming `owner.name`, the value and what is allowed."""
        if value is None and self.optional:
            return
        if self.kind == "text":
            if not isinstance(value, str):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
        elif self.kind == "choice":
            check_choice(owner, name, value, self.choices)
        elif self.kind == "choices":
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            if not value and not self.empty_ok:
                raise ValueError(f"{owner}.{name}={show(value)} must be a non-empty {self.describe()}")
            for i, v in enumerate(value):
                check_choice(owner, f"{name}[{i}]", v, self.choices)
        elif self.kind in ("int", "float"):
            self._one(owner, name, value, self.kind)
        elif self.kind in ("ints", "floats"):
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            if not value and not self.empty_ok:
                raise ValueError(f"{owner}.{name}={show(value)} must be a non-empty {self.describe()}")
            for i, v in enumerate(value):
                self._one(owner, f"{name}[{i}]", v, self.kind[:-1])
        else:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise TypeError(f"{owner}.{name}={show(value)} must be a {self.describe()}")
            for k, v in value.items():
                self._one(owner, f"{name}[{k!r}]", v, "float")

    def _one(self, owner: str, name: str, value: object, kind: str) -> None:
        if kind == "int":
            check_int(owner, name, value, self.lo, self.hi)
        else:
            check_float(owner, name, value, self.lo, self.hi, self.lo_open, self.hi_open)


def _choice(*values: object) -> Param:
    return Param("choice", choices=values)


PROFILE = _choice("quick", "full")
DATASET = _choice(*DATASETS)
SEED = Param("int", 0, SEED_LIMIT - 1)
EPOCHS = Param("float", 0, 1000, lo_open=True)
FRACTION = Param("float", 0, 1, hi_open=True)  # [0, 1)
OPEN_FRACTION = Param("float", 0, 1, lo_open=True, hi_open=True)  # (0, 1)
SHARE = Param("float", 0, 1, lo_open=True)  # (0, 1]
WEIGHT = Param("float", 0, 1)  # [0, 1]
TEMPERATURE = Param("float", 1e-3, 1e4)
QUANT_BITS = Param("int", 2, 16)
CODE_BITS = Param("int", 1, 16)

SPECS: dict[str, dict[str, Param]] = {
    "01_magnitude_pruning": {
        "profile": PROFILE, "model_name": _choice("lenet300", "lenet5"), "dataset": DATASET,
        "sparsity": FRACTION, "scope": _choice("global", "layer"),
        "schedule": _choice("one_shot", "iterative", "gradual"), "iterations": Param("int", 1, 100),
        "structured_sparsity": FRACTION, "teacher_temperature": Param("float", 1e-3, 1e4, optional=True),
        "seed": SEED,
    },
    "02_lottery_ticket_rewinding": {
        "profile": PROFILE, "model_name": _choice("lenet300", "lenet5"), "dataset": DATASET,
        "levels": Param("int", 1, 60), "fraction": OPEN_FRACTION,
        "output_fraction": Param("float", 0, 1, lo_open=True, hi_open=True, optional=True),
        "scope": _choice("layer", "global"), "epochs": EPOCHS, "batch_size": Param("int", 1, 60000),
        "lr": Param("float", 0, 10, lo_open=True), "rewind_step": Param("int", 0, 10**9),
        "control_every": Param("int", 1, 60), "seed": SEED, "reinit_seed": SEED, "random_mask_seed": SEED,
    },
    "03_ptq_vs_qat": {
        "profile": PROFILE, "model_name": _choice("lenet5", "small_cnn", "lenet300"), "dataset": DATASET,
        "bit_widths": Param("ints", 2, 16), "qat_bit_widths": Param("ints", 2, 16), "qat_epochs": EPOCHS,
        "observer": _choice("minmax", "percentile", "mse"), "granularity": _choice("per_channel", "per_tensor"),
        "weight_bits": QUANT_BITS, "act_bits": QUANT_BITS, "calibration_size": Param("int", 1, 60000),
        "seed": SEED,
    },
    "04_knowledge_distillation": {
        "profile": PROFILE, "dataset": DATASET, "temperatures": Param("floats", 1e-3, 1e4),
        "alpha": WEIGHT, "alphas": Param("floats", 0, 1, empty_ok=True), "tiny_hidden": Param("ints", 1, 10000),
        "teacher_dropout": FRACTION, "teacher_jitter": Param("int", 0, 4), "temperature": TEMPERATURE,
        "image_index": Param("int", 0, 9999), "seed": SEED,
    },
    "05_svd_factorization": {
        "profile": PROFILE, "model_name": _choice("mlp1200", "lenet300", "lenet5"), "dataset": DATASET,
        "param_ratio": SHARE, "scope": _choice("model", "layer"), "energy": SHARE,
        "conv_mode": _choice("channel", "spatial"), "finetune_epochs": EPOCHS, "seed": SEED,
    },
    "06_deep_compression": {
        "profile": PROFILE, "model_name": _choice("lenet300", "lenet5"), "dataset": DATASET,
        "layer_sparsity": Param("fractions", 0, 1, hi_open=True, optional=True),
        "prune_iterations": Param("int", 1, 100),
        "distill_temperature": Param("float", 1e-3, 1e4, optional=True), "distill_alpha": WEIGHT,
        "conv_bits": CODE_BITS, "fc_bits": CODE_BITS, "conv_index_bits": CODE_BITS, "fc_index_bits": CODE_BITS,
        "init": _choice("linear", "density", "random"), "value_dtype": _choice("float16", "float32"), "seed": SEED,
    },
    "07_deployment": {
        "profile": PROFILE, "dataset": DATASET,
        "architectures": Param("choices", choices=("lenet300", "lenet5")),
        "headline": _choice("lenet300", "lenet5"), "compressed_arch": _choice("lenet300", "lenet5"),
        "runtimes": Param("choices", choices=("onnxruntime", "openvino", "executorch", "litert", "coreml", "tensorrt"),
                          empty_ok=True),
        "calibration_size": Param("int", 1, 60000), "rounds": Param("int", 1, 1000),
        "drift_window": Param("int", 10, 10000), "drift_method": _choice("ks", "threshold"), "seed": SEED,
    },
    "08_pareto_frontier": {
        "profile": PROFILE, "dataset": DATASET, "model_name": _choice("lenet300", "lenet5"),
        "runtime": _choice("onnxruntime", "openvino"), "finetune_epochs": EPOCHS, "sparsity": FRACTION,
        "student_hidden": Param("int", 1, 10000), "ternary_ratio": Param("float", 0, 10, lo_open=True),
        "dc_iterations": Param("int", 1, 100), "dc_fc_bits": CODE_BITS,
        "sram_kb": Param("float", 0, 10**7, lo_open=True), "rounds": Param("int", 1, 1000),
        "results_dir": Param("text"), "budget_kb": Param("float", 0, 10**7, lo_open=True),
        "budget_ms": Param("float", 0, 10**4, lo_open=True), "budget_accuracy": Param("float", 0, 100),
        "budget_batch": _choice(1, 256), "seed": SEED,
    },
    "09_language_model": {
        "profile": PROFILE, "method": _choice("rtn", "gptq"), "bits": _choice(8, 4, 3),
        "group_size": _choice(0, 16, 32, 64, 128), "bit_widths": Param("ints", 2, 8),
        "group_sizes": Param("ints", 0, 128), "calibration": Param("int", 1, 4096), "alpha": WEIGHT,
        "sparsity": OPEN_FRACTION, "distill_temperature": TEMPERATURE, "distill_alpha": WEIGHT,
        "lowrank_ratio": SHARE, "sample_bytes": Param("int", 1, 2000), "rounds": Param("int", 1, 1000), "seed": SEED,
    },
}


def spec_for(notebook: str) -> dict[str, Param]:
    """The declared parameters of a notebook (by file stem); {} for a notebook that declares none."""
    return SPECS.get(notebook, {})


def check_values(notebook: str, values: Mapping[str, object]) -> None:
    """Raise ValueError / TypeError for the first value that its declaration does not allow.

    Names without a declaration are left to the runner's unknown-parameter check."""
    spec = spec_for(notebook)
    for name, value in values.items():
        if name in spec:
            spec[name].check(notebook, name, value)
