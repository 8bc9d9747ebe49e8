"""Tests for modeling_memmix/quantization.py: exact grids, error bounds, real bit counts, QAT noise.

Run: python -m pytest -q tests/test_quantization.py   (CPU, a few seconds)
"""

import json
import math
import struct

import pytest
import torch
from safetensors.torch import save as safetensors_save

from modeling_memmix.quantization import (
    EMBEDDING_FORMATS,
    FLOAT_FORMAT_DTYPES,
    FLOAT_FORMAT_SPECS,
    INT_FORMAT_MAX_CODE,
    QuantizationNoise,
    QuantizedEmbedding,
    add_quantization_noise,
    dequantize_embedding,
    pack_int4,
    quantization_step,
    quantize_embedding,
    round_trip,
    unpack_int4,
)

FLOAT_FORMATS = ("fp32", "bf16", "fp16", "e4m3", "e5m2")
INT_FORMATS = ("int8", "int4")
ALL_FORMATS = ("fp32", *EMBEDDING_FORMATS)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def on_grid_integer_embedding(fmt: str, vectors: int, dim: int, gen: torch.Generator):
    """x = k * s with integer codes k in [-max, max], one code per vector at ±max, s a bfloat16 value."""
    max_code = INT_FORMAT_MAX_CODE[fmt]
    codes = torch.randint(-max_code, max_code + 1, (vectors, dim), generator=gen)
    peak = torch.randint(0, dim, (vectors,), generator=gen)
    sign = torch.where(torch.rand(vectors, generator=gen) < 0.5, -1, 1)
    codes[torch.arange(vectors), peak] = sign * max_code
    scale = (torch.rand(vectors, 1, generator=gen) * 0.2 + 1e-3).to(torch.bfloat16).float()
    return codes, scale, codes.float() * scale


# ----------------------------------------------------------------------------- 1. exact on the grid


@pytest.mark.parametrize("fmt", INT_FORMATS)
@pytest.mark.parametrize("dim", [64, 63, 1])
def test_integer_round_trip_is_exact_on_grid(fmt, dim):
    codes, scale, x = on_grid_integer_embedding(fmt, vectors=50, dim=dim, gen=seeded(1))
    q = quantize_embedding(x, fmt)
    assert torch.equal(q.scale.float(), scale)
    stored_codes = unpack_int4(q.codes, dim) if fmt == "int4" else q.codes
    assert torch.equal(stored_codes.long(), codes)
    assert torch.equal(q.dequantize(), x)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_round_trip_is_exact_for_representable_values(fmt):
    dtype = FLOAT_FORMAT_DTYPES[fmt]
    finfo = torch.finfo(dtype)
    gen = seeded(2)
    raw = torch.randn(64, 32, generator=gen) * torch.logspace(-8, 4, 64).unsqueeze(1)
    representable = raw.to(dtype).float()  # normals, subnormals, zeros and the saturation limit
    representable[0, :2] = torch.tensor([finfo.max, -finfo.max])
    q = quantize_embedding(representable, fmt)
    assert q.codes.dtype == dtype
    assert torch.equal(q.dequantize(), representable)


def test_dequantize_keeps_original_shape_and_dtype():
    x = torch.randn(2, 3, 16, generator=seeded(3)).to(torch.bfloat16)
    for fmt in ALL_FORMATS:
        y = dequantize_embedding(quantize_embedding(x, fmt))
        assert y.shape == x.shape and y.dtype == torch.bfloat16, fmt
    assert torch.equal(round_trip(x, "bf16"), x)


# ----------------------------------------------------------------------------- 2. error bounds


@pytest.mark.parametrize("fmt", INT_FORMATS)
def test_integer_error_is_at_most_half_a_step(fmt):
    x = torch.randn(500, 65, generator=seeded(4)) * torch.logspace(-8, 3, 500).unsqueeze(1)
    q = quantize_embedding(x, fmt)
    err = (q.dequantize() - x).abs()
    scale = q.scale.float()
    absmax = x.abs().amax(-1, keepdim=True)
    assert (scale * INT_FORMAT_MAX_CODE[fmt] >= absmax).all()  # rounded up: nothing gets clipped
    assert (scale <= absmax / INT_FORMAT_MAX_CODE[fmt] * (1 + 2**-7)).all()  # but only by one bf16 ulp
    assert (err <= scale / 2 + absmax * 2**-22).all()
    assert torch.equal(quantization_step(x, fmt), scale)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_relative_error_bound_in_normal_range(fmt):
    finfo = torch.finfo(FLOAT_FORMAT_DTYPES[fmt])
    spec = FLOAT_FORMAT_SPECS[fmt]
    gen = seeded(5)
    x = torch.randn(200_000, generator=gen, dtype=torch.float64) * 10 ** (torch.rand(200_000, generator=gen) * 8 - 4)
    x = x[(x.abs() >= finfo.smallest_normal) & (x.abs() <= finfo.max)]
    err = (round_trip(x, fmt) - x).abs()
    assert (err <= x.abs() * 2.0 ** -(spec.mantissa_bits + 1)).all()
    if fmt != "fp32":  # the bound is tight: some values come close to it
        assert (err / x.abs()).max() > 0.85 * 2.0 ** -(spec.mantissa_bits + 1)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_error_within_half_the_documented_step_including_subnormals(fmt):
    finfo = torch.finfo(FLOAT_FORMAT_DTYPES[fmt])
    x = torch.randn(20_000, generator=seeded(6)) * finfo.smallest_normal * 4
    x = torch.cat([x, torch.tensor([0.0, finfo.max])])
    err = (round_trip(x, fmt) - x).abs()
    step = quantization_step(x, fmt)
    assert step.shape == x.shape
    assert (err <= step / 2).all()
    assert (step > 0).all()


