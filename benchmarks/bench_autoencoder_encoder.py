"""Autoencoder training speed with the encoder's last block computed for its last position only, against the
full stack followed by its last row (the path before `MixerStack.last_position`), in one run.

The encoder keeps only the hidden state at the last position, so the last block's mixing and feed-forward need
only that row (`MixerStack.last_position`). Both paths train the same model (same weights, each with its own
AdamW) with the model settings and batch size of the shipped presets (``configuration/autoencoder_32.json``,
``autoencoder_128.json``; ``--presets`` for others), bf16 autocast, fused AdamW, the chunked loss. Steps are
timed in interleaved rounds, each path keeping its median, so load from other programs biases neither; the
speedup is a ratio within this run. The memory model's encoder is the same module and gains
the same way. Run (about two minutes on 2 CPU cores)::

    python benchmarks/bench_autoencoder_encoder.py        # writes benchmarks/RESULTS_autoencoder_encoder.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root, for modeling_memmix

from memmix_train.config import load_preset  # noqa: E402
from modeling_memmix import MixerAutoencoder, MixerAutoencoderConfig  # noqa: E402
from modeling_memmix.mixer_layers import MixerStack  # noqa: E402

PATHS = ("full stack, last row", "last position only")
PRESETS = ["autoencoder_32", "autoencoder_128"]


@contextmanager
def encoder_path(name: str):
    """Run the encoder as ``name``: the full stack then its last row (as before), or `MixerStack.last_position`."""
    fast = MixerStack.last_position
    if name == PATHS[0]:
        MixerStack.last_position = lambda self, x: self(x)[:, -1]
    try:
        yield
    finally:
        MixerStack.last_position = fast


def make_step(model: MixerAutoencoder, batch: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch, labels=batch, return_logits=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return step


def preset_shape(name: str) -> tuple[MixerAutoencoderConfig, int]:
    """The model config and batch size of ``configuration/<name>.json`` (its own vocabulary size)."""
    path = REPO / "configuration" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"error: no preset {path}")
    preset = load_preset(path)
    if preset.family != "autoencoder":
        raise SystemExit(f"error: {path} is a {preset.family!r} preset, not an autoencoder")
    return MixerAutoencoderConfig(vocab_size=preset.data.vocab_size, **preset.model), preset.train.batch_size


def time_shape(config: MixerAutoencoderConfig, batch_size: int, rounds: int) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = MixerAutoencoder(config)
    batch = torch.randint(0, config.vocab_size, (batch_size, config.n_ctx))
    steps = {name: make_step(model, batch) for name in PATHS}
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    for round_index in range(rounds + 1):  # round 0 warms up and is not kept
        for name in PATHS:
            with encoder_path(name):
                started = time.perf_counter()
                steps[name]()
                elapsed = time.perf_counter() - started
            if round_index:
                times[name].append(elapsed)
    return times


def report(rows: list[tuple[str, MixerAutoencoderConfig, int, dict[str, list[float]]]], args, seconds: float) -> str:
    lines = [
        "# Autoencoder training: the encoder's last block for its last position only",
        "",
        f"Written by `python benchmarks/bench_autoencoder_encoder.py --rounds {args.rounds}` in {seconds:.0f} s. "
        f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        "One training step = forward with the chunked loss, backward, fused AdamW; bf16 autocast; the median of "
        f"{args.rounds} interleaved steps per path; the presets' model settings and batch size.",
        "",
        "| preset | n_ctx | width | ff | k | layers | batch | " + " | ".join(f"{name} (ms/step)" for name in PATHS)
        + " | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, config, batch, times in rows:
        medians = [statistics.median(times[path]) * 1000 for path in PATHS]
        lines.append(f"| {name} | {config.n_ctx} | {config.hidden_size} | {config.intermediate_size} | "
                     f"{config.mixer_kernel_size} | {config.encoder_layers} + {config.decoder_layers} | {batch} | "
                     f"{medians[0]:.1f} | {medians[1]:.1f} | **{medians[0] / medians[1]:.2f}x** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--presets", nargs="+", default=PRESETS, help="autoencoder presets in configuration/")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS_autoencoder_encoder.md"))
    args = parser.parse_args(argv)
    started = time.time()
    rows = []
    for name in args.presets:
        config, batch = preset_shape(name)
        rows.append((name, config, batch, time_shape(config, batch, args.rounds)))
        print(f"{name} done", flush=True)
    text = report(rows, args, time.time() - started)
    args.output.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
