"""Building blocks shared by the generator families (StyleGAN2-style layers).

- Equalised learning rate (Karras et al. 2018): weights are stored as N(0, 1) / lr_mul and
  scaled at run time by lr_mul / sqrt(fan_in), so Adam's per-parameter step sizes are the same
  for every layer whatever its fan-in; ``lr_mul`` < 1 slows a layer down (the mapping network).
- FIR resampling with the binomial filter [1, 3, 3, 1] (the ``upfirdn2d`` operation of the
  NVlabs code: zero-stuff by ``up``, pad, convolve, keep every ``down``-th sample). It is
  written as a separable linear map ``y = A x A^T`` with a small banded matrix ``A`` built once
  per layer: exact, device-agnostic, differentiable twice (for R1) and faster on a CPU than a
  depthwise convolution. This upsampler leaves the spectral fingerprint detectors look for.
  Fully convolutional nets, whose maps have no fixed size, blur with :class:`FIRBlur2d`.
- Modulated convolution with demodulation (StyleGAN2), computed by scaling the activations by
  the styles and demodulating with a matmul instead of building per-sample weights for a
  grouped convolution: the same result, 2-4x faster on a CPU.
- Noise injection with a zero-initialised strength and minibatch standard deviation.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the activations' second moment through leaky ReLU


def fir_matrix(size: int, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
               taps: Sequence[float] = FIR_TAPS) -> torch.Tensor:
    """The (size_out, size) matrix of 1-D ``upfirdn``: zero-stuff by ``up``, pad by ``pad``,
    convolve with ``taps`` (normalised to sum ``up``, so a constant keeps its value), keep every
    ``down``-th sample. size_out = (size * up + pad[0] + pad[1] - len(taps)) // down + 1."""
    kernel = torch.tensor(taps, dtype=torch.float64)
    kernel = (kernel / kernel.sum() * up).flip(0)  # flip: conv1d correlates, upfirdn convolves
    impulses = torch.zeros(size, 1, size * up, dtype=torch.float64)
    impulses[:, 0, ::up] = torch.eye(size, dtype=torch.float64)
    responses = F.conv1d(F.pad(impulses, pad), kernel.view(1, 1, -1))[:, 0, ::down]
    if responses.shape[1] < 1:
        raise ValueError(f"FIR resampling of size {size} with up={up}, down={down}, pad={pad} "
                         "leaves nothing")
    return responses.T.contiguous().float()


