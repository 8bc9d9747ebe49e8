"""Sharded-vs-unsharded training check for memmix models with FSDP2 (``fully_shard``) on CPU.

Run by ``tests/test_distributed.py`` as::

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_scripts/fsdp_train.py --output result.json

Every rank builds the same tiny model (same seed). Each ``MixerBlock`` / ``LlamaDecoderLayer`` and the root
are sharded with ``torch.distributed.fsdp.fully_shard`` over the gloo backend; each rank trains on its half
of a fixed global batch. Rank 0 also trains an unsharded copy, in this one process, on the whole global batch
for the same steps. Rank 0 writes a JSON with both loss trajectories, the largest difference between the
gathered sharded weights and the unsharded ones, evidence that the parameters really were sharded, and a
causal-mask check on the sharded model after training (logits at positions ``<= t`` must not change when
tokens after ``t`` change). The test, not this script, decides what passes.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for modeling_memmix

from modeling_memmix import MemoryMixerConfig, MemoryMixerForCausalLM, MixerConfig, MixerForCausalLM  # noqa: E402

VOCAB = 100
GLOBAL_BATCH = 4
LEARNING_RATE = 0.5


def build_model(family: str) -> tuple[nn.Module, int]:
    """A tiny model of ``family`` (same weights on every rank) and the sequence length it trains on."""
    torch.manual_seed(0)
    if family == "mixer":
        config = MixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, n_ctx=16)
        return MixerForCausalLM(config), config.n_ctx
    if family == "memory":
        config = MemoryMixerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, n_ctx=8, max_memories=2)
        return MemoryMixerForCausalLM(config), config.max_sequence_length
    raise ValueError(f"family={family!r} is not supported; choose 'mixer' or 'memory'")


def shard(model: nn.Module) -> int:
    """``fully_shard`` every block named in ``_no_split_modules``, then the root. Returns the block count."""
    block_names = set(model._no_split_modules)
    blocks = [module for module in model.modules() if type(module).__name__ in block_names]
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return len(blocks)


def train(model: nn.Module, batch: torch.Tensor, steps: int) -> list[float]:
    """``steps`` SGD-with-momentum steps on one fixed batch; returns each step's loss (mean over ranks if sharded).

    Why not AdamW: the flat mixer's per-token bias is followed by a LayerNorm on every path, so its exact
    gradient is 0 and what autograd returns is rounding noise (~1e-8). Adam divides by the gradient's own
    scale and turns that noise into steps of ~lr, which differ between any two summation orders (sharded or
    not) although the model's function is unchanged. SGD keeps noise at noise scale, so the comparison can be
    tight; the momentum buffers still exercise sharded optimizer state.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss = loss.detach()
        losses.append(mean_over_ranks(loss) if is_sharded(model) else loss.item())
    return losses


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(parameter, DTensor) for parameter in model.parameters())


def mean_over_ranks(value: torch.Tensor) -> float:
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return float(value) / dist.get_world_size()


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by name, DTensors gathered to full tensors (a collective: every rank must call it)."""
    return {
        name: (parameter.full_tensor() if isinstance(parameter, DTensor) else parameter).detach().clone()
        for name, parameter in model.named_parameters()
    }


def sharding_evidence(model: nn.Module) -> dict[str, int]:
    """Element counts held locally by this rank versus the full model (sharding halves the first)."""
    local = full = 0
    for parameter in model.parameters():
        full += parameter.numel()
        local += parameter.to_local().numel() if isinstance(parameter, DTensor) else parameter.numel()
    return {"local_numel": local, "full_numel": full}


def causal_leak(model: nn.Module, length: int, cut: int) -> dict[str, float]:
    """Largest change of logits at positions ``<= cut`` (``leak``, must be 0) and after it (``later_change``,
    must not be 0, else the check proves nothing) when every token after ``cut`` is replaced."""
    generator = torch.Generator().manual_seed(123)
    tokens = torch.randint(0, VOCAB, (2, length), generator=generator)
    changed = tokens.clone()
    changed[:, cut + 1:] = (tokens[:, cut + 1:] + 1 + torch.randint(0, VOCAB - 1, changed[:, cut + 1:].shape,
                                                                    generator=generator)) % VOCAB
    with torch.no_grad():
        before = model(input_ids=tokens).logits[:, : cut + 1]
        after = model(input_ids=changed).logits[:, : cut + 1]
        later_before = model(input_ids=tokens).logits[:, cut + 1:]
        later_after = model(input_ids=changed).logits[:, cut + 1:]
    return {"leak": float((before - after).abs().max()),
            "later_change": float((later_before - later_after).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--family", default="mixer", choices=["mixer", "memory"])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    # FSDP2 warns when a wrapped module returns a view (our outputs hold slices of logits); nothing here
    # modifies outputs in place, which is the case the warning is about.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if GLOBAL_BATCH % world:
        raise ValueError(f"GLOBAL_BATCH={GLOBAL_BATCH} must be divisible by world size {world}")
    torch.use_deterministic_algorithms(True)

    model, length = build_model(args.family)
    reference = copy.deepcopy(model) if rank == 0 else None
    global_batch = torch.randint(0, VOCAB, (GLOBAL_BATCH, length), generator=torch.Generator().manual_seed(7))
    per_rank = GLOBAL_BATCH // world
    local_batch = global_batch[rank * per_rank:(rank + 1) * per_rank]

    num_blocks = shard(model)
    sharded_losses = train(model, local_batch, args.steps)
    sharded_weights = full_state(model)
    evidence = sharding_evidence(model)
    cut = length // 2
    causal = causal_leak(model, length, cut)

    if rank == 0:
        reference_losses = train(reference, global_batch, args.steps)
        reference_weights = full_state(reference)
        initial = full_state(build_model(args.family)[0])
        weight_diff = {name: float((sharded_weights[name] - reference_weights[name]).abs().max())
                       for name in reference_weights}
        weight_change = max(float((reference_weights[name] - initial[name]).abs().max()) for name in initial)
        result = {
            "family": args.family,
            "world_size": world,
            "backend": dist.get_backend(),
            "num_sharded_blocks": num_blocks,
            "sharded_losses": sharded_losses,
            "reference_losses": reference_losses,
            "max_weight_diff": max(weight_diff.values()),
            "worst_parameter": max(weight_diff, key=weight_diff.get),
            "max_weight_change_from_init": weight_change,
            "causal_cut": cut,
            "causal_leak": causal["leak"],
            "later_logits_change": causal["later_change"],
            **evidence,
        }
        Path(args.output).write_text(json.dumps(result, indent=2))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
