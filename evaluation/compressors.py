"""Classical-compressor baselines in bits per byte, measured on exactly the bytes a model is scored on.

Each method compresses in memory with the settings of the command-line tool it is named after:

===========  =====================================================================================
``gzip``     ``gzip -9``: `gzip.compress(level 9, mtime=0)`, a full gzip member (10-byte header +
             8-byte CRC/length trailer, no file name), not raw deflate.
``bzip2``    ``bzip2 -9``: `bz2.compress(level 9)` (900 kB blocks).
``xz``       ``xz -9e``: `lzma.compress(FORMAT_XZ, preset 9 | PRESET_EXTREME)`, CRC64 check like the CLI.
``zstd``     ``zstd -19``: `zstandard` level 19 with content size and checksum written, like the CLI.
``brotli``   ``brotli -q 11``: quality 11 with the CLI's default 16 MiB window (lgwin=24; the Python
             library's own default is 4 MiB).
===========  =====================================================================================

`compress_windows` reports three settings per method (bits per byte = 8 * compressed size / bytes):

- ``per_window``: every window compressed on its own, sizes summed (what a model that sees one
  window at a time without memory competes with; container headers are paid once per window),
- ``stream``: all windows concatenated and compressed once,
- ``primed``: ``size(primer + stream) - size(primer)``, the extra bytes the stream costs after the
  compressor has read the primer. This is the fair comparison for a model that learned from the
  primer text (e.g. its training data). A compressor only benefits from primer bytes inside its
  window: 32 KiB for gzip, a 900 kB block for bzip2, 8 MiB for zstd -19, 16 MiB for brotli, 64 MiB
  for xz -9e. When the stream is (almost) fully predictable from the primer the difference is
  near zero and can even come out slightly negative (bzip2 sorts whole blocks, so adding the
  stream can change how the primer's last block compresses); it is reported as measured.

brotli -q 11 and xz -9e take seconds per MB, so `max_primer_bytes` keeps only the *last* bytes of the
primer (the part closest to the stream, the part the compressors' windows reach anyway).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable, Iterable, Sequence

import brotli
import zstandard
from tqdm.auto import tqdm

XZ_PRESET = 9 | lzma.PRESET_EXTREME
BROTLI_WINDOW_LOG = 24
SETTINGS = ("per_window", "stream", "primed")
# Show a progress bar when a call compresses more than this many bytes in total (auto mode).
PROGRESS_MIN_BYTES = 4_000_000


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _bzip2(data: bytes) -> bytes:
    return bz2.compress(data, compresslevel=9)


XZ_MAX_DICT = 64 << 20  # the dictionary of preset 9


def _xz(data: bytes) -> bytes:
    # Same settings as preset 9e, but a dictionary no larger than the input (at least 4 KiB): the output is
    # identical apart from the one-byte dictionary-size field, and xz no longer reserves ~674 MB per call,
    # which made per-window compression of small windows take ~40 ms each.
    dict_size = min(XZ_MAX_DICT, max(4096, len(data)))
    filters = [{"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=filters)


def _zstd(data: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(level=19, write_checksum=True, write_content_size=True)
    return compressor.compress(data)


def _brotli(data: bytes) -> bytes:
    return brotli.compress(data, quality=11, lgwin=BROTLI_WINDOW_LOG)


def _zstd_decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


COMPRESS_FUNCTIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gzip,
    "bzip2": _bzip2,
    "xz": _xz,
    "zstd": _zstd,
    "brotli": _brotli,
}

DECOMPRESS_FUNCTIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "bzip2": bz2.decompress,
    "xz": lzma.decompress,
    "zstd": _zstd_decompress,
    "brotli": brotli.decompress,
}


def _size_function(compress: Callable[[bytes], bytes]) -> Callable[[bytes], int]:
    def compressed_size(data: bytes) -> int:
        return len(compress(data))

    return compressed_size


# name -> callable(bytes) -> compressed size in bytes
COMPRESSORS: dict[str, Callable[[bytes], int]] = {
    name: _size_function(compress) for name, compress in COMPRESS_FUNCTIONS.items()
}
ALL_METHODS: tuple[str, ...] = tuple(COMPRESSORS)


def bits_per_byte_of_size(compressed_bytes: int, num_bytes: int) -> float:
    """Bits per input byte of a compressed size: ``8 * compressed_bytes / num_bytes``."""
    if num_bytes <= 0:
        raise ValueError(f"num_bytes must be > 0, got {num_bytes}")
    return 8.0 * compressed_bytes / num_bytes


def _check_windows(windows: Sequence[bytes]) -> int:
    """Return the total byte count after checking every window is non-empty `bytes`."""
    if len(windows) == 0:
        raise ValueError("windows is empty; need at least one window of bytes")
    for index, window in enumerate(windows):
        if not isinstance(window, bytes | bytearray):
            raise ValueError(
                f"windows[{index}] is {type(window).__name__}, expected bytes "
                "(encode text with .encode('utf-8') so sizes are in UTF-8 bytes)"
            )
        if len(window) == 0:
            raise ValueError(f"windows[{index}] is empty; every window needs at least one byte")
    return sum(len(window) for window in windows)


def _check_methods(methods: Iterable[str]) -> list[str]:
    chosen = list(methods)
    unknown = [name for name in chosen if name not in COMPRESSORS]
    if unknown:
        raise ValueError(f"unknown compression method(s) {unknown}; known: {sorted(COMPRESSORS)}")
    if not chosen:
        raise ValueError(f"methods is empty; choose from {sorted(COMPRESSORS)}")
    return chosen


def last_primer_bytes(primer: bytes, max_primer_bytes: int | None) -> bytes:
    """The primer cut to its last `max_primer_bytes` bytes (all of it when the limit is None)."""
    if max_primer_bytes is None:
        return primer
    if max_primer_bytes <= 0:
        raise ValueError(f"max_primer_bytes must be > 0 or None, got {max_primer_bytes}")
    return primer[-max_primer_bytes:]


def compress_windows(
    windows: Sequence[bytes],
    primer: bytes | None = None,
    methods: Iterable[str] = ALL_METHODS,
    max_primer_bytes: int | None = None,
    progress: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Bits per byte of each compressor on `windows`, per window, as one stream, and primed.

    Args:
        windows: the evaluated text as UTF-8 bytes, one item per model window.
        primer: text the compressor reads first (not counted); gives the ``"primed"`` setting.
            Without a primer the result has no ``"primed"`` key.
        methods: names from `COMPRESSORS`.
        max_primer_bytes: keep only the last this many bytes of the primer (None keeps all of it).
        progress: show a tqdm bar; None shows one only when more than `PROGRESS_MIN_BYTES` are compressed.

    Returns:
        ``{method: {"per_window": bpb, "stream": bpb, "primed": bpb}}``, bpb = 8 * size / total bytes.
    """
    total_bytes = _check_windows(windows)
    chosen = _check_methods(methods)
    stream = b"".join(windows)
    primer_used = None if primer is None else last_primer_bytes(primer, max_primer_bytes)
    if primer_used is not None and len(primer_used) == 0:
        raise ValueError("primer is empty; pass None to skip the primed setting")

    calls_per_method = len(windows) + 1 + (2 if primer_used is not None else 0)
    bytes_per_method = 2 * total_bytes + (2 * len(primer_used) if primer_used is not None else 0)
    show = progress if progress is not None else bytes_per_method * len(chosen) > PROGRESS_MIN_BYTES
    bar = tqdm(total=calls_per_method * len(chosen), desc="compressors", unit="call", disable=not show)

    results: dict[str, dict[str, float]] = {}
    with bar:
        for method in chosen:
            size_of = COMPRESSORS[method]
            bar.set_postfix_str(method)
            per_window_size = 0
            for window in windows:
                per_window_size += size_of(window)
                bar.update(1)
            method_result = {
                "per_window": bits_per_byte_of_size(per_window_size, total_bytes),
                "stream": bits_per_byte_of_size(size_of(stream), total_bytes),
            }
            bar.update(1)
            if primer_used is not None:
                primed_size = size_of(primer_used + stream) - size_of(primer_used)
                method_result["primed"] = bits_per_byte_of_size(primed_size, total_bytes)
                bar.update(2)
            results[method] = method_result
    return results
