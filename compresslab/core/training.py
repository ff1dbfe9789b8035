"""Seeding, device choice, THE training loop and evaluation (the baseline cache: core/cache.py).

Every technique trains through `train(model, data, config, loss_fn, callbacks)`: fine-tuning after
pruning, QAT, distillation and lottery rounds change the loss or hook in callbacks, never the loop.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core import models
from compresslab.core.data import Dataset, Split
from compresslab.core.validate import check_choice, check_float, check_int, check_seed

__all__ = [
    "split_logits",
    "LossFn",
    "seed_everything",
    "get_device",
    "quiet_default",
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "EvalResult",
    "TrainState",
    "Callback",
    "TrainHistory",
    "evaluate",
    "correct",
    "accuracy_fn",
    "make_optimizer",
    "flat_targets",
    "train",
]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs so that the same seed gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(choice: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu' / 'cuda' as asked (cuda must exist)."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device("cuda")
    check_choice("", "device", choice, ("auto", "cpu", "cuda"))
    raise AssertionError("unreachable")


def quiet_default() -> bool:
    """Progress bars are off when $COMPRESSLAB_QUIET is set (tests, CI)."""
    return os.environ.get("COMPRESSLAB_QUIET", "") not in ("", "0", "false")


OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")
MAX_EPOCHS = 10_000
MAX_BATCH = 2**24
MAX_LR = 1e6  # finite and bounded: lr=inf would only train to NaN


@dataclass(frozen=True)
class TrainConfig:
    """How to train. lr_schedule: constant, cosine (to 0 over the run) or step (x0.1 at 50%, 75%)."""

    epochs: float = 10
    batch_size: int = 128
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    seed: int = 0
    eval_every: int = 0  # evaluate on val (and test) every n steps; 0 = once per epoch
    input_jitter: int = 0  # random shift of up to n pixels (Hinton et al.'s jitter)

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        check_float(owner, "epochs", self.epochs, 0, MAX_EPOCHS, lo_open=True)
        check_int(owner, "batch_size", self.batch_size, 1, MAX_BATCH)
        check_float(owner, "lr", self.lr, 0, MAX_LR, lo_open=True)
        check_choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        check_float(owner, "momentum", self.momentum, 0, 1, hi_open=True)
        check_float(owner, "weight_decay", self.weight_decay, 0, MAX_LR)
        check_choice(owner, "lr_schedule", self.lr_schedule, SCHEDULES)
        check_seed(owner, "seed", self.seed)
        check_int(owner, "eval_every", self.eval_every, 0, None)
        check_int(owner, "input_jitter", self.input_jitter, 0, 4)

    def total_steps(self, n_train: int) -> int:
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


@dataclass
class EvalResult:
    """Mean loss (nats), accuracy in percent (100 * correct / n), error count and n."""

    loss: float
    accuracy: float
    errors: int
    n: int

    @property
    def loss_bits(self) -> float:
        """The mean loss in bits: loss / ln 2 (bits per byte for a byte-level language model)."""
        return self.loss / math.log(2)


@dataclass
class TrainState:
    """What callbacks see (and may change: set `stop = True` to end training)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    total_steps: int
    step: int = 0
    epoch: int = 0
    loss: float = float("nan")
    stop: bool = False


class Callback:
    """Hooks into `train`; override what you need. Called with the live TrainState."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...


@dataclass
class TrainHistory:
    """Per evaluation point: step, epoch, mean train loss since last point, val/test loss and accuracy (percent)."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def best_val_step(self) -> int:
        """The step of minimum validation loss (the early-stopping iteration)."""
        if not self.val_loss:
            raise ValueError("no validation losses recorded: load the data with val_size > 0")
        return self.steps[int(np.argmin(self.val_loss))]

    def to_dict(self) -> dict:
        return asdict(self)


def _jitter(x: torch.Tensor, pixels: int, gen: torch.Generator) -> torch.Tensor:
    """Shift the whole batch by (dy, dx) in [-pixels, pixels], padding with the background value."""
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=gen))
    if dy == 0 and dx == 0:
        return x
    background = x.amin()
    out = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        out[:, :, :dy] = background
    elif dy < 0:
        out[:, :, dy:] = background
    if dx > 0:
        out[:, :, :, :dx] = background
    elif dx < 0:
        out[:, :, :, dx:] = background
    return out


def flat_targets(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits and (N,) targets: a sequence model's (B, T, C) / (B, T) flattened over every
    position, so one cross-entropy covers classifiers and next-token prediction alike.

    >>> [tuple(t.shape) for t in flat_targets(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))]
    [(6, 5), (6,)]
    """
    if logits.dim() > 2:
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    return logits, targets


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000, device: torch.device | str | None = None) -> EvalResult:
    """Mean cross-entropy, accuracy (percent) and error count of `model` on `split` (ValueError if it is empty).

    For a sequence model every position counts as one prediction (n = number of targets)."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split (0 examples)")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    convnet = models.is_convnet(model)
    total_loss, correct, n = 0.0, 0, 0
    for x, y in split.batches(batch_size, device=device):
        logits, y = flat_targets(model(models.to_model_layout(x, convnet)), y)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += y.numel()
    model.train(was_training)
    return EvalResult(total_loss / n, 100.0 * correct / n, n - correct, n)


