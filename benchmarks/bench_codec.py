"""Benchmark of memmix_codec against classical compressors on the same bytes: size, bits per byte, KB/s.

Texts: the built-in corpus' validation split (held out from training, in-domain) and a public text a user would
try (default /usr/share/common-licenses/GPL-3), each cut to ``--max-bytes``. For every text: memmix (every
``--model``, at each ``--lane-tokens``; an oracle memory model codes in the embedding-augmented mode) and gzip -9,
bzip2 -9, xz -9e, zstd -19, brotli -q 11 on the whole text, plus the classical ones primed with the training
text (``size(primer + text) - size(primer)``, the last ``--primer-bytes`` of the training split). Every memmix
stream is decompressed and compared with the input. Writes a markdown table (``--out``). On 2 CPU cores::

    python benchmarks/bench_codec.py --model runs/mixer_tiny/export --out benchmarks/RESULTS_codec.md
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.compressors import COMPRESS_FUNCTIONS, DECOMPRESS_FUNCTIONS  # noqa: E402
from memmix_codec import decompress_bytes, load_codec_model  # noqa: E402
from memmix_codec.codec import compress_stream, default_lane_tokens  # noqa: E402
from memmix_data import builtin_documents, split_documents  # noqa: E402


def texts(max_bytes: int, public: str | None) -> tuple[dict[str, bytes], bytes]:
    train, validation = split_documents(builtin_documents(), 0.05, 0)
    found = {"builtin validation": "\n\n".join(validation).encode()[:max_bytes]}
    if public and os.path.isfile(public):
        found[f"public: {os.path.basename(public)}"] = Path(public).read_bytes()[:max_bytes]
    return found, "\n\n".join(train).encode()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def classical_rows(data: bytes, primer: bytes) -> list[dict]:
    rows = []
    for name, compress in COMPRESS_FUNCTIONS.items():
        packed, seconds = timed(compress, data)
        back, back_seconds = timed(DECOMPRESS_FUNCTIONS[name], packed)
        assert back == data
        primed = len(compress(primer + data)) - len(compress(primer))
        rows.append(dict(method=name, size=len(packed), primed=primed, c_kbs=len(data) / 1000 / seconds,
                         d_kbs=len(data) / 1000 / back_seconds))
    return rows


def memmix_rows(data: bytes, models: list[str], lane_tokens: list[int | None]) -> list[dict]:
    rows = []
    for folder in models:
        codec = load_codec_model(folder)
        for lanes in lane_tokens:
            out = io.BytesIO()
            stats = compress_stream(io.BytesIO(data), out, codec, len(data), lane_tokens=lanes, progress=False)
            stream = out.getvalue()
            back, seconds = timed(decompress_bytes, stream, codec)
            assert back == data, "round trip failed"
            per_lane = lanes or default_lane_tokens(codec.model)
            name = f"memmix {codec.mode} {Path(folder).parent.name or folder} ({stats.lanes} lanes of ~{per_lane} tokens)"
            rows.append(dict(method=name, size=len(stream), primed=None, c_kbs=stats.kilobytes_per_second,
                             d_kbs=len(data) / 1000 / seconds, model_bpb=stats.model_bits_per_byte,
                             embedding=stats.embedding_bytes, overhead=stats.header_bytes + stats.record_overhead_bytes))
    return rows


def table(name: str, data: bytes, rows: list[dict]) -> str:
    best = min(row["size"] for row in rows if not row["method"].startswith("memmix"))
    best_primed = min(row["primed"] for row in rows if row["primed"] is not None)
    lines = [f"### {name}: {len(data)} bytes", "",
             "| method | bytes | bits/byte | primed bits/byte | vs best classical | model bpb | embeddings B | "
             "header+records B | compress KB/s | decompress KB/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        bpb = 8 * row["size"] / len(data)
        primed = "" if row["primed"] is None else f"{8 * row['primed'] / len(data):.3f}"
        model_bpb = f"{row['model_bpb']:.3f}" if "model_bpb" in row else ""
        lines.append(
            f"| {row['method']} | {row['size']} | {bpb:.3f} | {primed} | {100 * (row['size'] / best - 1):+.1f} % | "
            f"{model_bpb} | {row.get('embedding', '')} | {row.get('overhead', '')} | {row['c_kbs']:.1f} | "
            f"{row['d_kbs']:.1f} |")
    lines.append("")
    lines.append(f"Best classical on the whole text: {best} bytes; best primed with training text: {best_primed} bytes.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model folder (repeatable)")
    parser.add_argument("--lane-tokens", type=int, action="append", default=None,
                        help="tokens per lane (repeatable; default: the codec's default and 64)")
    parser.add_argument("--max-bytes", type=int, default=40_000)
    parser.add_argument("--public", default="/usr/share/common-licenses/GPL-3")
    parser.add_argument("--primer-bytes", type=int, default=1_000_000)
    parser.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    args = parser.parse_args()
    lane_tokens = args.lane_tokens or [None, 64]
    found, primer = texts(args.max_bytes, args.public)
    primer = primer[-args.primer_bytes :]
    sections = [
        "# memmix_codec benchmark", "",
        f"Command: `python benchmarks/bench_codec.py {' '.join(sys.argv[1:])}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; the codec runs the model "
        "on one thread. Speeds are wall-clock of one run each (compress KB/s for memmix includes tokenization).", "",
    ]
    for name, data in found.items():
        rows = memmix_rows(data, args.model, lane_tokens) + classical_rows(data, primer)
        sections.append(table(name, data, rows))
        sections.append("")
    text = "\n".join(sections)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
