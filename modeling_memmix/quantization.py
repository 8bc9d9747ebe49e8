"""Embedding quantization for memmix: store embeddings in few bits, or train so that they survive it.

Two uses, both on the embedding a memmix encoder hands to its decoder (any tensor ``(..., dim)``
works; the last dim is "the vector"):

* **After training**: ``quantize_embedding(x, embedding_format)`` returns a :class:`QuantizedEmbedding` that
  really holds the low-bit codes (``num_bits`` is what it occupies); ``dequantize()`` gives back
  floats for the decoder. ``round_trip(x, embedding_format)`` does both at once (with a straight-through
  gradient, so an encoder trained through a storage format still learns).
* **Quantization-aware training**: ``add_quantization_noise(x, embedding_format)`` (or the module
  :class:`QuantizationNoise` in a forward path) adds uniform noise ``U(-Δ/2, Δ/2)``, half the
  target format's quantization step Δ on each side, so the decoder learns to read embeddings
  that will later be rounded to that grid. The seed's variant, a fixed absolute step whatever the
  values (``torch.rand(...) * 2**-3``, i.e. ``U[0, s)``, not centred), is ``add_fixed_scale_noise(x, s)``
  or ``QuantizationNoise(scale=s)``.

Formats (``EMBEDDING_FORMATS``; ``"fp32"`` is the unquantized reference):

=========  ==========================  =====================================================
format     codes                       rounding / range
=========  ==========================  =====================================================
fp32       float32                     identity
bf16       bfloat16                    round to nearest even, saturating at ±finfo.max
fp16       float16                     round to nearest even, saturating at ±65504
e4m3       torch.float8_e4m3fn         round to nearest even, saturating at ±448
e5m2       torch.float8_e5m2           round to nearest even, saturating at ±57344
int8       int8 in [-127, 127]         per-vector absmax, scale = absmax / 127
int4       uint8, two codes per byte   per-vector absmax, codes in [-7, 7], scale = absmax / 7
=========  ==========================  =====================================================

Float formats are clamped to their finite range before the cast (saturation, never inf; NaN
stays NaN). Integer formats store one **bfloat16** scale per vector, shape ``(..., 1)`` (16 bits,
like GGUF's float16 scales, but with float32's range: a vector with absmax 1e-4 keeps a normal,
8-bit-precise scale where float16 would fall to a subnormal, and nothing overflows). The scale is
rounded *up* to the next bfloat16 so that ``max_code * scale >= absmax`` always holds and no code
is ever clipped: every element is then within ``scale / 2`` of its stored value, and the step is
at most 2**-7 (relative) coarser than absmax / max_code. A zero vector gets scale 0 and
dequantizes to exact zeros (no NaN). Integer formats refuse non-finite inputs (and float64
values beyond bfloat16's range).

int4 packing: code ``c`` in [-7, 7] is stored as the nibble ``c + 8``; element ``2i`` goes in the
low nibble and ``2i + 1`` in the high nibble of byte ``i``. An odd ``dim`` is padded with one zero
code, and that padding is charged in ``num_bits`` (dim 63 costs 32 bytes, like dim 64).

Only torch, the standard library and the sibling ``input_checks.py`` are imported: this file ships as Hugging
Face remote code.
Try it on a CPU::

    x = torch.randn(4, 64)
    q = quantize_embedding(x, "int4")
    q.bits_per_vector          # 32 bytes of codes + a 16-bit scale = 272.0
    (q.dequantize() - x).abs().max() <= q.scale.max() / 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .input_checks import value_checks_enabled

EMBEDDING_FORMATS = ("bf16", "fp16", "e4m3", "e5m2", "int8", "int4")
"""Formats an embedding can be quantized to (``"fp32"`` is also accepted, as the reference)."""

REFERENCE_FORMAT = "fp32"
ACCEPTED_FORMATS = (REFERENCE_FORMAT, *EMBEDDING_FORMATS)

FLOAT_FORMAT_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "e4m3": torch.float8_e4m3fn,
    "e5m2": torch.float8_e5m2,
}

INT_FORMAT_MAX_CODE = {"int8": 127, "int4": 7}

SCALE_DTYPE = torch.bfloat16
"""Dtype of the per-vector scale of the integer formats (16 bits per vector, float32 range)."""

INT4_NIBBLE_OFFSET = 8


@dataclass(frozen=True)
class FloatFormatSpec:
    """Bit layout of a float format, enough to compute its grid spacing."""

    mantissa_bits: int  # explicit fraction bits
    min_exponent: int  # exponent of the smallest normal number (2**min_exponent)
    max_exponent: int  # exponent of the largest binade

    @property
    def max_relative_error(self) -> float:
        """Round-to-nearest error bound for values in the normal range: 2**-(mantissa_bits + 1)."""
        return 2.0 ** -(self.mantissa_bits + 1)


FLOAT_FORMAT_SPECS = {
    "fp32": FloatFormatSpec(mantissa_bits=23, min_exponent=-126, max_exponent=127),
    "bf16": FloatFormatSpec(mantissa_bits=7, min_exponent=-126, max_exponent=127),
    "fp16": FloatFormatSpec(mantissa_bits=10, min_exponent=-14, max_exponent=15),
    "e4m3": FloatFormatSpec(mantissa_bits=3, min_exponent=-6, max_exponent=8),
    "e5m2": FloatFormatSpec(mantissa_bits=2, min_exponent=-14, max_exponent=15),
}


def check_format(embedding_format: str) -> str:
    """Return ``embedding_format`` if it names a known format, else raise a ValueError listing the valid ones."""
    if embedding_format not in ACCEPTED_FORMATS:
        raise ValueError(f"unknown embedding format {embedding_format!r}; valid formats are {', '.join(ACCEPTED_FORMATS)}")
    return embedding_format


def is_integer_format(embedding_format: str) -> bool:
    """True for the absmax-scaled integer formats (int8, int4)."""
    return check_format(embedding_format) in INT_FORMAT_MAX_CODE


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype to do quantization arithmetic in: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_embedding(x: torch.Tensor) -> None:
    """Raise a ValueError unless ``x`` is a floating-point tensor of shape ``(..., dim)`` with dim >= 1."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"embedding must be a floating-point torch.Tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"embedding must have shape (..., dim) with dim >= 1, got {tuple(x.shape)}")


