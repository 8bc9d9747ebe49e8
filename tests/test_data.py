"""Tests of the memmix data pipeline: corpora, tokenizer byte accounting, document split, packing, cache."""

from __future__ import annotations

import functools
import json
import os

import pytest
import torch
from transformers import AutoTokenizer

from memmix_data import (
    END_OF_TEXT,
    HubUnreachableError,
    PackedWindows,
    builtin_documents,
    builtin_fingerprint,
    keep_fraction,
    load_documents,
    load_or_build_windows,
    load_or_train_tokenizer,
    pack_documents,
    split_documents,
    token_byte_lengths,
    token_bytes,
    train_tokenizer,
    window_text_bytes,
)
from memmix_data.corpus import _builtin_documents_tuple

MULTIBYTE_TEXT = "naïve café 東京 🚀 — Ünïcödé ∑ x²\n\ttabs and  spaces"
SMALL_VOCAB = 400


@pytest.fixture(scope="module")
def small_documents() -> list[str]:
    """About 200 KB of the built-in corpus."""
    documents, size = [], 0
    for document in builtin_documents():
        documents.append(document)
        size += len(document.encode())
        if size > 200_000:
            break
    return documents


@pytest.fixture(scope="module")
def tokenizer(small_documents):
    return train_tokenizer(small_documents, vocab_size=SMALL_VOCAB)


# --- corpus ----------------------------------------------------------------------------------


def test_builtin_corpus_is_large_deterministic_and_clean():
    documents = builtin_documents()
    total_bytes = sum(len(d.encode("utf-8")) for d in documents)
    assert total_bytes > 1_000_000
    assert all(len(d) >= 200 and d == d.strip() for d in documents)
    assert len(set(documents)) == len(documents)
    fingerprint = builtin_fingerprint()
    _builtin_documents_tuple.cache_clear()  # recompute from the files: same text, same order
    assert builtin_documents() == documents
    assert load_documents("builtin", max_documents=5) == documents[:5]
    assert len(fingerprint) == 64


def test_txt_paragraphs_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("東京 third\n", encoding="utf-8")
    documents = load_documents(str(tmp_path / "*.txt"))
    assert len(documents) == 3
    assert documents[0].startswith("first paragraph") and "still first" in documents[0]
    assert "東京 third" in documents[2]
    streamed = load_documents(str(tmp_path / "a.txt"), streaming=True)
    assert not isinstance(streamed, list) and len(list(streamed)) == 2


def test_jsonl_and_parquet_loading(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"document {i} ünï", "id": i} for i in range(4)] + [{"text": "", "id": 9}]
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    parquet = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"body": [r["text"] for r in rows], "id": [r["id"] for r in rows]}), parquet)

    expected = [f"document {i} ünï" for i in range(4)]  # the empty document is dropped
    assert load_documents(str(jsonl)) == expected
    assert load_documents(str(parquet), text_column="body") == expected
    assert load_documents([str(jsonl), str(jsonl)], max_documents=6) == expected + expected[:2]
    with pytest.raises(ValueError, match=r"no column 'text'.*'body'.*'id'"):
        load_documents(str(parquet))


def test_missing_file_and_empty_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_documents(str(tmp_path / "nope.txt"))
    with pytest.raises(FileNotFoundError, match=r"\*\.jsonl"):
        load_documents(str(tmp_path / "*.jsonl"))
    (tmp_path / "blank.txt").write_text("\n\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="Empty corpus"):
        load_documents(str(tmp_path / "blank.txt"))
    with pytest.raises(ValueError, match="Empty corpus"):
        load_documents([])


def test_undecodable_txt_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("héllo ".encode() + b"\xff\xfe world")
    with pytest.raises(ValueError, match=r"bad\.txt.*offset 7"):
        load_documents(str(bad))


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match=r"Hub cannot be reached.*local files") as info:
        load_documents("memmix-test-org/no-such-dataset:some-config")
    assert "memmix-test-org/no-such-dataset" in str(info.value)
    assert isinstance(info.value, ConnectionError)


