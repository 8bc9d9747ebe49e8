"""Text corpora for memmix: a built-in offline corpus and a loader for local files and Hub datasets.

The built-in corpus (`"builtin"`) is English documentation text read deterministically from the
local Python installation, so tests and first runs need no download. Everything else goes through
`datasets.load_dataset`:

- `*.txt` files (paths or globs): one document per blank-line-separated paragraph block
  (`datasets` text loader with `sample_by="paragraph"`).
- `*.json` / `*.jsonl` files: one document per record, text taken from `text_column`. A file is
  either JSON lines (one object per line; blank lines are skipped) or one top-level array of
  objects (a `.json` file may also hold one pretty-printed object).
- `*.parquet` files: one document per row, text taken from `text_column`.

Every local file is checked before `datasets` reads it (`check_local_files`), so bad input stops with
a ValueError that names the file and the problem instead of a `DatasetGenerationError` traceback:
invalid UTF-8 (with the byte offset), a line that is not JSON (with its line number), a record that is
not an object, lacks `text_column` or holds a non-string text (with its line or record number), a
parquet file that cannot be read or lacks the column, and a spec whose files hold no text at all
(empty files, only blank lines, no records, no rows). A record whose text is null or empty is an empty
document and is skipped, as are empty files next to non-empty ones in a glob.
- anything else is a Hub dataset id, optionally with a config name after a colon:
  `"HuggingFaceFW/fineweb-edu:sample-10BT"` means `load_dataset("HuggingFaceFW/fineweb-edu",
  "sample-10BT", split=split, streaming=streaming)`.

A list of specs loads each one in turn and chains the documents.
"""

from __future__ import annotations

import ast
import codecs
import functools
import glob
import hashlib
import inspect
import itertools
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from memmix_hub import (
    DATASETS_OFFLINE_ENV_VARS,
    HubUnreachableError,
    hub_is_offline,
    hub_unreachable,
    is_connection_error,
)

BUILTIN_SPEC = "builtin"
MIN_BUILTIN_DOCUMENT_CHARS = 200
# Folders of the standard library that hold tests, tools, vendored packages or generated data.
_SKIPPED_STDLIB_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "lib-dynload",
        "turtledemo",
        "ensurepip",
        "pydoc_data",
        "lib2to3",
    }
)
# Folders of an installed package that hold tests or vendored copies of other packages.
_SKIPPED_PACKAGE_DIRS = frozenset({"test", "tests", "testing", "__pycache__", "_vendor", "vendor", "vendored"})
_LOADERS_BY_SUFFIX = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_UTF8_CHECK_CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------------
# Built-in corpus
# ---------------------------------------------------------------------------------------------


def _source_files(root: Path, skipped_dirs: frozenset[str]) -> list[Path]:
    """Python source files under ``root`` in sorted, platform-independent order, outside ``skipped_dirs``
    and test files."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in skipped_dirs and not d.startswith("config-"))
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("test_"):
                found.append(Path(directory) / name)
    return found


def _stdlib_source_files() -> list[Path]:
    """Python source files of the standard library in sorted, platform-independent order."""
    return _source_files(Path(sysconfig.get_paths()["stdlib"]), _SKIPPED_STDLIB_DIRS)


def _docstrings_of_source(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file, parsed with `ast` (never imported)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = (
        ast.get_docstring(node, clean=True) for node in ast.walk(tree) if isinstance(node, documented)
    )
    return [doc for doc in docstrings if doc]


def _pydoc_topics() -> list[str]:
    """The help topics of `pydoc_data` (the language reference sections), sorted by topic name."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _kept_documents(texts: Iterable[str]) -> tuple[str, ...]:
    """Cleaned texts of at least `MIN_BUILTIN_DOCUMENT_CHARS`, exact duplicates dropped, first-seen order kept."""
    candidates = (inspect.cleandoc(text).strip() for text in texts)
    return tuple(dict.fromkeys(text for text in candidates if len(text) >= MIN_BUILTIN_DOCUMENT_CHARS))


@functools.lru_cache(maxsize=1)
def _builtin_documents_tuple() -> tuple[str, ...]:
    texts = itertools.chain.from_iterable(_docstrings_of_source(path) for path in _stdlib_source_files())
    return _kept_documents(itertools.chain(texts, _pydoc_topics()))