# ----------------------------------------------------------------------------- integer formats


def round_up_to_scale_dtype(scale: torch.Tensor) -> torch.Tensor:
    """Cast ``scale`` to SCALE_DTYPE rounding up, so the stored scale is never below the exact one."""
    stored = scale.to(SCALE_DTYPE)
    too_small = stored.to(scale.dtype) < scale
    bigger = torch.nextafter(stored, torch.full_like(stored, math.inf))
    return torch.where(too_small, bigger, stored)


def absmax_scale(x: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """Per-vector scale ``absmax / max_code`` as stored (SCALE_DTYPE, rounded up), shape ``(..., 1)``."""
    max_code = INT_FORMAT_MAX_CODE[embedding_format]
    absmax = x.detach().to(compute_dtype(x.dtype)).abs().amax(dim=-1, keepdim=True)  # (..., 1)
    checks = value_checks_enabled()  # host syncs: eager only (see input_checks.py)
    if checks and not torch.isfinite(absmax).all():
        raise ValueError(f"cannot quantize an embedding with inf or NaN values to {embedding_format}")
    scale = round_up_to_scale_dtype(absmax / max_code)
    if checks and not torch.isfinite(scale).all():
        limit = torch.finfo(SCALE_DTYPE).max * max_code
        raise ValueError(
            f"embedding absmax {absmax.max().item():.4g} is too large for {embedding_format} with a "
            f"{SCALE_DTYPE} scale (limit {limit:.4g})"
        )
    return scale


def integer_codes(x: torch.Tensor, scale: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """Round ``x / scale`` to int8 codes in [-max_code, max_code]; zero-scale vectors give zero codes."""
    max_code = INT_FORMAT_MAX_CODE[embedding_format]
    work = compute_dtype(x.dtype)
    safe_scale = torch.where(scale > 0, scale.to(work), torch.ones_like(scale, dtype=work))
    codes = torch.round(x.to(work) / safe_scale).clamp_(-max_code, max_code)
    return codes.to(torch.int8)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack int8 codes in [-7, 7] of shape ``(..., dim)`` into uint8 ``(..., ceil(dim / 2))``."""
    nibbles = (codes.to(torch.int16) + INT4_NIBBLE_OFFSET).to(torch.uint8)
    if nibbles.shape[-1] % 2:
        pad = torch.full_like(nibbles[..., :1], INT4_NIBBLE_OFFSET)  # a zero code
        nibbles = torch.cat([nibbles, pad], dim=-1)
    pairs = nibbles.unflatten(-1, (-1, 2))  # (..., dim / 2, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_int4(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 codes of shape ``(..., dim)``."""
    low = packed & 0x0F
    high = packed >> 4
    nibbles = torch.stack([low, high], dim=-1).flatten(-2)[..., :dim]  # (..., dim)
    return (nibbles.to(torch.int16) - INT4_NIBBLE_OFFSET).to(torch.int8)


# ----------------------------------------------------------------------------- float formats


def saturate(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamp ``x`` to the finite range of ``dtype`` (NaN passes through)."""
    limit = torch.finfo(dtype).max
    return x.clamp(-limit, limit)


def float_codes(x: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """Cast ``x`` to the float format's dtype, saturating instead of overflowing."""
    dtype = FLOAT_FORMAT_DTYPES[embedding_format]
    if embedding_format == REFERENCE_FORMAT:
        return x.to(dtype)
    return saturate(x.to(compute_dtype(x.dtype)), dtype).to(dtype)


def float_grid_step(x: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """Spacing of the float format's grid at each value of ``x`` (same shape as ``x``).

    ``2 ** (clamp(floor(log2 |x|), min_exponent, max_exponent) - mantissa_bits)``: the distance
    between the two representable numbers around ``x`` for normal values, the constant subnormal
    spacing ``2 ** (min_exponent - mantissa_bits)`` for |x| below the smallest normal (and for 0),
    and the spacing of the top binade for values beyond it (those saturate). At an exact power of
    two this is the spacing *above* it; the one below is half as large.
    """
    spec = FLOAT_FORMAT_SPECS[embedding_format]
    work = x.detach().to(compute_dtype(x.dtype))
    _, exponent = torch.frexp(work)  # |x| = m * 2**exponent with m in [0.5, 1)
    binade = torch.where(work == 0, spec.min_exponent, exponent - 1)
    binade = binade.clamp(spec.min_exponent, spec.max_exponent)
    return torch.exp2((binade - spec.mantissa_bits).to(work.dtype))


# ----------------------------------------------------------------------------- public API


@dataclass
class QuantizedEmbedding:
    """Embedding stored in a low-bit format; holds only the codes and (for int formats) scales.

    ``codes``: the stored values, ``(..., dim)`` in the format's dtype for float formats and int8,
    ``(..., ceil(dim / 2))`` uint8 for int4. ``scale``: per-vector bfloat16 scale ``(..., 1)`` for
    int8 / int4, None for float formats. ``shape`` / ``dtype``: of the original embedding.
    """

    codes: torch.Tensor
    scale: torch.Tensor | None
    format: str
    shape: torch.Size
    dtype: torch.dtype

    @property
    def dim(self) -> int:
        """Length of one vector (the last dim of the original embedding)."""
        return self.shape[-1]

    @property
    def num_vectors(self) -> int:
        """Number of vectors stored (product of the leading dims; 1 for a single vector)."""
        return math.prod(self.shape[:-1])

    @property
    def num_bits(self) -> int:
        """Exact bits occupied by the stored codes plus scales (int4 padding included)."""
        bits = self.codes.numel() * self.codes.element_size() * 8
        if self.scale is not None:
            bits += self.scale.numel() * self.scale.element_size() * 8
        return bits

    @property
    def bits_per_vector(self) -> float:
        """``num_bits`` divided by the number of vectors (nan when there are none)."""
        return self.num_bits / self.num_vectors if self.num_vectors else math.nan

    def dequantize(self) -> torch.Tensor:
        """Float tensor of the original shape and dtype, read back from the codes."""
        if self.format in INT_FORMAT_MAX_CODE:
            codes = unpack_int4(self.codes, self.dim) if self.format == "int4" else self.codes
            work = compute_dtype(self.dtype)
            values = codes.to(work) * self.scale.to(work)  # (..., dim) * (..., 1)
            return values.to(self.dtype).reshape(self.shape)
        return self.codes.to(self.dtype).reshape(self.shape)

    def to(self, device: torch.device | str) -> QuantizedEmbedding:
        """The same quantized embedding with codes and scales on ``device``."""
        scale = None if self.scale is None else self.scale.to(device)
        return QuantizedEmbedding(self.codes.to(device), scale, self.format, self.shape, self.dtype)

    def __len__(self) -> int:
        if len(self.shape) < 2:
            raise TypeError("a single quantized vector has no leading batch dim")
        return self.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor | list[int]) -> QuantizedEmbedding:
        """Select along the leading batch dim (int, slice, index list/tensor or boolean mask)."""
        if len(self.shape) < 2:
            raise TypeError(f"cannot index a single quantized vector of shape {tuple(self.shape)}")
        if isinstance(index, tuple) or index is Ellipsis or index is None:
            raise TypeError("QuantizedEmbedding supports indexing the leading dim only (int, slice, tensor, list)")
        codes = self.codes[index]
        scale = None if self.scale is None else self.scale[index]
        shape = torch.Size((*codes.shape[:-1], self.dim))
        return QuantizedEmbedding(codes, scale, self.format, shape, self.dtype)

    def index_select(self, index: torch.Tensor) -> QuantizedEmbedding:
        """Vectors at ``index`` (1-D integer tensor) along the leading batch dim."""
        return self[index.to(torch.long)]


def quantize_embedding(x: torch.Tensor, embedding_format: str) -> QuantizedEmbedding:
    """Quantize ``x`` of shape ``(..., dim)`` to ``embedding_format`` (see the module docstring for each format)."""
    check_format(embedding_format)
    check_embedding(x)
    x = x.detach()
    if embedding_format in INT_FORMAT_MAX_CODE:
        scale = absmax_scale(x, embedding_format)
        codes = integer_codes(x, scale, embedding_format)
        if embedding_format == "int4":
            codes = pack_int4(codes)
        return QuantizedEmbedding(codes, scale, embedding_format, x.shape, x.dtype)
    return QuantizedEmbedding(float_codes(x, embedding_format), None, embedding_format, x.shape, x.dtype)


def dequantize_embedding(q: QuantizedEmbedding) -> torch.Tensor:
    """Float tensor of the original shape and dtype (same as ``q.dequantize()``)."""
    return q.dequantize()


def round_trip(x: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """``dequantize(quantize(x, embedding_format))``: what the decoder sees after storage in ``embedding_format``.

    Rounding has no useful gradient, so the backward pass is straight-through: the value is exactly the
    stored one (``stored + (x - x)`` adds an exact zero), the gradient with respect to ``x`` is the
    identity. Training with a storage format therefore still trains whatever produced ``x`` (the encoder).
    """
    stored = quantize_embedding(x, embedding_format).dequantize()
    if not (x.requires_grad and torch.is_grad_enabled()):
        return stored
    return stored + (x - x.detach()).to(stored.dtype)


def quantization_step(x: torch.Tensor, embedding_format: str) -> torch.Tensor:
    """Quantization step Δ of ``embedding_format`` on ``x``, broadcastable to ``x``, computed without gradient.

    int8 / int4: the stored per-vector scale (absmax / 127 or absmax / 7, bfloat16 rounded up),
    shape ``(..., 1)``. Float formats: the grid spacing at each element (see
    :func:`float_grid_step`), shape of ``x``; this is exact for values inside a binade and, at an
    exact power of two, takes the spacing above (twice the one below).
    """
    check_format(embedding_format)
    check_embedding(x)
    if embedding_format in INT_FORMAT_MAX_CODE:
        return absmax_scale(x.detach(), embedding_format).to(compute_dtype(x.dtype))
    return float_grid_step(x, embedding_format)


def add_quantization_noise(
    x: torch.Tensor,
    format_or_step: str | float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Quantization-aware training noise: ``x + u * Δ`` with ``u ~ U(-1/2, 1/2)`` per element.

    The noise amplitude is half the target quantization step on each side: every element moves by
    at most Δ/2 (the worst rounding error of the format), with mean 0 and standard deviation
    Δ / sqrt(12). Δ is ``quantization_step(x.detach(), embedding_format)`` for a format name, or the given step
    (a non-negative float or tensor broadcastable to ``x``). Δ carries no gradient, so the
    gradient with respect to ``x`` is the identity. Returns ``x`` itself when ``training`` is False.
    """
    if not training:
        return x
    step = noise_step(x, format_or_step)
    uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=step.dtype) - 0.5
    return x + (uniform * step).to(x.dtype)


def noise_step(x: torch.Tensor, format_or_step: str | float | torch.Tensor) -> torch.Tensor:
    """Δ for :func:`add_quantization_noise`: from a format name, or a checked non-negative step."""
    if isinstance(format_or_step, str):
        return quantization_step(x, format_or_step)
    step = torch.as_tensor(format_or_step, device=x.device).detach().to(compute_dtype(x.dtype))
    if value_checks_enabled() and (not torch.isfinite(step).all() or (step < 0).any()):
        raise ValueError(f"quantization step must be finite and >= 0, got {format_or_step}")
    return step


def add_fixed_scale_noise(
    x: torch.Tensor, scale: float, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The seed's quantization-aware noise: ``x + u * scale`` with ``u ~ U[0, 1)`` per element.

    Exactly the seed's ``encoder_embedding += torch.rand(encoder_embedding.shape) * (2**-3)`` (scale 2**-3 for
    an e4m3 target): one fixed absolute width whatever the values, and *not* centred (mean ``scale / 2``).
    The noise carries no gradient. Returns ``x`` itself when ``training`` is False (the seed adds it in
    evaluation too; memmix measures stored embeddings with ``embedding_format`` instead).
    """
    if not training:
        return x
    uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=compute_dtype(x.dtype))
    return x + (uniform * scale).to(x.dtype)


class QuantizationNoise(nn.Module):
    """Quantization-aware noise in training mode: ``U(-Δ/2, Δ/2)`` of format ``embedding_format``, or the seed's
    ``U[0, scale)`` of a fixed absolute ``scale`` (at most one of them); identity in eval or when both are None.

    Put it where the embedding leaves the encoder; ``forward(x, force=True)`` adds the noise even
    in eval mode (e.g. to measure a model under simulated quantization).
    """

    def __init__(self, embedding_format: str | None = None, scale: float | None = None):
        super().__init__()
        if embedding_format is not None and scale is not None:
            raise ValueError(f"give a noise format ({embedding_format!r}) or a fixed scale ({scale!r}), not both")
        if scale is not None and not 0 < scale < math.inf:
            raise ValueError(f"noise scale={scale!r} must be finite and > 0")
        self.embedding_format = None if embedding_format is None else check_format(embedding_format)
        self.scale = scale

    def forward(self, x: torch.Tensor, force: bool = False) -> torch.Tensor:
        training = self.training or force
        if self.scale is not None:
            return add_fixed_scale_noise(x, self.scale, training=training)
        if self.embedding_format is None:
            return x
        return add_quantization_noise(x, self.embedding_format, training=training)

    def extra_repr(self) -> str:
        if self.scale is not None:
            return f"scale={self.scale!r}"
        return f"embedding_format={self.embedding_format!r}"