@torch.no_grad()
def correct(model: nn.Module, split: Split, batch_size: int = 1000) -> torch.Tensor:
    """Per-image correctness (bool, one per example of `split`, in order): argmax(model(x)) == y.
    Two models' vectors on the same split feed `core.stats.paired_difference`."""
    if len(split) == 0:
        raise ValueError("cannot score an empty split (0 examples)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    convnet = models.is_convnet(model)
    out = [(model(models.to_model_layout(x, convnet)).argmax(1) == y).cpu()
           for x, y in split.batches(batch_size, device=device)]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def split_logits(model: nn.Module, split, batch_size: int = 1000) -> torch.Tensor:
    """`model`'s logits (FP32, on the CPU) for every example of `split`, in order, in eval mode (the
    model's mode is restored): a distillation teacher's table, or the FP32 reference that
    `gpt.kl_bits_per_byte` compares other models against."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    convnet = models.is_convnet(model)
    out = [model(models.to_model_layout(x, convnet)).float().cpu() for x, _ in split.batches(batch_size, device=device)]
    model.train(was_training)
    return torch.cat(out)


def accuracy_fn(data: Dataset | None, finetune: TrainConfig | None = None) -> Callable[[nn.Module], float | None]:
    """model -> its accuracy on data.test (None when data is None), for the model-level verbs.

    Raises ValueError when `finetune` is set but there is no data to fine-tune on."""
    if finetune is not None and data is None:
        raise ValueError("config.finetune is set but data=None: pass the Dataset to fine-tune on")
    if data is None:
        return lambda model: None
    return lambda model: evaluate(model, data.test).accuracy

def _lr_at(config: TrainConfig, step: int, total: int) -> float:
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * step / total))
    if config.lr_schedule == "step":
        return config.lr * (0.1 ** (int(step >= 0.5 * total) + int(step >= 0.75 * total)))
    return config.lr


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    evaluate_test: bool = True,
    start_step: int = 0,
) -> TrainHistory:
    """Train `model` in place for `config.epochs` (fractions allowed) with minibatch SGD/Adam.

    loss = loss_fn(logits, targets, inputs), cross-entropy by default (over every position of a
    sequence model's (B, T, C) logits, see `flat_targets`). The model's device is used.
    Evaluates on data.val (if any) and data.test at each epoch end or every `eval_every` steps.
    start_step > 0 resumes the run at that step (rewinding to step k): only steps start_step..total-1
    are trained, with the learning rate and batch order the full run has there (a fresh optimizer
    state); steps in the history and in callbacks count from the run's start.
    """
    from tqdm.auto import tqdm

    if len(data.train) == 0:
        raise ValueError("data.train is empty (0 examples): nothing to train on")
    progress = (not quiet_default()) if progress is None else progress
    loss_fn = loss_fn or (lambda logits, y, x: F.cross_entropy(*flat_targets(logits, y)))
    device = next(model.parameters()).device
    convnet = models.is_convnet(model)
    models.prepare_model(model)
    optimizer = make_optimizer(model, config)
    total = config.total_steps(len(data.train))
    if not 0 <= start_step < total:
        raise ValueError(f"start_step={start_step} must be in [0, {total - 1}] (the run has {total} steps)")
    per_epoch = data.train.num_batches(config.batch_size)
    state = TrainState(model, optimizer, config, total, step=start_step, epoch=start_step // per_epoch)
    skip = start_step % per_epoch  # batches of the current epoch already seen before start_step
    history = TrainHistory()
    jitter_gen = torch.Generator().manual_seed((config.seed + 12345) % 2**64)
    torch.manual_seed(config.seed)  # dropout and other in-model randomness
    for cb in callbacks:
        cb.on_train_start(state)
    start = time.perf_counter()
    running, count = 0.0, 0

    def record() -> None:
        nonlocal running, count
        history.steps.append(state.step)
        history.train_loss.append(running / max(count, 1))
        running, count = 0.0, 0
        if data.val is not None:
            ev = evaluate(model, data.val, device=device)
            history.val_loss.append(ev.loss)
            history.val_accuracy.append(ev.accuracy)
        if evaluate_test:
            history.test_accuracy.append(evaluate(model, data.test, device=device).accuracy)

    bar = tqdm(total=total - start_step, desc="train", leave=False, disable=not progress)
    model.train()
    while state.step < total and not state.stop:
        for x, y in data.train.batches(config.batch_size, shuffle=True, seed=(config.seed * 1000 + state.epoch) % 2**64,
                                          device=device):
            if skip:
                skip -= 1
                continue
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, state.step, total)
            if config.input_jitter:
                x = _jitter(x, config.input_jitter, jitter_gen)
            x = models.to_model_layout(x, convnet)
            logits = model(x)
            loss = loss_fn(logits, y, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            state.loss = loss.item()
            running, count = running + state.loss, count + 1
            for cb in callbacks:
                cb.on_batch_end(state)
            bar.update(1)
            if config.eval_every and state.step % config.eval_every == 0:
                record()
                model.train()
            if state.step >= total or state.stop:
                break
        state.epoch += 1
        if not config.eval_every:
            record()
            model.train()
        for cb in callbacks:
            cb.on_epoch_end(state)
    bar.close()
    if config.eval_every and (not history.steps or history.steps[-1] != state.step):
        record()
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