def builtin_documents() -> list[str]:
    """The built-in corpus: stdlib docstrings and pydoc topics of this Python (about 1.7 MB on 3.11).

    Deterministic for a given Python installation; computed once per process.
    """
    return list(_builtin_documents_tuple())


def package_docstrings(root: str | os.PathLike) -> list[str]:
    """The built-in corpus's recipe applied to any source tree: the docstrings (at least 200 characters, exact
    duplicates dropped) of every Python file under ``root``, in sorted path order, outside test and vendored
    folders. For corpora larger than the built-in one (e.g. installed packages, in data-scaling runs)."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"No source folder {str(root)!r} to read docstrings from")
    files = _source_files(Path(root), _SKIPPED_PACKAGE_DIRS)
    return list(_kept_documents(itertools.chain.from_iterable(_docstrings_of_source(path) for path in files)))


@functools.lru_cache(maxsize=1)
def builtin_fingerprint() -> str:
    """sha256 of the built-in corpus text, for cache keys."""
    digest = hashlib.sha256()
    for document in _builtin_documents_tuple():
        digest.update(document.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Local files and Hub datasets
# ---------------------------------------------------------------------------------------------


def _scan_utf8(path: str | os.PathLike) -> bool:
    """Strict UTF-8 check of a whole file; True when it holds any non-whitespace character.

    Raises ValueError naming the file and the byte offset of the first byte that is not valid UTF-8.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    has_text = False
    with _open_for_check(path) as handle:
        while chunk := handle.read(_UTF8_CHECK_CHUNK_BYTES):
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad = offset - pending + err.start
                raise ValueError(f"{path} is not valid UTF-8: undecodable byte at offset {bad}") from err
            has_text = has_text or bool(text.strip())
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as err:
            pending = len(decoder.getstate()[0])
            raise ValueError(
                f"{path} is not valid UTF-8: truncated character at offset {offset - pending}"
            ) from err
    return has_text


def check_utf8(path: str | os.PathLike) -> None:
    """Raise ValueError naming the file and byte offset of the first byte that is not valid UTF-8."""
    _scan_utf8(path)


def _open_for_check(path: str | os.PathLike, encoding: str | None = None):
    """`open` for reading, with an OSError (permissions, a folder, ...) turned into a ValueError naming the file."""
    try:
        return open(path, "rb") if encoding is None else open(path, encoding=encoding)
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from err


def _check_text_file(path: str, text_column: str) -> tuple[int, str]:
    """(1, "") when a .txt file holds text, (0, why not) when it is empty or only whitespace."""
    if not _scan_utf8(path):
        return 0, "is empty (0 bytes)" if os.path.getsize(path) == 0 else "holds only blank lines"
    return 1, ""


_JSON_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
}


def _json_type(value) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _check_record(record, where: str, text_column: str) -> None:
    """A JSON record must be an object whose `text_column` is a string (or null: an empty document)."""
    if not isinstance(record, dict):
        raise ValueError(
            f"{where} holds a JSON {_json_type(record)}, not an object with a {text_column!r} field"
        )
    if text_column not in record:
        raise ValueError(
            f"{where} has no field {text_column!r} (its fields: {sorted(record)}); name the field that holds "
            "the text with text_column (train: data.text_column, report: --text_column)"
        )
    text = record[text_column]
    if text is not None and not isinstance(text, str):
        raise ValueError(
            f"{where}: field {text_column!r} holds a JSON {_json_type(text)} ({json.dumps(text)[:40]}), not a string"
        )


def _first_non_space(path: str) -> str:
    """The first non-whitespace character of a UTF-8 file (a leading byte-order mark skipped), or ""."""
    with _open_for_check(path, encoding="utf-8-sig") as handle:
        while chunk := handle.read(1 << 16):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    return ""


def _json_error(where: str, err: json.JSONDecodeError) -> ValueError:
    return ValueError(f"{where} is not valid JSON: {err.msg} (column {err.colno})")


