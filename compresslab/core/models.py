"""The models of the workbook, each an `nn.Sequential` with named layers.

A flat Sequential makes "the next layer" well defined, which structured pruning and low-rank
factorization need, and gives readable layer names (fc1, conv2, ...) in every table.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from compresslab.core.gpt import gpt
from compresslab.core.validate import check_float, check_int, show

__all__ = [
    "mlp",
    "lenet300",
    "lenet5",
    "small_cnn",
    "dsnet",
    "MODELS",
    "create",
    "prunable_layers",
    "is_convnet",
    "to_model_layout",
    "prepare_input",
    "prepare_model",
]


def mlp(hidden: Sequence[int], dropout: float = 0.0, in_features: int = 784, num_classes: int = 10) -> nn.Sequential:
    """784 -> hidden[0] -> ... -> 10 with ReLU, optional dropout after each hidden layer.

    hidden: a non-empty sequence of integer widths in [1, 2^20]; dropout in [0, 1)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
        raise ValueError(f"mlp.hidden={show(hidden)} must be a non-empty list of positive integer widths")
    for i, h in enumerate(hidden):
        check_int("mlp", f"hidden[{i}]", h, 1, 1 << 20)
    check_float("mlp", "dropout", dropout, 0.0, 1.0, hi_open=True)
    check_int("mlp", "in_features", in_features, 1, 1 << 24)
    check_int("mlp", "num_classes", num_classes, 1, 1 << 20)
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    widths = [in_features, *hidden]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        layers.append((f"fc{i}", nn.Linear(a, b)))
        layers.append((f"relu{i}", nn.ReLU()))
        if dropout > 0:
            layers.append((f"drop{i}", nn.Dropout(dropout)))
    layers.append((f"fc{len(hidden) + 1}", nn.Linear(widths[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))


def lenet300() -> nn.Sequential:
    """LeNet-300-100: 784-300-100-10, 266,610 parameters."""
    return mlp((300, 100))


def lenet5() -> nn.Sequential:
    """LeNet-5, Caffe variant: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431,080 params).

    ReLU follows each conv (Caffe's example has none there; with them it trains faster).
    """
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 20, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(20, 50, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(50 * 4 * 4, 500)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(500, 10)),
    ]))


def small_cnn() -> nn.Sequential:
    """A small VGG-style CNN: conv 32, conv 32, pool, conv 64, conv 64, pool, fc 256, fc 10."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(32, 64, 3, padding=1)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(64, 64, 3, padding=1)), ("relu4", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64 * 7 * 7, 256)), ("relu5", nn.ReLU()),
        ("fc2", nn.Linear(256, 10)),
    ]))


def dsnet() -> nn.Sequential:
    """A MobileNet-style depthwise-separable net with BatchNorm (13,898 parameters, 13,184 of them in
    convolution and linear weights): conv 16@3x3, then three blocks of a depthwise 3x3 (stride 2, 2,
    1) and a pointwise 1x1 (32, 64, 128 channels), each followed by BatchNorm and ReLU; global average
    pooling; fc 10. ReLU, not ReLU6, so that per-channel rescaling passes through it unchanged.

    >>> sum(p.numel() for p in dsnet().parameters())
    13898
    """
    layers: list[tuple[str, nn.Module]] = [("conv1", nn.Conv2d(1, 16, 3, padding=1, bias=False)),
                                           ("bn1", nn.BatchNorm2d(16)), ("relu1", nn.ReLU())]
    channels, k = 16, 2
    for block, (out, stride) in enumerate(((32, 2), (64, 2), (128, 1)), start=1):
        layers += [(f"dw{block}", nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)),
                   (f"bn{k}", nn.BatchNorm2d(channels)), (f"relu{k}", nn.ReLU()),
                   (f"pw{block}", nn.Conv2d(channels, out, 1, bias=False)),
                   (f"bn{k + 1}", nn.BatchNorm2d(out)), (f"relu{k + 1}", nn.ReLU())]
        channels, k = out, k + 2
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(channels, 10))]
    return nn.Sequential(OrderedDict(layers))


MODELS = {
    "lenet300": lambda: lenet300(),
    "lenet5": lambda: lenet5(),
    "small_cnn": lambda: small_cnn(),
    "dsnet": lambda: dsnet(),
    "mlp1200": lambda dropout=0.0: mlp((1200, 1200), dropout=dropout),
    "mlp800": lambda dropout=0.0: mlp((800, 800), dropout=dropout),
    "mlp": lambda hidden=(100,), dropout=0.0: mlp(hidden, dropout=dropout),
    "gpt": gpt,  # the byte-level transformer of notebook 09 (core.gpt)
}


def create(name: str, **kwargs) -> nn.Sequential:
    """Build a fresh model by name (weights from the global torch RNG: seed first)."""
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model={name!r} is not known; choose one of {sorted(MODELS)}")
    params = inspect.signature(MODELS[name]).parameters
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:  # a wrong value of a known argument is the builder's own error, naming value and range
        raise ValueError(f"model={name!r} does not take arguments {unknown}; it takes {list(params) or 'none'}")
    return MODELS[name](**kwargs)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` where the submodule with dotted `name` ('fc1', 'blocks.0.mlp.fc') was."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear and Conv2d layers of `model` by qualified name, in forward order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def is_convnet(model: nn.Module) -> bool:
    """True if `model` holds a Conv2d (it then computes fastest on channels_last batches).

    >>> is_convnet(lenet5()), is_convnet(lenet300())
    (True, False)
    """
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_model_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` in channels_last memory format if asked and `x` is a 4-D (N, C, H, W) batch, else `x`.

    Only the strides change, never the values: channels_last stores NHWC, the layout oneDNN's
    convolution kernels read without a reorder.

    >>> x = torch.randn(2, 3, 4, 4)
    >>> y = to_model_layout(x, channels_last=True)
    >>> y.is_contiguous(memory_format=torch.channels_last), torch.equal(x, y)
    (True, True)
    >>> to_model_layout(torch.randn(2, 784), channels_last=True).is_contiguous()
    True
    """
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def prepare_input(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """`x` in the layout `model` computes with: channels_last for a convnet, unchanged otherwise."""
    return to_model_layout(x, is_convnet(model))


def prepare_model(model: nn.Module) -> nn.Module:
    """A convnet's 4-D weights moved to channels_last, in place (so they match `prepare_input`'s
    batches); any other model unchanged. Returns `model`.

    >>> prepare_model(lenet5()).conv1.weight.is_contiguous(memory_format=torch.channels_last)
    True
    """
    if is_convnet(model):
        model.to(memory_format=torch.channels_last)
    return model