# --- bad local files: one clear ValueError naming the file (and the line), never a datasets traceback --


def _write(path, content: str | bytes):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


BAD_TEXT_FILES = {
    "empty.txt": ("", r"empty\.txt is empty \(0 bytes\)"),
    "blank_lines.txt": ("\n\n  \n\t\n", r"blank_lines\.txt holds only blank lines"),
    "empty.jsonl": ("", r"empty\.jsonl is empty \(0 bytes\)"),
    "blank.jsonl": ("\n  \n", r"blank\.jsonl holds only blank lines"),
    "empty.json": ("", r"empty\.json is empty"),
    "empty_array.json": ("[]", r"empty_array\.json holds an empty JSON array"),
    "broken.jsonl": (
        '{"text": "a"}\n{"text": "b"}\n{"text": "c"\n{"text": "d"}\n',
        r"broken\.jsonl line 3 is not valid JSON: Expecting ',' delimiter \(column 13\)",
    ),
    "broken_after_blank.jsonl": (
        '{"text": "a"}\n\n\n{"text": \n',
        r"broken_after_blank\.jsonl line 4 is not valid JSON",
    ),
    "missing_field.jsonl": (
        '{"text": "a"}\n{"body": "b", "id": 2}\n',
        r"missing_field\.jsonl line 2 has no field 'text' \(its fields: \['body', 'id'\]\).*text_column",
    ),
    "number_text.jsonl": (
        '{"text": "a"}\n{"text": 5}\n',
        r"number_text\.jsonl line 2: field 'text' holds a JSON number \(5\)",
    ),
    "list_text.json": (
        '[{"text": "a"}, {"text": ["b"]}]',
        r"list_text\.json record 2: field 'text' holds a JSON array",
    ),
    "not_object.jsonl": (
        '{"text": "a"}\n"just a string"\n',
        r"not_object\.jsonl line 2 holds a JSON string, not an object",
    ),
    "broken_array.json": (
        '[\n  {"text": "a"},\n  {"text": "b",}\n]',
        r"broken_array\.json line 3 is not valid JSON",
    ),
    "bad_utf8.jsonl": (
        b'{"text": "a"}\n{"text": "\xff"}\n',
        r"bad_utf8\.jsonl is not valid UTF-8: undecodable byte at offset 24",
    ),
    "not_really.parquet": ("this is not parquet", r"not_really\.parquet is not a readable parquet file"),
}


@pytest.mark.parametrize("name", sorted(BAD_TEXT_FILES))
def test_bad_local_file_names_the_file_and_the_problem(tmp_path, name):
    content, pattern = BAD_TEXT_FILES[name]
    path = _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=pattern) as info:
        load_documents(path)
    assert str(tmp_path) in str(info.value)  # the full path, not just the spec's pattern
    assert "\n" not in str(info.value)  # one line


def test_streaming_checks_the_files_up_front(tmp_path):
    path = _write(tmp_path / "broken.jsonl", '{"text": "a"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl line 2 is not valid JSON"):
        load_documents(path, streaming=True)


def test_parquet_without_rows_or_with_a_non_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(ValueError, match=r"empty\.parquet holds no rows"):
        load_documents(str(empty))
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2], "body": ["x", "y"]}), numbers)
    with pytest.raises(ValueError, match=r"numbers\.parquet: column 'text' holds int64 values, not text"):
        load_documents(str(numbers))
    assert load_documents(str(numbers), text_column="body") == ["x", "y"]


def test_json_forms_that_stay_valid(tmp_path):
    """JSON lines with blank lines, a top-level array, one pretty-printed object, null text (an empty document)."""
    assert load_documents(
        _write(tmp_path / "a.jsonl", '{"text": "a"}\n\n{"text": null}\n{"text": "b"}\n')
    ) == ["a", "b"]
    assert load_documents(_write(tmp_path / "b.json", '[{"text": "c"}, {"text": "d"}]')) == ["c", "d"]
    assert load_documents(_write(tmp_path / "c.json", '{\n  "text": "e"\n}\n')) == ["e"]
    assert load_documents(_write(tmp_path / "d.jsonl", '\ufeff{"text": "f"}\n')) == ["f"]  # byte-order mark