def _check_json_array(path: str, text_column: str) -> int:
    """A file holding one JSON value (a top-level array of records, or one object); returns the records."""
    with _open_for_check(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _json_error(f"{path} line {err.lineno}", err) from err
    records = value if isinstance(value, list) else [value]
    for number, record in enumerate(records, start=1):
        _check_record(record, f"{path} record {number}", text_column)
    return len(records)


def _check_json_file(path: str, text_column: str) -> tuple[int, str]:
    """(number of records, why there are none) of a JSON / JSON-lines file; ValueError at the first bad line."""
    check_utf8(path)
    first = _first_non_space(path)
    if first == "":
        return 0, "is empty (0 bytes)" if os.path.getsize(path) == 0 else "holds only blank lines"
    if first == "[":
        count = _check_json_array(path, text_column)
        return count, "holds an empty JSON array" if count == 0 else ""
    count = 0
    with _open_for_check(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                if Path(path).suffix.lower() == ".json" and count == 0:
                    # not JSON lines: a .json file may hold one pretty-printed object over many lines
                    return _check_json_array(path, text_column), ""
                raise _json_error(f"{path} line {number}", err) from err
            _check_record(record, f"{path} line {number}", text_column)
            count += 1
    return count, ""


def _check_parquet_file(path: str, text_column: str) -> tuple[int, str]:
    """(number of rows, why there are none) of a parquet file; ValueError when it cannot be read or lacks
    a text column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path} is not a readable parquet file: {err}") from err
    schema = parquet.schema_arrow
    if text_column not in schema.names:
        raise ValueError(f"{path} has no column {text_column!r}; available columns: {schema.names}")
    column_type = schema.field(text_column).type
    text_types = (pa.types.is_string, pa.types.is_large_string, pa.types.is_null)
    if hasattr(pa.types, "is_string_view"):
        text_types += (pa.types.is_string_view,)
    if not any(is_type(column_type) for is_type in text_types):
        raise ValueError(f"{path}: column {text_column!r} holds {column_type} values, not text")
    rows = parquet.metadata.num_rows
    return rows, "holds no rows" if rows == 0 else ""


_FILE_CHECKS = {"text": _check_text_file, "json": _check_json_file, "parquet": _check_parquet_file}


def check_local_files(
    files: list[str], loader: str, text_column: str = "text", spec: str | None = None
) -> None:
    """Check local corpus files before `datasets` reads them; ValueError naming the file and the problem.

    `loader` is "text", "json" or "parquet" (see the module docstring for what each check covers).
    Files without any document are allowed next to files with documents; when no file of the spec
    holds a document the error names them.
    """
    if loader not in _FILE_CHECKS:
        raise ValueError(f"loader must be one of {sorted(_FILE_CHECKS)}, got {loader!r}")
    results = [(path, *_FILE_CHECKS[loader](path, text_column)) for path in files]
    if any(count for _, count, _ in results):
        return
    if len(results) == 1:
        path, _, why = results[0]
        raise ValueError(f"Empty corpus: {path} {why}, no documents to read")
    listed = "; ".join(f"{path} {why}" for path, _, why in results[:3])
    more = f"; and {len(results) - 3} more" if len(results) > 3 else ""
    raise ValueError(
        f"Empty corpus: none of the {len(results)} files of {spec or files!r} holds a document: {listed}{more}"
    )


def _root_cause(err: BaseException) -> BaseException:
    seen = {id(err)}
    while (err.__cause__ or err.__context__) is not None and id(err.__cause__ or err.__context__) not in seen:
        err = err.__cause__ or err.__context__
        seen.add(id(err))
    return err


def _looks_like_local_spec(spec: str) -> bool:
    return Path(spec).suffix.lower() in _LOADERS_BY_SUFFIX or os.path.exists(spec)


def _resolve_local_files(spec: str) -> list[str]:
    """The files a path or glob names, sorted; FileNotFoundError when there are none."""
    if glob.has_magic(spec):
        files = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f"No files match the pattern {spec!r}")
        return files
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"Corpus file not found: {spec!r}")
    return [spec]


def _loader_for(files: list[str]) -> str:
    suffixes = {Path(f).suffix.lower() for f in files}
    loaders = {_LOADERS_BY_SUFFIX.get(s) for s in suffixes}
    if None in loaders or len(loaders) != 1:
        raise ValueError(
            f"Cannot load {files[:3]}...: supported file types are {sorted(_LOADERS_BY_SUFFIX)}, "
            f"one type per spec (got {sorted(suffixes)})"
        )
    return loaders.pop()


def _load_local(spec: str, text_column: str, streaming: bool):
    import datasets

    files = _resolve_local_files(spec)
    loader = _loader_for(files)
    check_local_files(files, loader, text_column, spec)
    options = {"sample_by": "paragraph"} if loader == "text" else {}
    try:
        return datasets.load_dataset(loader, data_files=files, split="train", streaming=streaming, **options)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as err:
        # the checks above should have caught it; still never let a bare "error while generating" through
        cause = _root_cause(err)
        names = files[0] if len(files) == 1 else f"the {len(files)} files of {spec!r}"
        raise ValueError(f"Cannot read {names}: {type(cause).__name__}: {cause}") from err


def _hub_unreachable(spec: str, reason: str) -> HubUnreachableError:
    return hub_unreachable(
        f"Cannot load the Hub dataset {spec!r}", reason,
        "Use local files instead (*.txt, *.json, *.jsonl, *.parquet paths or globs) or 'builtin'.",
    )


def _load_hub(spec: str, split: str, streaming: bool):
    """A Hub dataset; offline, only a copy already in the `datasets` cache can load."""
    import datasets

    if hub_is_offline(DATASETS_OFFLINE_ENV_VARS) and not datasets.config.HF_HUB_OFFLINE:
        # Offline mode was switched on after `datasets` was imported, so `datasets` would still try
        # the network (and retry for a while); fail at once instead.
        raise _hub_unreachable(spec, "offline mode is set by HF_HUB_OFFLINE / HF_DATASETS_OFFLINE")
    name, _, config = spec.partition(":")
    try:
        return datasets.load_dataset(name, config or None, split=split, streaming=streaming)
    except Exception as err:
        if is_connection_error(err):
            raise _hub_unreachable(spec, f"{type(err).__name__}: {err}") from err
        raise


def _column_names(dataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)  # streaming datasets may not know their columns up front
    return list(first) if first is not None else []


def _texts_of(dataset, spec: str, text_column: str) -> Iterator[str]:
    columns = _column_names(dataset)
    if text_column not in columns:
        raise ValueError(f"Corpus {spec!r} has no column {text_column!r}; available columns: {columns}")
    if hasattr(dataset, "select_columns"):
        dataset = dataset.select_columns([text_column])
    for row in dataset:
        text = row[text_column]
        if text is not None and not isinstance(text, str):
            raise ValueError(
                f"Column {text_column!r} of {spec!r} holds {type(text).__name__} values, not text"
            )
        if text is not None and text.strip():
            yield text


def _documents_of_spec(spec: str, text_column: str, split: str, streaming: bool) -> Iterator[str]:
    if spec == BUILTIN_SPEC:
        return iter(builtin_documents())
    if _looks_like_local_spec(spec):
        return _texts_of(_load_local(spec, text_column, streaming), spec, text_column)
    return _texts_of(_load_hub(spec, split, streaming), spec, text_column)


def load_documents(
    spec: str | list[str],
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
    max_documents: int | None = None,
) -> Iterator[str] | list[str]:
    """Documents (non-empty strings) of a corpus spec; see the module docstring for the spec syntax.

    Returns a list, or a lazy iterator when `streaming=True`. `split` is the Hub dataset split.
    Raises FileNotFoundError for missing files or a glob that matches none, ValueError for an empty
    corpus or a bad local file (see `check_local_files`: the message names the file, and the line of a
    bad JSON line) or a missing text column, HubUnreachableError when a Hub id is given offline.
    """
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be at least 1 or None, got {max_documents}")
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise ValueError("Empty corpus: no corpus spec given")
    # Open every spec up front so a missing file or an unreachable Hub fails before any work is done.
    per_spec = [_documents_of_spec(one, text_column, split, streaming) for one in specs]
    documents: Iterable[str] = itertools.chain.from_iterable(per_spec)
    documents = itertools.islice(documents, max_documents)
    first = next(documents, None)
    if first is None:
        raise ValueError(f"Empty corpus: {spec!r} contains no non-empty documents")
    documents = itertools.chain([first], documents)
    return documents if streaming else list(documents)
