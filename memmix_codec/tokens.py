"""Bytes <-> token ids for the codec, exact for any input bytes.

Compression turns a block of raw bytes into token ids; decompression never re-tokenizes, it only maps each id
back to the fixed bytes it stands for (`ByteTable`). So the round trip is exact by construction as long as the
ids chosen at compression time spell the input; `bytes_to_ids` checks that for every piece and falls back
when it does not hold:

* the block is decoded as UTF-8 with ``surrogateescape``: valid text runs go through the tokenizer (with
  ``split_special_tokens=True``, so a literal ``<|endoftext|>`` in a file is ordinary text), invalid bytes
  become lone surrogates and are spelled with the 256 single-byte tokens of the byte-level alphabet;
* every tokenized run is checked (its ids' bytes must equal the run's UTF-8 bytes); a run that fails (a
  normalizer, an added token, anything that is not a pure byte-level BPE) is retried line by line, and a line
  that still fails is spelled byte by byte. Nothing is ever silently changed.

Special tokens and ids without a byte spelling (e.g. vocabulary padding past ``len(tokenizer)``) are never
emitted; the coder gives them no probability mass, and a decoder that meets one reports a corrupt stream.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

_ESCAPED = re.compile("[\udc80-\udcff]+")


@functools.lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = {byte: byte for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in codes:
            codes[byte] = 256 + shift
            shift += 1
    return {chr(code): byte for byte, code in codes.items()}


@dataclass
class ByteTable:
    """What each token id spells: ``pieces[i]`` is its bytes (``None`` for specials and unspellable ids),
    ``byte_ids[b]`` the id of the single-byte token for byte ``b``, ``allowed`` a ``(vocab,)`` bool mask."""

    pieces: list[bytes | None]
    byte_ids: list[int]
    allowed: torch.Tensor

    @property
    def fingerprint(self) -> bytes:
        """sha256 of everything decoding depends on: the bytes of every id (and which ids have none)."""
        digest = hashlib.sha256(b"memmix_codec byte table v1\x00")
        for piece in self.pieces:
            digest.update(b"\xff" if piece is None else len(piece).to_bytes(2, "little") + piece)
        return digest.digest()

    def spell(self, ids: list[int]) -> bytes:
        """The bytes of ``ids``; raises ``ValueError`` on an id without bytes."""
        try:
            return b"".join(self.pieces[i] for i in ids)
        except TypeError:
            bad = next(i for i in ids if self.pieces[i] is None)
            raise ValueError(f"token id {bad} has no byte spelling (special or unused id)") from None


def build_byte_table(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> ByteTable:
    """Byte spelling of every id of a byte-level BPE tokenizer, for a model with ``vocab_size`` logits.

    Raises ``ValueError`` when the tokenizer is not byte-level (a token with a character outside the byte
    alphabet) or lacks one of the 256 single-byte tokens (then some bytes could not be coded)."""
    if len(tokenizer) > vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} logits")
    table = unicode_to_byte()
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    pieces: list[bytes | None] = [None] * vocab_size
    for token_id, token in enumerate(tokens):
        if token_id in special or token is None:
            continue
        try:
            pieces[token_id] = bytes(table[char] for char in token)
        except KeyError:
            raise ValueError(
                f"token {token_id} ({token!r}) is not a byte-level BPE token; the codec needs a byte-level "
                "BPE tokenizer (like the one memmix_data.train_tokenizer builds)"
            ) from None
    byte_ids = {}
    for token_id, piece in enumerate(pieces):
        if piece is not None and len(piece) == 1:
            byte_ids.setdefault(piece[0], token_id)
    missing = [b for b in range(256) if b not in byte_ids]
    if missing:
        raise ValueError(f"tokenizer has no single-byte token for byte(s) {missing[:8]}; it cannot code every input")
    allowed = torch.tensor([piece is not None for piece in pieces], dtype=torch.bool)
    return ByteTable(pieces, [byte_ids[b] for b in range(256)], allowed)


def _tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _text_ids(tokenizer: PreTrainedTokenizerBase, table: ByteTable, text: str, stats: dict) -> list[int]:
    """Ids spelling ``text`` exactly: whole run, else line by line, else byte by byte."""
    raw = text.encode("utf-8")
    ids = _tokenize(tokenizer, text)
    if _spells(table, ids, raw):
        return ids
    out: list[int] = []
    for line in text.splitlines(keepends=True):
        line_raw = line.encode("utf-8")
        line_ids = _tokenize(tokenizer, line)
        if not _spells(table, line_ids, line_raw):
            stats["fallback_bytes"] = stats.get("fallback_bytes", 0) + len(line_raw)
            line_ids = [table.byte_ids[b] for b in line_raw]
        out.extend(line_ids)
    return out


def _spells(table: ByteTable, ids: list[int], raw: bytes) -> bool:
    try:
        return table.spell(ids) == raw
    except (ValueError, IndexError):
        return False


def bytes_to_ids(tokenizer: PreTrainedTokenizerBase, table: ByteTable, data: bytes,
                 stats: dict | None = None) -> list[int]:
    """Token ids whose bytes are exactly ``data`` (checked). ``stats`` (optional) counts ``raw_bytes`` (invalid
    UTF-8, spelled byte by byte) and ``fallback_bytes`` (valid text the tokenizer could not spell exactly)."""
    stats = {} if stats is None else stats
    text = data.decode("utf-8", errors="surrogateescape")
    ids: list[int] = []
    position = 0
    for match in _ESCAPED.finditer(text):
        if match.start() > position:
            ids.extend(_text_ids(tokenizer, table, text[position : match.start()], stats))
        escaped = match.group().encode("utf-8", errors="surrogateescape")
        stats["raw_bytes"] = stats.get("raw_bytes", 0) + len(escaped)
        ids.extend(table.byte_ids[b] for b in escaped)
        position = match.end()
    if position < len(text):
        ids.extend(_text_ids(tokenizer, table, text[position:], stats))
    if table.spell(ids) != data:  # cannot happen by construction; never code something that decodes wrong
        raise AssertionError("internal error: token ids do not spell the input block")
    return ids


__all__ = ["ByteTable", "build_byte_table", "bytes_to_ids", "unicode_to_byte"]
