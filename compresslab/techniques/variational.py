"""Sparse variational dropout (Molchanov, Ashukha and Vetrov 2017): the primitives and the layers.

Each weight is a Gaussian w_ij ~ N(theta_ij, sigma_ij^2) under the additive-noise
reparameterisation: the layer learns theta and log sigma^2 directly, and its dropout rate is
alpha_ij = sigma_ij^2 / theta_ij^2, log alpha = log sigma^2 - log theta^2. The prior is the
log-uniform p(|w|) ~ 1/|w|; its KL divergence to the posterior has no closed form, and the paper
fits

    -KL ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(exp(-log alpha)) - k1,
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695,

which pushes alpha up: a weight whose log alpha exceeds 3 (alpha > e^3 ~ 20, noise 4.5 times its
mean) carries no signal and is dropped. The local reparameterisation trick samples the layer's
output instead of its weights: for a Linear layer the pre-activations are Gaussian with

    mean = x theta^T + b,   variance = x^2 (sigma^2)^T,

(for a Conv2d the same with convolutions), so one sample per example and output unit costs two
matrix products. In eval mode a layer computes with theta masked by log alpha < threshold.
The verb that trains a model with these layers is `sparsevd.apply_sparse_vd`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from compresslab.core.models import prunable_layers, replace_module
from compresslab.core.validate import check_float, check_int, check_overflow, check_tensor

__all__ = [
    "K1", "K2", "K3", "LOG_ALPHA_CLAMP", "log_alpha", "neg_kl", "kl_divergence", "vd_mask", "lrt_moments",
    "lrt_conv_moments", "VDLinear", "VDConv2d", "variational_layers", "to_variational", "total_kl",
    "layer_log_alphas", "to_plain", "posterior_step", "snap_to_grid",
]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_CLAMP = 10.0  # log alpha is clipped to [-10, 10] inside the KL (outside it the KL is flat)


def log_alpha(theta: torch.Tensor, log_sigma2: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """log alpha = log sigma^2 - log(theta^2 + eps), elementwise (eps keeps theta = 0 finite).

    >>> round(float(log_alpha(torch.tensor([0.5]), torch.log(torch.tensor([0.25])))), 4)  # sigma = theta
    0.0
    """
    check_tensor("theta", theta, kind="float")
    check_tensor("log_sigma2", log_sigma2, kind="float", shape=tuple(theta.shape))
    out = log_sigma2 - torch.log(theta * theta + eps)
    check_overflow("log_alpha", out)
    return out


def neg_kl(log_alpha_: torch.Tensor) -> torch.Tensor:
    """-KL(q(w | theta, alpha) || p(w)) per weight, Molchanov et al.'s fit (up to a constant fixed so
    that -KL -> 0 as alpha -> infinity), with log alpha clipped to [-LOG_ALPHA_CLAMP, LOG_ALPHA_CLAMP]:

        k1 sigmoid(k2 + k3 log alpha) - 0.5 log1p(exp(-log alpha)) - k1.

    >>> [round(float(v), 4) for v in neg_kl(torch.tensor([-8.0, 0.0, 8.0]))]
    [-4.6359, -0.4312, -0.0002]
    """
    check_tensor("log_alpha", log_alpha_, kind="float", allow_empty=True)
    la = log_alpha_.clamp(-LOG_ALPHA_CLAMP, LOG_ALPHA_CLAMP)
    return K1 * torch.sigmoid(K2 + K3 * la) - 0.5 * F.softplus(-la) - K1


def kl_divergence(log_alpha_: torch.Tensor) -> torch.Tensor:
    """The approximate KL summed over every weight: -neg_kl(log alpha).sum() (a scalar, >= 0).

    >>> round(float(kl_divergence(torch.tensor([0.0, 0.0]))), 4)
    0.8625
    """
    return -neg_kl(log_alpha_).sum()


def vd_mask(log_alpha_: torch.Tensor, threshold: float = 3.0) -> torch.Tensor:
    """The weights kept: log alpha < threshold (bool); log alpha > threshold is dropped.

    >>> vd_mask(torch.tensor([-1.0, 2.9, 3.1, 8.0])).tolist()
    [True, True, False, False]
    """
    check_tensor("log_alpha", log_alpha_, kind="float", allow_empty=True)
    check_float("vd_mask", "threshold", threshold, -LOG_ALPHA_CLAMP - 10, LOG_ALPHA_CLAMP + 10)
    return log_alpha_ < threshold


def lrt_moments(x: torch.Tensor, theta: torch.Tensor, log_sigma2: torch.Tensor,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of a Linear layer's output under w ~ N(theta, exp(log_sigma2)):

        mean = x theta^T + b,  variance = x^2 exp(log_sigma2)^T.

    >>> m, v = lrt_moments(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]]), torch.zeros(1, 2))
    >>> m.tolist(), v.tolist()
    ([[-1.5]], [[5.0]])
    """
    check_tensor("x", x, kind="float")
    check_tensor("theta", theta, kind="float", dim=2)
    check_tensor("log_sigma2", log_sigma2, kind="float", shape=tuple(theta.shape))
    if x.shape[-1] != theta.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features, theta expects {theta.shape[1]}")
    if bias is not None:
        check_tensor("bias", bias, kind="float", shape=(theta.shape[0],))
    mean, var = F.linear(x, theta, bias), F.linear(x * x, log_sigma2.exp())
    check_overflow("lrt_moments", mean)
    check_overflow("lrt_moments variance", var)
    return mean, var