@pytest.mark.parametrize("fmt", ("bf16", "fp16", "e4m3", "e5m2"))
def test_float_formats_saturate_instead_of_overflowing(fmt):
    finfo = torch.finfo(FLOAT_FORMAT_DTYPES[fmt])
    x = torch.tensor([finfo.max * 4, -finfo.max * 4, math.inf])
    assert torch.equal(round_trip(x, fmt), torch.tensor([finfo.max, -finfo.max, finfo.max]))


def test_float_step_values():
    x = torch.tensor([1.0, 1.5, -3.0, 0.0, 1e-9, 1e9])
    assert torch.equal(quantization_step(x, "e4m3"), torch.tensor([2**-3, 2**-3, 2**-2, 2**-9, 2**-9, 2**5]))
    assert torch.equal(quantization_step(x, "fp16")[:3], torch.tensor([2**-10, 2**-10, 2**-9]))


# ----------------------------------------------------------------------------- 3. real storage size


def safetensors_data_bytes(tensors: dict) -> int:
    """Bytes of tensor data in a safetensors blob (everything after the JSON header)."""
    blob = safetensors_save(tensors)
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    spans = [entry["data_offsets"] for name, entry in header.items() if name != "__metadata__"]
    assert sum(end - start for start, end in spans) == len(blob) - 8 - header_len
    return len(blob) - 8 - header_len


@pytest.mark.parametrize("fmt", ALL_FORMATS)
@pytest.mark.parametrize("dim", [64, 63])
def test_num_bits_matches_serialized_size(fmt, dim):
    q = quantize_embedding(torch.randn(10, dim, generator=seeded(7)), fmt)
    tensors = {"codes": q.codes} if q.scale is None else {"codes": q.codes, "scale": q.scale}
    assert q.num_bits == 8 * safetensors_data_bytes(tensors)
    assert q.num_bits == 8 * sum(t.untyped_storage().nbytes() for t in tensors.values())
    assert q.bits_per_vector == q.num_bits / 10


@pytest.mark.parametrize(
    "fmt, bits_per_vector",
    [("fp32", 64 * 32), ("bf16", 64 * 16), ("fp16", 64 * 16), ("e4m3", 64 * 8), ("e5m2", 64 * 8),
     ("int8", 64 * 8 + 16), ("int4", 32 * 8 + 16)],
)
def test_bits_per_vector_of_dim_64(fmt, bits_per_vector):
    q = quantize_embedding(torch.randn(3, 5, 64, generator=seeded(8)), fmt)
    assert q.num_vectors == 15
    assert q.bits_per_vector == bits_per_vector


def test_int4_odd_dim_pays_for_padding():
    q = quantize_embedding(torch.randn(4, 63, generator=seeded(9)), "int4")
    assert q.codes.shape == (4, 32) and q.codes.dtype == torch.uint8
    assert q.bits_per_vector == 32 * 8 + 16


def test_int4_packing_layout_and_all_codes():
    codes = torch.arange(-7, 8, dtype=torch.int8)  # 15 codes, odd length
    packed = pack_int4(codes)
    assert packed.shape == (8,)
    assert packed[0].item() == (-7 + 8) | ((-6 + 8) << 4)  # element 0 low nibble, element 1 high nibble
    assert packed[-1].item() == (7 + 8) | (8 << 4)  # padding is the zero code
    assert torch.equal(unpack_int4(packed, 15), codes)


# ----------------------------------------------------------------------------- indexing and device


def test_indexing_leading_dim_matches_dequantized_rows():
    x = torch.randn(6, 9, generator=seeded(10))
    for fmt in ALL_FORMATS:
        q = quantize_embedding(x, fmt)
        full = q.dequantize()
        index = torch.tensor([4, 0, 4])
        assert torch.equal(q.index_select(index).dequantize(), full[index])
        assert torch.equal(q[1:3].dequantize(), full[1:3])
        assert torch.equal(q[2].dequantize(), full[2])
        assert len(q) == 6 and q[1:3].num_vectors == 2
        assert torch.equal(q.to("cpu").dequantize(), full)
    with pytest.raises(TypeError):
        quantize_embedding(x, "int8")[:, 0]
    with pytest.raises(TypeError):
        quantize_embedding(x[0], "int8")[0]


