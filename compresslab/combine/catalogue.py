"""The Pareto notebook's grid of recipes: the precision ladder, single techniques, and combinations.

`catalogue(arch, ...)` returns the recipes in that order, then those the registered techniques add
(`Technique.frontier`, in registration order). Fine-tuning lengths scale with `epochs`
(the notebook passes a small value in the quick profile). INT8 chains use structured pruning or
low rank where the runtime should gain speed (a dense INT8 kernel multiplies zeros like anything
else), and unstructured pruning with sparse storage where the file should shrink.
"""

from __future__ import annotations

from compresslab.combine.recipes import Recipe, Step
from compresslab.core.training import TrainConfig
from compresslab.core.validate import check_choice, check_float, check_int, check_seed
from compresslab.techniques import deepcompression as dc
from compresslab.techniques.distillation import DistillConfig, DistillStep
from compresslab.techniques.lowbit import LowBitConfig
from compresslab.techniques.lowrank import LowRankConfig
from compresslab.techniques.pruning import PruneConfig
from compresslab.techniques.quantization import QATConfig, QuantConfig
from compresslab.techniques.registry import techniques
from compresslab.techniques.sharing import ShareConfig

__all__ = ["PAPER_RATES", "catalogue", "registered_recipes"]

# Han et al.'s per-layer pruning rates (Deep Compression, Tables 2 and 3)
PAPER_RATES = {"lenet300": {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74},
               "lenet5": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}}


def catalogue(arch: str = "lenet300", epochs: float = 2.0, sparsity: float = 0.9, student_hidden: int = 100,
              ternary_ratio: float = 0.7, dc_iterations: int = 3, dc_fc_bits: int = 5,
              seed: int = 0) -> list[Recipe]:
    """The recipes of notebook 08 for `arch` ('lenet300' or 'lenet5'); `epochs`: the fine-tuning
    epochs of one step (distillation 3x, ternary/binary STE 2x, Deep Compression's pruning 6x over its iterations;
    dc_fc_bits: the cluster-index bits of its fully connected layers)."""
    check_choice("", "arch", arch, tuple(PAPER_RATES))
    check_float("", "epochs", epochs, 0, 1000, lo_open=True)
    check_float("", "sparsity", sparsity, 0, 1, hi_open=True)
    check_int("", "student_hidden", student_hidden, 1, 10_000)
    check_float("", "ternary_ratio", ternary_ratio, 0, 10, lo_open=True)
    check_int("", "dc_iterations", dc_iterations, 1, 100)
    check_int("", "dc_fc_bits", dc_fc_bits, 1, 16)
    check_seed("", "seed", seed)

    def ft(scale: float = 1.0, lr: float = 0.02, offset: int = 1) -> TrainConfig:
        return TrainConfig(epochs=epochs * scale, lr=lr, lr_schedule="cosine", weight_decay=1e-4, seed=seed + offset)

    prune = Step("prune", PruneConfig(sparsity=sparsity, scope="global", schedule="iterative", iterations=2,
                                      finetune=ft()))
    structured = Step("prune", PruneConfig(sparsity=0.5, structured=True, schedule="one_shot", finetune=ft()))
    svd = Step("lowrank", LowRankConfig(param_ratio=0.25, scope="model", finetune=ft()))
    distill = Step("distill", DistillStep(student_kwargs={"hidden": (student_hidden,)}, seed=seed, config=DistillConfig(
        temperature=4.0, alpha=0.9, train=TrainConfig(epochs=3 * epochs, lr=0.05, lr_schedule="cosine", seed=seed))))
    int4 = Step("qat", QATConfig(quant=QuantConfig(weight_bits=4, act_bits=None, seed=seed), finetune=ft(lr=0.01)))

    def lowbit(kind: str, teacher: bool) -> Step:
        return Step("lowbit", LowBitConfig(kind=kind, threshold_ratio=ternary_ratio, finetune=ft(2, lr=0.01, offset=3)),
                    teacher_temperature=4.0 if teacher else None, teacher_alpha=0.7)

    deep = Step("deep_compression", dc.DeepCompressionConfig(
        prune=PruneConfig(scope="layer", layer_sparsity=PAPER_RATES[arch], schedule="iterative",
                          iterations=dc_iterations, finetune=ft(6 / dc_iterations, lr=0.05)),
        share=ShareConfig(conv_bits=8, fc_bits=dc_fc_bits, seed=seed, finetune=ft(0.5, lr=1e-3, offset=2)),
        encode=dc.EncodeConfig(conv_index_bits=5, fc_index_bits=5), distill_temperature=2.0, distill_alpha=0.9))
    tail_prune = Step("prune", PruneConfig(sparsity=0.7, scope="global", schedule="one_shot", finetune=ft()))
    fixed = [
        Recipe("FP32", (), "fp32", "precision"),
        Recipe("BF16", (), "bf16", "precision"),
        Recipe("FP16", (), "fp16", "precision"),
        Recipe("INT8", (), "int8", "precision"),
        Recipe("INT4 (QAT)", (int4,), "int4", "precision"),
        Recipe("ternary", (lowbit("ternary", False),), "ternary", "precision"),
        Recipe("binary", (lowbit("binary", False),), "binary", "precision"),
        Recipe(f"pruned {sparsity:.0%}", (prune,), "fp32", "single", sparse=True),
        Recipe("structured 50%", (structured,), "fp32", "single"),
        Recipe("low-rank", (svd,), "fp32", "single"),
        Recipe(f"distilled {student_hidden}", (distill,), "fp32", "single"),
        Recipe("pruned -> INT8", (prune,), "int8", "combination", sparse=True),
        Recipe("structured -> INT8", (structured,), "int8", "combination"),
        Recipe("distilled -> INT8", (distill,), "int8", "combination"),
        Recipe("distilled -> pruned -> INT8", (distill, tail_prune), "int8", "combination", sparse=True),
        Recipe("SVD -> pruned", (svd, tail_prune), "fp32", "combination", sparse=True),
        Recipe("SVD -> INT8", (svd,), "int8", "combination"),
        Recipe("Deep Compression", (deep,), "fp32", "combination"),
        Recipe("ternary + distill", (lowbit("ternary", True),), "ternary", "combination"),
        Recipe("binary + distill", (lowbit("binary", True),), "binary", "combination"),
    ]
    return fixed + registered_recipes(arch, epochs, seed)


def registered_recipes(arch: str, epochs: float, seed: int) -> list[Recipe]:
    """The recipes the registered techniques put on the frontier (`Technique.frontier`)."""
    found = []
    for technique in techniques().values():
        for entry in technique.frontier(arch, epochs, seed) if technique.frontier else ():
            steps = tuple(Step(verb, config) for verb, config in entry.get("steps", ()))
            found.append(Recipe(entry["name"], steps, entry.get("precision", "fp32"), entry.get("family", "single"),
                                sparse=bool(entry.get("sparse", False))))
    return found