def lrt_conv_moments(x: torch.Tensor, theta: torch.Tensor, log_sigma2: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=1, padding=0, dilation=1, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of a Conv2d layer's output under w ~ N(theta, exp(log_sigma2)): each output
    is a sum of input * weight products, so mean = conv(x, theta) + b, variance = conv(x^2, sigma^2).

    >>> m, v = lrt_conv_moments(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    >>> m.item(), v.item()
    (4.0, 4.0)
    """
    check_tensor("x", x, kind="float", dim=4)
    check_tensor("theta", theta, kind="float", dim=4)
    check_tensor("log_sigma2", log_sigma2, kind="float", shape=tuple(theta.shape))
    for name, value, lo in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        pair = value if isinstance(value, (tuple, list)) and len(value) == 2 else (value,)
        for v in pair:
            check_int("lrt_conv_moments", name, v, lo, 1 << 16)
    check_int("lrt_conv_moments", "groups", groups, 1, 1 << 16)
    if x.shape[1] != theta.shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels, theta expects {theta.shape[1] * groups}")
    if bias is not None:
        check_tensor("bias", bias, kind="float", shape=(theta.shape[0],))
    mean = F.conv2d(x, theta, bias, stride, padding, dilation, groups)
    var = F.conv2d(x * x, log_sigma2.exp(), None, stride, padding, dilation, groups)
    check_overflow("lrt_conv_moments", mean)
    check_overflow("lrt_conv_moments variance", var)
    return mean, var


class _Variational:
    """What VDLinear and VDConv2d share: log sigma^2, log alpha, the mask, the sampled output."""

    weight: nn.Parameter
    log_sigma2: nn.Parameter
    threshold: float

    def _init_variational(self, init_log_sigma2: float, threshold: float) -> None:
        self.log_sigma2 = nn.Parameter(torch.full_like(self.weight, float(init_log_sigma2)))
        self.threshold = float(threshold)

    def log_alpha(self) -> torch.Tensor:
        return log_alpha(self.weight, self.log_sigma2)

    def mask(self, threshold: float | None = None) -> torch.Tensor:
        return vd_mask(self.log_alpha().detach(), self.threshold if threshold is None else threshold)

    def kl(self) -> torch.Tensor:
        return kl_divergence(self.log_alpha())

    def _sample(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return mean + torch.sqrt(var + 1e-8) * torch.randn_like(mean)


class VDLinear(nn.Linear, _Variational):
    """A Linear layer with a Gaussian weight per entry: weight = theta, log_sigma2 beside it.
    Training: a sample of the output by the local reparameterisation trick; eval: x (theta * mask)^T + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_log_sigma2: float = -10.0,
                 threshold: float = 3.0) -> None:
        super().__init__(in_features, out_features, bias)
        self._init_variational(init_log_sigma2, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = F.linear(x, self.weight, self.bias), F.linear(x * x, self.log_sigma2.exp())
            return self._sample(mean, var)
        return F.linear(x, self.weight * self.mask(), self.bias)


class VDConv2d(nn.Conv2d, _Variational):
    """A Conv2d layer with a Gaussian weight per entry (see VDLinear)."""

    def __init__(self, *args, init_log_sigma2: float = -10.0, threshold: float = 3.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_variational(init_log_sigma2, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = lambda inp, w, b: F.conv2d(inp, w, b, self.stride, self.padding, self.dilation, self.groups)  # noqa: E731
        if self.training:
            return self._sample(conv(x, self.weight, self.bias), conv(x * x, self.log_sigma2.exp(), None))
        return conv(x, self.weight * self.mask(), self.bias)


def variational_layers(model: nn.Module) -> dict[str, VDLinear | VDConv2d]:
    """The variational layers of `model` by qualified name, in forward order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (VDLinear, VDConv2d))}


def to_variational(model: nn.Module, layers: tuple[str, ...] | None = None, init_log_sigma2: float = -10.0,
                   threshold: float = 3.0) -> nn.Module:
    """Replace (in place) each Linear / Conv2d of `model` (those named in `layers`, default all) by its
    variational twin, with theta = the trained weight and log sigma^2 = init_log_sigma2 everywhere."""
    for name, layer in prunable_layers(model).items():
        if layers is not None and name not in layers:
            continue
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise ValueError(f"layer {name!r}: padding_mode={layer.padding_mode!r}; variational layers pad with zeros")
            twin = VDConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                            bias=layer.bias is not None, padding_mode=layer.padding_mode,
                            init_log_sigma2=init_log_sigma2, threshold=threshold)
        else:
            twin = VDLinear(layer.in_features, layer.out_features, layer.bias is not None,
                            init_log_sigma2=init_log_sigma2, threshold=threshold)
        twin = twin.to(layer.weight.device)
        with torch.no_grad():
            twin.weight.copy_(layer.weight)
            if layer.bias is not None:
                twin.bias.copy_(layer.bias)
            twin.log_sigma2.fill_(float(init_log_sigma2))
        replace_module(model, name, twin)
    return model


def total_kl(model: nn.Module) -> torch.Tensor:
    """The approximate KL of every variational layer of `model`, summed (a scalar with gradients)."""
    kls = [layer.kl() for layer in variational_layers(model).values()]
    if not kls:
        raise ValueError("the model has no variational layers: convert it with to_variational first")
    return torch.stack(kls).sum()


def layer_log_alphas(model: nn.Module) -> dict[str, torch.Tensor]:
    """log alpha of every variational layer (detached, on the CPU)."""
    return {n: m.log_alpha().detach().cpu() for n, m in variational_layers(model).items()}


def to_plain(model: nn.Module, threshold: float | None = None,
             values: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Replace (in place) every variational layer by a plain Linear / Conv2d whose weight is theta
    (or `values[name]` when given) with the weights of log alpha >= threshold set to zero (threshold
    None: each layer's own)."""
    for name, layer in variational_layers(model).items():
        keep = layer.mask(threshold)
        if isinstance(layer, VDConv2d):
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                              padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                              bias=layer.bias is not None, padding_mode=layer.padding_mode)
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
        plain = plain.to(layer.weight.device)
        source = layer.weight.detach() if values is None else values[name].to(layer.weight.device)
        with torch.no_grad():
            plain.weight.copy_(source * keep)
            if layer.bias is not None:
                plain.bias.copy_(layer.bias.detach())
        replace_module(model, name, plain)
    return model.eval()


def posterior_step(log_sigma2: torch.Tensor, keep: torch.Tensor, scale: float = 1.0) -> float:
    """The quantization step of one layer from its posterior: scale * the median posterior standard
    deviation sigma of its kept weights (Louizos et al. 2017: round no finer than the posterior is
    sure; 0.0 when nothing is kept).

    >>> round(posterior_step(torch.log(torch.tensor([0.01, 0.04, 0.09])), torch.tensor([True, True, True]), 2.0), 6)
    0.4
    """
    check_tensor("log_sigma2", log_sigma2, kind="float")
    check_tensor("keep", keep, shape=tuple(log_sigma2.shape))
    check_float("posterior_step", "scale", scale, 0, 1e6, lo_open=True)
    sigma = (0.5 * log_sigma2[keep.bool()]).exp()
    step = round(float(sigma.median()) * scale, 12) if sigma.numel() else 0.0
    check_overflow("posterior_step", torch.tensor(step))
    return step


def snap_to_grid(w: torch.Tensor, step: float, max_levels: int = 1 << 16) -> tuple[torch.Tensor, float]:
    """Round every weight to the nearest multiple of `step` (zeros stay zero; a weight that rounds to 0 is
    dropped), then to FP16 so the file can store the values in 2 bytes; the step is widened when the
    grid would need more than `max_levels` values. Returns (snapped weights, the step used).

    >>> snap_to_grid(torch.tensor([0.0, 0.26, -0.74, 0.04]), 0.25)[0].tolist()
    [0.0, 0.25, -0.75, 0.0]
    """
    check_tensor("w", w, kind="float", allow_empty=True)
    check_float("snap_to_grid", "step", step, 0, 1e6)
    if w.numel() == 0 or step == 0:
        return w.clone(), step
    check_float("snap_to_grid", "max_levels", max_levels, 3, 1 << 24)
    span = float(w.abs().max())
    if span > 60000:
        raise ValueError(f"snap_to_grid: |w| up to {span:.3g} does not fit FP16 (at most 65504)")
    step = max(step, 2 * span / (max_levels - 2)) if span > 0 else step
    return (torch.round(w / step) * step).half().float(), step
