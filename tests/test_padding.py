"""Padded batches give the answers of their rows run alone.

A tokenizer pads on the left (for ``generate``) or on the right (collators), and a user scores or trains on
such batches with ``attention_mask`` and labels ``-100`` at padding. These tests prove, for the causal mixer
(every mixing variant and the Llama-block variant) and the memory model (every mode that reads earlier
tokens, and the oracle): logits at every real position equal those of the row alone, a padding position's
logits never depend on any token, nothing at a position <= t depends on a token after t, and the loss of a
padded batch equals the loss of its rows run alone (the first real token of a row is not predicted, as in an
unpadded sequence). Masks the models cannot honour (zeros between tokens) and padding the autoencoder would
read into its embedding raise ``ValueError``.
"""

from __future__ import annotations

import pytest
import torch
from variants import MIXER_VARIANTS, TINY, memory_config, mixer_config, random_ids, wake_memory_read

from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerAutoencoderConfig, MixerForCausalLM

PAD_ID = 0
MEMORY_PADDING_VARIANTS = ("past_fixed", "past_variable", "past_concat", "past_transformer_decoder", "recurrent",
                           "recurrent_seed", "none_fixed", "oracle_token", "oracle_sum", "past_attention_read")
CAUSAL_MEMORY_VARIANTS = tuple(name for name in MEMORY_PADDING_VARIANTS if not name.startswith("oracle"))


def build(family: str, variant: str):
    torch.manual_seed(0)
    if family == "mixer":
        return MixerForCausalLM(mixer_config(variant)).eval()
    return wake_memory_read(MemoryMixerForCausalLM(memory_config(variant)).eval())


def row_lengths(model) -> list[int]:
    """Three rows: one that nearly fills the model, one in between, one short. For a memory model with 4
    chunks of 16 tokens they end inside the fourth, second and first chunk."""
    longest = model.config.max_sequence_length
    return [longest - 3, longest // 2 - 9, 5] if longest > 16 else [16, 9, 3]


def padded_batch(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths padded with ``PAD_ID`` on ``side``; returns ``(input_ids, attention_mask)``."""
    width = max(row.numel() for row in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        columns = slice(width - row.numel(), width) if side == "left" else slice(0, row.numel())
        ids[b, columns] = row
        mask[b, columns] = 1
    return ids, mask


def real_columns(mask: torch.Tensor, b: int) -> torch.Tensor:
    return mask[b].nonzero().squeeze(1)


def make_rows(model, seed: int = 0) -> list[torch.Tensor]:
    return [random_ids(1, length, seed=seed + i)[0] for i, length in enumerate(row_lengths(model))]


CASES = [("mixer", name) for name in MIXER_VARIANTS] + [("memory", name) for name in MEMORY_PADDING_VARIANTS]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family,variant", CASES)
def test_padded_rows_equal_rows_alone_and_padding_reads_nothing(family, variant, side):
    model = build(family, variant)
    rows = make_rows(model)
    ids, mask = padded_batch(rows, side)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
        for b, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            torch.testing.assert_close(logits[b, real_columns(mask, b)], alone, atol=1e-5, rtol=1e-5)
        padding = mask == 0
        assert padding.any()
        # a padding position has no state: zero logits, whatever the tokens of the batch are
        assert torch.equal(logits[padding], torch.zeros_like(logits[padding]))


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family,variant", CASES)
def test_padded_loss_equals_the_loss_of_the_rows_alone(family, variant, side):
    model = build(family, variant)
    rows = make_rows(model, seed=10)
    ids, mask = padded_batch(rows, side)
    labels = ids.masked_fill(mask == 0, -100)  # what a collator gives
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, labels=labels)
        alone = [model(row[None], labels=row[None]) for row in rows]
    total = sum(out.loss_sum for out in alone)
    count = sum(int(out.num_tokens) for out in alone)
    assert int(padded.num_tokens) == count == sum(row.numel() - 1 for row in rows)
    torch.testing.assert_close(padded.loss_sum, total, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(padded.loss, total / count, atol=1e-5, rtol=1e-5)
    # labels that do not mark padding with -100 give the same loss: padding is never a target or a predictor
    unmarked = model(ids, attention_mask=mask, labels=ids)
    torch.testing.assert_close(unmarked.loss, padded.loss, atol=0, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family,variant", [("mixer", name) for name in MIXER_VARIANTS]
                         + [("memory", name) for name in CAUSAL_MEMORY_VARIANTS])
def test_padded_batches_are_causal(family, variant, side):
    model = build(family, variant)
    rows = make_rows(model, seed=20)
    ids, mask = padded_batch(rows, side)
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
        for t in (0, ids.shape[1] // 3, ids.shape[1] - 2):
            changed = ids.clone()
            changed[:, t + 1 :] = (ids[:, t + 1 :] + 7) % TINY["vocab_size"]  # padding ids change too
            logits = model(changed, attention_mask=mask).logits
            torch.testing.assert_close(logits[:, : t + 1], reference[:, : t + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family,variant", [("mixer", "flat"), ("mixer", "transformer"), ("memory", "past_fixed")])
def test_cached_prefill_of_a_left_padded_batch_equals_rows_alone(family, variant):
    model = build(family, variant)
    rows = make_rows(model, seed=30)
    ids, mask = padded_batch(rows, "left")
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, use_cache=True).logits
        for b, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            torch.testing.assert_close(logits[b, real_columns(mask, b)], alone, atol=1e-5, rtol=1e-5)
        assert torch.equal(logits[mask == 0], torch.zeros_like(logits[mask == 0]))


@pytest.mark.parametrize("family", ["mixer", "memory"])
def test_masks_with_holes_or_empty_rows_raise(family):
    model = build(family, "past_fixed" if family == "memory" else "flat")
    ids = random_ids(2, 8)
    holes = torch.tensor([[1, 1, 0, 1, 1, 1, 1, 1], [1] * 8])
    with pytest.raises(ValueError, match=r"attention_mask row 0 has zeros between tokens"):
        model(ids, attention_mask=holes)
    empty = torch.tensor([[0] * 8, [1] * 8])
    with pytest.raises(ValueError, match=r"attention_mask row 0 is all zeros"):
        model(ids, attention_mask=empty)
    with pytest.raises(ValueError, match=r"attention_mask shape \(2, 7\) differs"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_autoencoder_refuses_padding_it_would_embed_and_accepts_a_full_mask():
    torch.manual_seed(0)
    model = MixerAutoencoder(MixerAutoencoderConfig(**TINY)).eval()
    ids = random_ids(2, TINY["n_ctx"])
    full = torch.ones_like(ids)
    torch.testing.assert_close(model(ids, attention_mask=full).logits, model(ids).logits, atol=0, rtol=0)
    padded = full.clone()
    padded[0, :3] = 0
    with pytest.raises(ValueError, match="padding would be read into the embedding"):
        model(ids, attention_mask=padded, labels=ids)