class FIRResample2d(nn.Module):
    """Separable FIR resampling of (N, C, size, size) maps: ``A @ x @ A.T``.

    Build it with :meth:`upsample` (2x, the StyleGAN2 upsampler), :meth:`downsample` (2x) or
    :meth:`blur` (same filter, no rate change, custom padding, ``gain`` per axis; used around
    strided and transposed convolutions).
    """

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("matrix", matrix, persistent=False)  # rebuilt from the config

    @classmethod
    def upsample(cls, size: int) -> "FIRResample2d":
        return cls(fir_matrix(size, up=2, pad=(2, 1)))

    @classmethod
    def downsample(cls, size: int) -> "FIRResample2d":
        return cls(fir_matrix(size, down=2, pad=(1, 1)))

    @classmethod
    def blur(cls, size: int, pad: int, gain: float = 1.0) -> "FIRResample2d":
        return cls(fir_matrix(size, pad=(pad, pad)) * gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matrix = self.matrix.to(x.dtype)
        return matrix @ x @ matrix.T

    def extra_repr(self) -> str:
        return f"size {self.matrix.shape[1]} -> {self.matrix.shape[0]}"


class FIRBlur2d(nn.Module):
    """The [1, 3, 3, 1] binomial blur of (N, C, H, W) maps of any size: a depthwise convolution
    after zero padding ``pad`` = (before, after) on both axes, with ``gain`` per axis (2 after a
    2x upsampling keeps a constant's value). The size-agnostic form of
    :meth:`FIRResample2d.blur`, for fully convolutional nets."""

    def __init__(self, channels: int, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        taps = torch.tensor(FIR_TAPS)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2 * gain ** 2
        self.register_buffer("kernel", kernel.expand(channels, 1, -1, -1).clone(),
                             persistent=False)  # rebuilt from the config
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (*self.pad, *self.pad))
        return F.conv2d(x, self.kernel.to(x.dtype), groups=x.shape[1])

    def extra_repr(self) -> str:
        return f"channels={self.kernel.shape[0]}, pad={self.pad}"


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Add a per-channel bias (dim 1), then leaky ReLU (0.2) scaled by sqrt(2)."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate, optional bias and leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.weight_gain), bias)
        return F.linear(x, self.weight * self.weight_gain, bias)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]} -> {self.weight.shape[0]}, lr_mul={self.lr_mul}, "
                f"activate={self.activate}")


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate, 'same' padding, optional bias and leaky ReLU.

    With ``down_from`` (the input size) it halves the size with the FIR filter: blur, then a
    stride-2 'valid' convolution (a 1x1 conv commutes with the filter, so it runs after a plain
    FIR downsampling instead).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 bias: bool = True, activate: bool = True, down_from: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.activate = activate
        self.padding, self.stride = kernel_size // 2, 1
        self.down: FIRResample2d | None = None
        if down_from is not None and kernel_size == 1:
            self.down = FIRResample2d.downsample(down_from)
        elif down_from is not None:  # blur pad such that the strided conv gives size / 2
            self.down = FIRResample2d.blur(down_from, pad=(kernel_size + 1) // 2)
            self.padding, self.stride = 0, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        x = F.conv2d(x, self.weight * self.weight_gain, stride=self.stride, padding=self.padding)
        if self.activate:
            return bias_leaky_relu(x, self.bias)
        return x if self.bias is None else x + self.bias.view(1, -1, 1, 1)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor,
                              eps: float = 1e-8) -> torch.Tensor:
    """(N, C_out): 1 / |weight modulated by each sample's styles|, as one matmul.

    sum_{i,k} (w[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 sum_k w[o,i,k]^2 = (s^2 @ (sum_k w^2)^T)[n,o].
    """
    return (styles.square() @ weight.square().sum((2, 3)).T + eps).rsqrt()


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: x (N, C_in, H, W), w (N, w_dim) -> (N, C_out, H', W').

    The styles s = affine(w) (bias initialised to 1) scale the input channels; with
    ``demodulate`` each output channel is divided by the norm of its modulated weights, which
    restores unit output variance for unit input. With ``up_from`` (the input size) the layer
    upsamples 2x: a stride-2 transposed convolution, then the FIR blur (gain 4), as in NVlabs.
    Without demodulation (ToRGB) the styles carry the equalised-lr gain 1/sqrt(fan_in).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True, up_from: int | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size,
                                               kernel_size))
        self.demodulate = demodulate
        self.style_gain = 1.0 if demodulate else 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.up: FIRResample2d | None = None
        if up_from is not None:
            # transposed conv: size 2s + k - 2; the 4-tap blur brings it back to 2s
            self.up = FIRResample2d.blur(2 * up_from + kernel_size - 2,
                                         pad=(5 - kernel_size) // 2, gain=2.0)

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return self.affine(w) * self.style_gain

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.styles(w)
        x = x * styles[:, :, None, None]
        if self.up is None:
            x = F.conv2d(x, self.weight, padding=self.padding)
        else:
            x = self.up(F.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2))
        if self.demodulate:
            x = x * demodulation_coefficients(self.weight, styles)[:, :, None, None]
        return x

    def extra_repr(self) -> str:
        out_channels, in_channels, k, _ = self.weight.shape
        return (f"{in_channels} -> {out_channels}, kernel {k}, demodulate={self.demodulate}, "
                f"up={self.up is not None}")


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise (N, 1, H, W) times a learned strength (initialised to 0).

    In training mode the noise is fresh on every call; in eval mode a fixed buffer drawn at
    construction is used, so a sample depends on its latent alone.
    """

    def __init__(self, size: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("fixed_noise", torch.randn(1, 1, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device,
                                dtype=x.dtype)
        else:
            noise = self.fixed_noise
        return x + noise * self.strength


class MinibatchStd(nn.Module):
    """Appends the mean standard deviation of features across groups of samples as extra
    channels (Karras et al. 2018), so D can see a lack of variety in a batch.

    Group g holds samples g, g + N/G, g + 2N/G, ...; G is the largest divisor of N not above
    ``group_size``.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        f = self.num_channels
        y = x.reshape(group, -1, f, c // f, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (N/G, F, C/F, H, W)
        y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of (N, D) to unit mean square (the mapping network's input)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()
