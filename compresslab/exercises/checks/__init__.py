"""Exercise checks: compare a student's function with the package's reference implementation.

`check_<name>(fn)` calls `fn` on small hand-checkable cases and on seeded random ones and compares
every result with the reference in `REFERENCES[name]` (a function of the package, or a thin
wrapper around one, with the exercise's signature).

- Pass: prints one line, "[ok] name: all N cases match the reference."
- Fail: raises `CheckFailed` (an AssertionError) naming the case, what was expected, what came
  back, and a hint (a specific one when the answer matches a known mistake).
- `fn` is still the stub (raises NotImplementedError): raises `ExerciseNotDone`, which Jupyter
  shows as a short message instead of a traceback.
- `fn` raises any other error: it propagates with its own traceback (your code), plus a note
  naming the case that triggered it.

Grading: `compresslab check` (see `grading.py`) imports the student's functions from a submitted
notebook in a fresh process and calls these checks from the installed package, with random cases
drawn per student (`checking.student_cases`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from compresslab.exercises.checking import (  # noqa: F401 - re-exported: the notebooks and the grader use checks.*
    CheckFailed,
    ExerciseNotDone,
    as_tensor,
    call,
    compare,
    difference,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
    short,
    student_cases,
    student_seed,
)
from compresslab.techniques import (
    deepcompression,
    distillation,
    huffman,
    lottery,
    lowrank,
    pruning,
    quantization,
    sharing,
    structured,
)

from .deepcompression_checks import check_huffman_code, check_init_centroids, check_relative_encode  # noqa: F401
from .distillation_checks import check_kd_loss, check_soft_targets  # noqa: F401
from .lottery_checks import check_prune_survivors, check_random_masks_like, check_rewind  # noqa: F401
from .lowrank_checks import check_factorize_linear, check_rank_for_energy, check_svd_factorize  # noqa: F401
from .pruning_checks import check_cubic_sparsity, check_global_magnitude_masks, check_magnitude_mask  # noqa: F401
from .quantization_checks import check_choose_qparams, check_fake_quantize, check_quantize_affine  # noqa: F401
from .structured_checks import (  # noqa: F401
    check_select_channels,
    check_shrink_pair,
    select_channels_reference,
    shrink_pair_reference,
)
from .target_checks import (  # noqa: F401
    TARGETS,
    check_bits_target,
    check_deep_compression_target,
    check_distillation_target,
    check_pruning_target,
    check_rank_target,
    check_ticket_target,
    check_width_target,
    reference_choices,
    target_setup,
)

# ----------------------------------------------------------------- registry

def _huffman_reference(counts) -> dict[int, str]:
    """Reference for the huffman_code exercise: canonical Huffman codewords as strings."""
    arr = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(arr)
    if len(used) == 1:
        return {int(used[0]): "0"}
    lengths = huffman.huffman_lengths(arr, max_length=None)
    codes = huffman.canonical_codes(lengths)
    return {int(s): format(int(codes[s]), f"0{int(lengths[s])}b") for s in used}


def _relative_reference(positions, index_bits: int) -> np.ndarray:
    return deepcompression.relative_encode(positions, index_bits)


def _init_reference(w: torch.Tensor, k: int, method: str = "linear") -> torch.Tensor:
    return sharing.init_centroids(w, k, method)


def _factorize_reference(layer: nn.Linear, rank: int) -> nn.Sequential:
    return lowrank.factorize_layer(layer, rank)


def _svd_reference(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    return lowrank.svd_factorize(w, rank)


def _quantize_reference(x, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    return quantization.quantize_affine(x, scale, zero_point, qmin, qmax)


def _fake_quantize_reference(x, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    return quantization.fake_quantize(x, scale, zero_point, qmin, qmax)


REFERENCES: dict[str, Callable] = {
    "magnitude_mask": pruning.magnitude_mask,
    "global_magnitude_masks": pruning.global_magnitude_masks,
    "cubic_sparsity": pruning.cubic_sparsity,
    "prune_survivors": lottery.prune_survivors,
    "rewind": lottery.rewind,
    "random_masks_like": lottery.random_masks_like,
    "choose_qparams": quantization.choose_qparams,
    "quantize_affine": _quantize_reference,
    "fake_quantize": _fake_quantize_reference,
    "soft_targets": distillation.soft_targets,
    "kd_loss": distillation.kd_loss,
    "svd_factorize": _svd_reference,
    "rank_for_energy": lowrank.rank_for_energy,
    "factorize_linear": _factorize_reference,
    "init_centroids": _init_reference,
    "huffman_code": _huffman_reference,
    "relative_encode": _relative_reference,
    "select_channels": select_channels_reference,
    "shrink_pair": shrink_pair_reference,
    **reference_choices(),
}

CHECKS: dict[str, Callable] = {name: globals()[f"check_{name}"] for name in REFERENCES}


# The package functions each exercise asks the student to write: calling them is not allowed
# (the grader gives such a function 0, see `submission.reference_uses` and `submission.tripwire`).
FORBIDDEN: dict[str, tuple[Callable, ...]] = {
    **{name: (ref,) for name, ref in REFERENCES.items() if getattr(ref, "__module__", "").startswith("compresslab.techniques")},
    "quantize_affine": (quantization.quantize_affine, _quantize_reference),
    "fake_quantize": (quantization.fake_quantize, _fake_quantize_reference),
    "svd_factorize": (lowrank.svd_factorize, _svd_reference),
    "factorize_linear": (lowrank.factorize_layer, _factorize_reference),
    "init_centroids": (sharing.init_centroids, _init_reference),
    "huffman_code": (huffman.huffman_lengths, huffman.canonical_codes, _huffman_reference),
    "relative_encode": (deepcompression.relative_encode, _relative_reference),
    "select_channels": (structured.structured_keep, structured.structured_prune, select_channels_reference),
    "shrink_pair": (structured.shrink, structured.structured_prune, shrink_pair_reference),
    **{name: () for name in TARGETS},  # open targets: any package function may help reach them
}
