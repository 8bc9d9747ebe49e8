"""Markdown text of a memmix evaluation report (the dict built by `evaluation.reporting.build_report`).

Numbers are printed with 4 decimals; report.json keeps them in full.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def _number(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A Markdown table; floats get 4 decimals."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _split_text(data: dict) -> str:
    if data["split"] == "all":
        return f"every document, no train/validation split ({data['documents_evaluated']} documents)"
    share = data.get("train_fraction")
    share_text = f", train_fraction={share}" if data["split"] == "train" and share not in (None, 1.0) else ""
    return (f"{data['split']} split ({data['documents_evaluated']} documents, "
            f"validation_fraction={data['validation_fraction']}, split_seed={data['split_seed']}{share_text})")


def _header(report: dict) -> str:
    data = report["data"]
    config = ", ".join(f"{key}={value}" for key, value in report["config"].items())
    lines = [f"# Evaluation report: `{report['model']}`", "", f"- family: **{report['family']}** ({config})"]
    if data.get("scoring") == "documents":
        lines += [
            f"- data: `{data['spec']}`, {_split_text(data)}; scoring: **documents**, each document alone in "
            f"{data['windows']} rolling windows of at most {data['window_tokens']} tokens, stride {data['stride']}",
            "- scored: every token of every document, the first one given the end-of-text token put in front "
            "(as lm-evaluation-harness's loglikelihood_rolling); bits per byte divide by the documents' UTF-8 "
            "bytes, and the compressors read exactly those bytes",
        ]
        return "\n".join(lines)
    scored = "all tokens" if data["scored_from_token"] == 0 else "every token but the first of each window"
    lines += [
        f"- data: `{data['spec']}`, {_split_text(data)}, {data['windows']} windows of {data['window_tokens']} tokens",
        f"- scored: {scored}; bits per byte divide by the exact raw bytes of the scored tokens, and the "
        "compressors read exactly those bytes",
    ]
    return "\n".join(lines)


def _bits_per_byte_section(report: dict) -> str:
    rows = sorted(report["bits_per_byte"].items(), key=lambda item: item[1])
    text = ["## Bits per byte (lower is better)", "", table(["method", "bits per byte"], rows)]
    compressors = report.get("compressors")
    if compressors:
        unit = compressors.get("unit", "window")
        text += ["", f"Compressors on {compressors['bytes']} bytes: each {unit} alone (`per_{unit}`), all {unit}s "
                 "as one stream (`stream`)"]
        if compressors["primer_bytes"]:
            text[-1] += (", and `primed`: size(primer + stream) - size(primer), primer = "
                         f"{compressors['primer_bytes']} bytes ({compressors['primer_source']}).")
        else:
            text[-1] += f"; primed setting {compressors['primer_source'] or 'off (no primer)'}."
    return "\n".join(text)


def _mixer_section(results: dict) -> str:
    summary = results["summary"]
    return "\n".join(["## Causal LM", "", table(
        ["cross-entropy (nats/token)", "bits per byte", "scored tokens", "scored bytes"],
        [[summary["cross_entropy"], summary["bits_per_byte"], summary["tokens"], summary["bytes"]]],
    )])


def _autoencoder_section(results: dict) -> str:
    rows = [
        [embedding_format, v["bits_per_value"], v["bits_per_vector"], v["cross_entropy"], v["hamming_accuracy"],
         v["information_retained"], v["embedding_bits_per_byte"], v["embedding_bits_per_byte_formula"],
         v["total_bits_per_byte"]]
        for embedding_format, v in results["formats"].items()
    ]
    formula = results["embedding_bits_per_byte_formula"]
    return "\n".join([
        "## Autoencoder", "",
        f"Embedding of {results['embedding_dim']} values per window; the configured storage format is "
        f"`{results['summary']['embedding_format']}`. Each row decodes the embedding read back from that format.",
        "",
        table(["format", "bits/value", "stored bits/window", "reconstruction CE", "Hamming accuracy", "I_e",
               "embedding bpb (stored)", "embedding bpb (n_p*b_p)", "total bpb (stored + residual)"], rows),
        "",
        "Embedding cost from the formula n_p * b_p / (n_ctx * bytes/token):",
        "",
        table(["bits per value", *formula.keys()], [["embedding bits per byte", *formula.values()]]),
        *_position_lines(results.get("per_position")),
    ])


def _position_lines(per_position: dict | None) -> list[str]:
    """Token accuracy in each quarter of the window (configured format): where the embedding's information ends."""
    if not per_position:
        return []
    accuracy = per_position["token_accuracy"]
    bounds = [len(accuracy) * quarter // 4 for quarter in range(5)]
    spans = [(start, end) for start, end in zip(bounds, bounds[1:]) if end > start]
    return ["", "Token accuracy by quarter of the window (configured format; every position in "
                "`window_positions.png`):", "",
            table(["positions", *(f"{start + 1}-{end}" for start, end in spans)],
                  [["token accuracy", *(sum(accuracy[start:end]) / (end - start) for start, end in spans)]])]


def _memory_section(results: dict) -> str:
    per_chunk = results["per_chunk"]
    rows = [
        [index + 1, with_memory["cross_entropy"], removed["cross_entropy"], with_memory["bits_per_byte"],
         removed["bits_per_byte"]]
        for index, (with_memory, removed) in enumerate(zip(per_chunk["with_memories"], per_chunk["memories_removed"]))
    ]
    removed_meaning = (
        "each chunk's memory slot filled with zeros instead of its own embedding"
        if results["memory_mode"] == "oracle"
        else "each chunk decoded alone, like a sequence's first chunk"
    )
    text = [
        "## Memory model", "",
        f"memory_mode={results['memory_mode']}, {results['num_chunks']} chunks of {results['chunk_tokens']} tokens. "
        f"Chunk c is scored on the predictions its decoder pass makes. Memories removed: {removed_meaning}.",
        "",
        table(["chunk", "CE with memories", "CE memories removed", "bpb with memories", "bpb memories removed"], rows),
        "",
        f"Whole windows: {results['summary']['bits_per_byte']:.4f} bits per byte with memories, "
        f"{results['memories_removed']['bits_per_byte']:.4f} with memories removed.",
    ]
    if "oracle" in results:
        oracle_rows = [
            [embedding_format, v["cross_entropy"], v["bits_per_vector"], v["normalized_loss"], v["normalized_loss_formula"],
             v["total_bits_per_byte"]]
            for embedding_format, v in results["oracle"].items()
        ]
        text += ["", "### Oracle mode: normalized loss (CE + embedding cost, nats/token)", "",
                 table(["memory format", "CE", "stored bits/chunk", "normalized loss (stored size)",
                        "normalized loss (n_p*b_p)", "total bpb"], oracle_rows)]
    copy = results["copy_task"]
    text += ["", "### Copy task", "",
             f"{copy['windows']} windows [a, a] of 2 x {copy['half_tokens']} tokens (loss in nats/token).", "",
             table(["first half", "second half (repeat)", "second half, memories removed"],
                   [[copy["first_half_loss"], copy["second_half_loss"],
                     copy.get("second_half_loss_memories_removed", "n/a")]])]
    if "chunk_recall" in results:
        recall = results["chunk_recall"]
        text += ["", "### Chunk recall", "",
                 f"{recall['windows']} windows in which one chunk repeats an earlier one; loss (nats/token) on the "
                 "repeated tokens the repeating chunk's pass predicts, against the same text decoded alone.", "",
                 table(["repeated chunk", "repeats chunk", "loss", "decoded alone", "recall gain"],
                       [[pair["target"] + 1, pair["source"] + 1, pair["repeat_loss"], pair["alone_loss"],
                         pair["recall_gain"]] for pair in recall["pairs"]])]
    return "\n".join(text)


FAMILY_SECTIONS = {"mixer": _mixer_section, "autoencoder": _autoencoder_section, "memory": _memory_section}


def _documents_section(results: dict) -> str:
    summary = results["summary"]
    return "\n".join(["## Documents (each scored alone)", "", table(
        ["cross-entropy (nats/token)", "bits per byte", "documents", "scored tokens", "bytes", "windows",
         "max length", "stride"],
        [[summary["cross_entropy"], summary["bits_per_byte"], summary["documents"], summary["tokens"],
          summary["bytes"], summary["windows"], summary["max_length"], summary["stride"]]],
    ), "", "The window diagnostics (trivial-encoding test, memory per-chunk losses, copy task) run with "
       "the default `--scoring windows`."])


def _trivial_section(trivial: dict) -> str:
    return "\n".join([
        "## Trivial-encoding test", "",
        f"Loss (nats/token) on {trivial['windows']} windows of uniformly random token ids vs real windows; "
        "a model that learned a data-free code would score both alike.", "",
        table(["random ids", "in-distribution", "ln(V)", "ratio"],
              [[trivial["random_ids_loss"], trivial["in_distribution_loss"], trivial["uniform_loss"],
                trivial["ratio"]]]),
    ])


def render_markdown(report: dict) -> str:
    """The whole report as Markdown, with the PNG charts linked."""
    documents_mode = report["data"].get("scoring") == "documents"
    sections = [
        _header(report),
        _bits_per_byte_section(report),
        _documents_section(report["results"]) if documents_mode else FAMILY_SECTIONS[report["family"]](report["results"]),
    ]
    if "trivial_encoding" in report:
        sections.append(_trivial_section(report["trivial_encoding"]))
    plots = report.get("plots") or []
    if plots:
        sections.append("## Charts\n\n" + "\n".join(f"![{name}]({name})" for name in plots))
    sections.append(f"_Evaluated in {report['seconds']} s._")
    return "\n\n".join(sections) + "\n"
