"""Command line of memmix_codec: ``python -m memmix_codec compress|decompress IN OUT [--model DIR] [--stats]``.

Exit status 0 on success; 1 with a one-line message (and no output file) when the stream is corrupt,
truncated, or made with another model or tokenizer, or when a file or model folder is missing.
"""

from __future__ import annotations

import argparse
import sys

from .codec import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_LANES, compress_file, decompress_file
from .predictors import CorruptStreamError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memmix_codec", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compress = commands.add_parser("compress", help="compress IN into OUT with a model")
    compress.add_argument("input")
    compress.add_argument("output")
    compress.add_argument("--model", required=True, help="folder of a saved causal memmix model (with tokenizer)")
    compress.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                          help="bytes per independently coded block (default 1 MiB)")
    compress.add_argument("--lane-tokens", type=int, default=None,
                          help="tokens per lane (default: the model's context): fewer = more lanes batched "
                          "= faster, more = more tokens with a full context")
    compress.add_argument("--max-lanes", type=int, default=DEFAULT_MAX_LANES, help="most lanes per block")
    compress.add_argument("--embedding-format", default=None,
                          help="oracle memory model only: int8, int4, e4m3, ... (default: the model's)")
    decompress = commands.add_parser("decompress", help="decompress IN into OUT")
    decompress.add_argument("input")
    decompress.add_argument("output")
    decompress.add_argument("--model", default=None, help="model folder (default: the one named in the stream)")
    for sub in (compress, decompress):
        sub.add_argument("--stats", action="store_true", help="print sizes, bits per byte and throughput")
        sub.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = False if args.no_progress else None
    try:
        if args.command == "compress":
            stats = compress_file(args.input, args.output, args.model, block_size=args.block_size,
                                  lane_tokens=args.lane_tokens, max_lanes=args.max_lanes,
                                  embedding_format=args.embedding_format, progress=progress)
        else:
            stats = decompress_file(args.input, args.output, args.model, progress=progress)
    except (CorruptStreamError, FileNotFoundError, ValueError) as error:
        print(f"memmix_codec {args.command}: error: {error}", file=sys.stderr)
        return 1
    if args.stats:
        print(stats.report())
    return 0