def test_empty_files_next_to_documents_in_a_glob_are_fine_but_all_empty_is_an_error(tmp_path):
    _write(tmp_path / "a.txt", "")
    _write(tmp_path / "b.txt", "one paragraph\n")
    assert load_documents(str(tmp_path / "*.txt")) == ["one paragraph\n"]
    _write(tmp_path / "b.txt", "\n\n")
    with pytest.raises(
        ValueError,
        match=r"Empty corpus: none of the 2 files of .*\*\.txt.*a\.txt is empty.*b\.txt holds only blank",
    ):
        load_documents(str(tmp_path / "*.txt"))


def test_glob_that_matches_only_folders(tmp_path):
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No files match the pattern .*\*\.jsonl"):
        load_documents(str(tmp_path / "*.jsonl"))


def _single_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_train_cli_stops_with_one_line_on_a_broken_jsonl(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    broken = _write(tmp_path / "broken.jsonl", '{"text": "a"}\n{"text": "b"\n')
    command = [
        sys.executable,
        "train_accelerate.py",
        "--preset",
        "configuration/mixer_tiny.json",
        "--set",
        f"data.corpus={broken}",
        "--set",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    line = _single_error_line(result.stderr)
    assert broken in line and "line 2 is not valid JSON" in line


def test_report_cli_stops_with_one_line_on_bad_data(tmp_path, tokenizer, capsys):
    from evaluation.report import main
    from modeling_memmix import MixerConfig, MixerForCausalLM

    model = MixerForCausalLM(
        MixerConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, n_ctx=8)
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    cases = {
        _write(tmp_path / "empty.txt", ""): "is empty (0 bytes)",
        _write(tmp_path / "broken.jsonl", '{"text": "a"}\n{"text" "b"}\n'): "line 2 is not valid JSON",
        str(tmp_path / "nothing*.jsonl"): "No files match the pattern",
    }
    for data, problem in cases.items():
        capsys.readouterr()
        code = main(
            [
                "--model",
                str(tmp_path / "model"),
                "--data",
                data,
                "--out",
                str(tmp_path / "out"),
                "--no_progress",
            ]
        )
        line = _single_error_line(capsys.readouterr().err)
        assert code == 2 and data in line and problem in line, line


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_is_deterministic_and_specials_come_first(small_documents, tokenizer):
    again = train_tokenizer(small_documents, vocab_size=SMALL_VOCAB)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert len(tokenizer) == SMALL_VOCAB
    assert tokenizer.convert_tokens_to_ids(END_OF_TEXT) == 0
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == tokenizer.pad_token_id == 0


def test_tokenizer_round_trip_and_auto_tokenizer_load(tmp_path, small_documents, tokenizer):
    ids = tokenizer(MULTIBYTE_TEXT, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == MULTIBYTE_TEXT
    assert ids[0] != tokenizer.eos_token_id  # nothing is prepended

    folder = tmp_path / "tok"
    trained = load_or_train_tokenizer(str(folder), small_documents, vocab_size=SMALL_VOCAB)
    loaded = AutoTokenizer.from_pretrained(str(folder))
    assert loaded(MULTIBYTE_TEXT, add_special_tokens=False)["input_ids"] == ids
    assert loaded.eos_token == END_OF_TEXT and loaded.pad_token_id == 0
    reused = load_or_train_tokenizer(str(folder), ["unused, must not be trained on"], vocab_size=SMALL_VOCAB)
    assert reused.backend_tokenizer.to_str() == trained.backend_tokenizer.to_str()


def test_exact_byte_counts_for_multibyte_text(tokenizer):
    lengths = token_byte_lengths(tokenizer)
    assert lengths.shape == (len(tokenizer),) and lengths.dtype == torch.long
    assert lengths[0] == 1 and (lengths[1:] >= 1).all()
    ids = tokenizer(MULTIBYTE_TEXT, add_special_tokens=False)["input_ids"]
    assert token_bytes(tokenizer, ids) == MULTIBYTE_TEXT.encode("utf-8")
    assert int(lengths[torch.tensor(ids)].sum()) == len(MULTIBYTE_TEXT.encode("utf-8"))
    assert len(MULTIBYTE_TEXT.encode("utf-8")) > len(MULTIBYTE_TEXT)  # the test really is multi-byte
    with_special = ids + [tokenizer.eos_token_id] + ids
    expected = MULTIBYTE_TEXT.encode() + b"\n" + MULTIBYTE_TEXT.encode()
    assert token_bytes(tokenizer, with_special) == expected
    assert token_bytes(tokenizer, torch.tensor(with_special)) == expected
    every_id = torch.arange(len(tokenizer))
    assert int(lengths.sum()) == len(token_bytes(tokenizer, every_id))


# --- split and packing -----------------------------------------------------------------------


def test_split_is_by_document_deterministic_and_never_empty():
    documents = [f"document number {i}" for i in range(200)] + ["document number 3"]  # one duplicate
    train, validation = split_documents(documents, validation_fraction=0.1, seed=0)
    assert not set(train) & set(validation)
    assert len(train) + len(validation) == len(documents)
    assert 5 <= len(validation) <= 40
    assert split_documents(documents, 0.1, seed=0) == (train, validation)
    assert split_documents(documents, 0.1, seed=1) != (train, validation)
    tiny_train, tiny_validation = split_documents(["a", "b"], validation_fraction=0.01)
    assert len(tiny_train) == 1 and len(tiny_validation) == 1
    with pytest.raises(ValueError, match="at least 2 distinct"):
        split_documents(["same", "same"])
    with pytest.raises(ValueError, match="validation_fraction"):
        split_documents(documents, validation_fraction=1.0)


def test_keep_fraction_is_nested_ordered_and_never_empty():
    documents = [f"training document {i}" for i in range(400)]
    quarter, half = keep_fraction(documents, 0.25), keep_fraction(documents, 0.5)
    assert set(quarter) < set(half) < set(documents)  # nested subsets for a data-scaling curve
    assert 60 <= len(quarter) <= 140 and 160 <= len(half) <= 240
    assert half == [doc for doc in documents if doc in set(half)]  # order kept
    assert keep_fraction(documents, 0.5) == half and keep_fraction(documents, 0.5, seed=1) != half
    assert keep_fraction(documents, 1.0) == documents
    assert len(keep_fraction(["only one", "and two"], 1e-9)) == 1
    # salted apart from the split: the kept quarter is not the quarter the split holds out
    _, held_out = split_documents(documents, validation_fraction=0.25)
    assert len(set(keep_fraction(documents, 0.25)) & set(held_out)) < len(held_out) / 2
    for bad in (0, -0.5, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"train_fraction=.* must be a share of the training documents"):
            keep_fraction(documents, bad)


def test_train_fraction_cuts_only_the_train_windows(tmp_path, small_documents, tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in small_documents[:80]), encoding="utf-8")
    cache = tmp_path / "cache"
    build = functools.partial(load_or_build_windows, str(corpus), tokenizer, window=32, cache_dir=cache)
    full, half = build(split="train"), build(split="train", train_fraction=0.5)
    assert not half.from_cache and 0.2 * len(full) < len(half) < 0.8 * len(full)
    assert build(split="train", train_fraction=0.5).from_cache and build(split="train").from_cache
    validation = build(split="validation")
    cut_validation = build(split="validation", train_fraction=0.5)
    assert cut_validation.from_cache and torch.equal(cut_validation.input_ids, validation.input_ids)
    with pytest.raises(ValueError, match="train_fraction=0"):
        build(split="validation", train_fraction=0)


def test_pack_windows_shapes_bytes_and_dataloader(small_documents, tokenizer):
    documents = small_documents[:40]
    window = 64
    packed = pack_documents(documents, tokenizer, window)
    stream_tokens = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) + 1 for d in documents)
    assert packed.input_ids.shape == (stream_tokens // window, window)
    assert packed.num_bytes.shape == (len(packed),)
    lengths = token_byte_lengths(tokenizer)
    assert torch.equal(packed.num_bytes, lengths[packed.input_ids].sum(dim=1))
    for row in range(3):
        assert len(window_text_bytes(tokenizer, packed.input_ids[row])) == int(packed.num_bytes[row])
    # the windows are the documents' bytes in order, each followed by the boundary byte
    joined = b"".join(d.encode() + b"\n" for d in documents)
    assert joined.startswith(b"".join(window_text_bytes(tokenizer, row) for row in packed.input_ids))
    assert (packed.input_ids == tokenizer.eos_token_id).sum() >= 1

    batch = next(iter(torch.utils.data.DataLoader(packed, batch_size=4)))
    assert batch["input_ids"].shape == (4, window) and batch["num_bytes"].shape == (4,)
    assert torch.equal(batch["labels"], batch["input_ids"])

    padded = pack_documents(documents, tokenizer, window, drop_remainder=False)
    remainder = stream_tokens % window
    assert len(padded) == len(packed) + (remainder > 0)
    assert int(padded.num_bytes.sum()) == len(joined)
    assert int(padded.num_tokens.sum()) == stream_tokens
    assert (padded[len(padded) - 1]["labels"] == -100).sum() == window - remainder


def test_too_little_text_says_how_many_tokens(tokenizer):
    from memmix_data import TooLittleTextError

    with pytest.raises(TooLittleTextError, match=r"give \d+ tokens.*needs 4096") as info:
        pack_documents(["short text"], tokenizer, window=4096)
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working


def test_windows_cache_is_reused_and_keyed(tmp_path, small_documents, tokenizer):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in small_documents[:60]), encoding="utf-8")
    cache = tmp_path / "cache"
    first = load_or_build_windows(str(corpus), tokenizer, window=32, split="train", cache_dir=cache)
    assert not first.from_cache
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # no temporary file is left behind
    mtime = os.stat(files[0]).st_mtime_ns

    second = load_or_build_windows(str(corpus), tokenizer, window=32, split="train", cache_dir=cache)
    assert isinstance(second, PackedWindows) and second.from_cache and second.window == 32
    assert torch.equal(second.input_ids, first.input_ids) and torch.equal(second.num_bytes, first.num_bytes)
    assert os.stat(files[0]).st_mtime_ns == mtime

    validation = load_or_build_windows(str(corpus), tokenizer, window=32, split="validation", cache_dir=cache)
    assert not validation.from_cache and len(validation) < len(first)
    corpus.write_text(
        corpus.read_text(encoding="utf-8") + "\n" + json.dumps({"text": "new"}), encoding="utf-8"
    )
    changed = load_or_build_windows(str(corpus), tokenizer, window=32, split="train", cache_dir=cache)
    assert not changed.from_cache
    assert len(list(cache.iterdir())) == 3


def test_hub_id_with_datasets_offline_mode_gives_clear_error(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as if set before `datasets` was imported
    with pytest.raises(
        HubUnreachableError, match=r"no-such-dataset.*Hub cannot be reached.*OfflineModeIsEnabled"
    ):
        load_documents("memmix-test-org/no-such-dataset")


def test_interrupted_cache_write_leaves_no_file(tmp_path, monkeypatch, small_documents, tokenizer):
    import memmix_data.packing as packing

    def write_half_then_crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in small_documents[:20]), encoding="utf-8")
    monkeypatch.setattr(packing, "save_file", write_half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        load_or_build_windows(str(corpus), tokenizer, window=32, split="train", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    rebuilt = load_or_build_windows(
        str(corpus), tokenizer, window=32, split="train", cache_dir=tmp_path / "cache"
    )
    assert not rebuilt.from_cache and len(rebuilt) > 0