# ----------------------------------------------------------------------------- 4. QAT noise


@pytest.mark.parametrize("fmt", ("int8", "int4", "e4m3", "bf16"))
def test_noise_amplitude_is_half_a_step(fmt):
    x = torch.randn(400, 512, generator=seeded(11))
    step = quantization_step(x, fmt)
    normalized = (add_quantization_noise(x, fmt, generator=seeded(12)) - x) / step  # U(-1/2, 1/2)
    assert normalized.abs().max() <= 0.5 + 1e-3
    assert normalized.abs().max() > 0.49
    assert abs(normalized.std().item() - 1 / math.sqrt(12)) < 0.01
    assert abs(normalized.mean().item()) < 5 / math.sqrt(12 * normalized.numel())


def test_noise_with_a_float_step():
    x = torch.zeros(200_000)
    noise = add_quantization_noise(x, 0.2, generator=seeded(13))
    assert noise.abs().max() <= 0.1
    assert abs(noise.std().item() - 0.2 / math.sqrt(12)) < 0.002
    assert torch.equal(add_quantization_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="step"):
        add_quantization_noise(x, -0.1)


def test_noise_is_reproducible_with_a_generator():
    x = torch.randn(8, 16, generator=seeded(14))
    first = add_quantization_noise(x, "int8", generator=seeded(15))
    assert torch.equal(first, add_quantization_noise(x, "int8", generator=seeded(15)))
    assert not torch.equal(first, add_quantization_noise(x, "int8", generator=seeded(16)))


def test_noise_gradient_is_identity():
    x = torch.randn(4, 32, generator=seeded(17), requires_grad=True)
    weights = torch.randn(4, 32, generator=seeded(18))
    (add_quantization_noise(x, "int4") * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # the step comes from detached x


def test_noise_off_when_not_training():
    x = torch.randn(4, 32, generator=seeded(19))
    assert add_quantization_noise(x, "int8", training=False) is x


def test_noise_module_only_in_training_mode():
    x = torch.randn(4, 32, generator=seeded(20))
    module = QuantizationNoise("int8")
    assert module.training
    noisy = module(x)
    assert not torch.equal(noisy, x)
    assert ((noisy - x).abs() <= quantization_step(x, "int8") / 2 + 1e-6).all()
    module.eval()
    assert torch.equal(module(x), x)
    assert not torch.equal(module(x, force=True), x)
    identity = QuantizationNoise(None)
    assert identity(x) is x
    assert "int8" in repr(module)


# ----------------------------------------------------------------------------- 5. bad input, zeros


@pytest.mark.parametrize("bad", ["int3", "fp8", "E4M3", ""])
def test_unknown_format_raises_naming_it(bad):
    x = torch.randn(2, 8)
    for call in (
        lambda: quantize_embedding(x, bad),
        lambda: quantization_step(x, bad),
        lambda: add_quantization_noise(x, bad),
        lambda: round_trip(x, bad),
        lambda: QuantizationNoise(bad),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert repr(bad) in str(info.value)
        assert all(fmt in str(info.value) for fmt in EMBEDDING_FORMATS)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_zero_vector_gives_zeros_not_nan(fmt):
    x = torch.zeros(3, 7)
    x[1] = torch.randn(7, generator=seeded(21))
    q = quantize_embedding(x, fmt)
    y = q.dequantize()
    assert not torch.isnan(y).any()
    assert torch.equal(y[0], torch.zeros(7)) and torch.equal(y[2], torch.zeros(7))
    assert not torch.isnan(quantization_step(x, fmt)).any()
    noisy = add_quantization_noise(x, fmt)
    assert not torch.isnan(noisy).any()
    if fmt in INT_FORMATS:  # zero vector: step 0, so the noise leaves it at zero
        assert torch.equal(noisy[0], torch.zeros(7))


def test_integer_formats_reject_non_finite_and_non_float_input():
    x = torch.randn(2, 8)
    x[0, 3] = math.nan
    for fmt in INT_FORMATS:
        with pytest.raises(ValueError, match="NaN"):
            quantize_embedding(x, fmt)
    with pytest.raises(ValueError, match="too large"):
        quantize_embedding(torch.full((1, 4), 1e300, dtype=torch.float64), "int8")
    with pytest.raises(ValueError, match="floating-point"):
        quantize_embedding(torch.ones(2, 8, dtype=torch.long), "int8")
    with pytest.raises(ValueError, match="dim"):
        quantize_embedding(torch.zeros(3, 0), "int8")


def test_quantized_embedding_is_a_plain_dataclass():
    q = quantize_embedding(torch.randn(2, 8), "e5m2")
    assert isinstance(q, QuantizedEmbedding) and q.scale is None and q.format == "e5m2"
    assert q.shape == torch.Size((2, 8)) and q.dtype == torch.float32 and q.dim == 8
