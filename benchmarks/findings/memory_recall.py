"""Can a memory model's decoder find the memory it needs, or only read one it is pointed at? Chunk recall of
memory-model runs of train_accelerate.py that differ in which earlier chunk recall training copies
(``train.repeat_source``), scored on one set of held-out windows, as a table, a JSON file and a PNG::

    python train_accelerate.py --preset configuration/memory_32_recall.json
    python train_accelerate.py --preset configuration/memory_32_recall.json --set train.repeat_source=first \\
        --set train.output_dir=runs/memory_32_recall_first
    python benchmarks/findings/memory_recall.py runs/memory_32_recall runs/memory_32_recall_first \\
        --out docs/findings/memory_recall

For every pair ``source < target`` of chunks, held-out windows get chunk ``target`` overwritten by chunk ``source``
(`evaluation.evaluators.evaluate_chunk_recall`); the recall gain is the loss of that text decoded alone minus its
loss as a repeat, on the tokens the repeating chunk's own pass predicts. With the seed's fixed memory layout the
memory of chunk ``s`` sits in slot ``s``, so ``repeat_source=first`` always points the decoder at slot 0, while
``any`` makes it find the slot. Runs are grouped by their recall-training source, their decoder's depth and how the decoder reads its memories
(``model.memory_read``: fixed mixing over slots, or a content-addressed attention read), seeds pooled. Each
verdict compares two settings that differ in one thing, seed by seed:

* "pointing the decoder at the memory's slot helps recall": the gain on chunks that repeat the first chunk,
  trained to look in slot 0, minus the same gain trained on any source;
* "a content-addressed read helps the decoder find the memory": the gain over every pair with an attention read
  minus the same without it, both trained on any source (one verdict per read setting);
* "a deeper decoder helps recall": the gain over every pair of a deeper slots-reading decoder minus the next
  shallower one, so a read placed deep in a deep decoder is told apart from the depth itself;
* "the read weighs the matching memory more" (per read setting): how much more chunk 3 weighs a slot when it
  repeats that slot's chunk than when it repeats the other chunk (selectivity; 0 for weights blind to
  content)::

    python train_accelerate.py --preset configuration/memory_32_recall.json --set model.memory_read=attention \
        --set model.memory_read_layer=1 --set train.output_dir=runs/memory_32_recall_read1
    python train_accelerate.py --preset configuration/memory_32_recall.json --set model.num_hidden_layers=4 \
        --set train.output_dir=runs/memory_32_recall_4blocks
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from autoencoder_data_scaling import run_config, tokenizer_fingerprint  # noqa: E402
from harness import markdown_table, seed_stats, verdict  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="memory-family run folders of train_accelerate.py with one tokenizer "
                        "and corpus (run_config.json, export/)")
    parser.add_argument("--windows", type=int, default=147, help="held-out windows scored (the first run's "
                        "validation windows; fewer when there are fewer)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--out", required=True, help="output path without suffix (.md, .json and .png are written)")
    return parser


SEARCHING = "any"  # the recall-training source that makes the decoder find the memory


def setting_of(train, model_config) -> dict:
    """What a run is grouped by: its recall-training source (its ``TrainConfig``; None without recall training),
    its decoder's depth and how the decoder reads its memories (its model config)."""
    read = getattr(model_config, "memory_read", "slots")
    return {"recall": train.repeat_source if train.repeat_chunks else None,
            "decoder_blocks": model_config.num_hidden_layers,
            "read": "slots" if read == "slots" else f"{read} before block {model_config.memory_read_layer}"}


def group_label(setting: dict) -> str:
    """The name a setting is shown and paired by, e.g. 'repeat_source=any, 2-block decoder'."""
    recall = f"repeat_source={setting['recall']}" if setting["recall"] else "no recall training"
    label = f"{recall}, {setting['decoder_blocks']}-block decoder"
    return label if setting["read"] == "slots" else f"{label}, memory_read={setting['read']}"


def held_out_windows(run: Path):
    """The validation windows of ``run``, as long as its training windows (every chunk and its memories), and the
    fingerprint of the tokenizer they were cut with."""
    from transformers import AutoConfig, AutoTokenizer

    from memmix_train.data import build_windows, window_length

    export = run / "export"
    if not (export / "config.json").is_file():
        raise SystemExit(f"error: {export} holds no exported model (did the run finish?)")
    tokenizer = AutoTokenizer.from_pretrained(export)
    model_config = AutoConfig.from_pretrained(export, trust_remote_code=True)
    windows = build_windows(run_config(run).data, tokenizer, window_length(model_config), "validation")
    return windows, tokenizer_fingerprint(tokenizer)


def score_run(run: Path, held_out_ids, tokenizer_id: str, batch_size: int) -> dict:
    """The chunk recall of ``run``'s exported model on ``held_out_ids``."""
    import torch

    from evaluation.evaluators import evaluate_chunk_recall
    from evaluation.loading import load_model_and_tokenizer

    export = run / "export"
    if not (export / "config.json").is_file():
        raise SystemExit(f"error: {export} holds no exported model (did the run finish?)")
    loaded = load_model_and_tokenizer(str(export))
    if loaded.family != "memory":
        raise SystemExit(f"error: {run} is a {loaded.family} run; chunk recall needs memory-family runs")
    if tokenizer_fingerprint(loaded.tokenizer) != tokenizer_id:
        raise SystemExit(f"error: {run} has another tokenizer than the first run; train every run with the same "
                         "data.tokenizer (or init_from_autoencoder) so the held-out windows are the same tokens")
    if loaded.model.config.memory_mode not in ("past", "recurrent"):
        raise SystemExit(f"error: {run} has memory_mode={loaded.model.config.memory_mode!r}; chunk recall needs "
                         "memories of earlier chunks (past or recurrent)")
    with torch.no_grad():
        recall = evaluate_chunk_recall(loaded.model, held_out_ids, {"batch_size": batch_size, "progress": True})
        read = read_weights_on_repeats(loaded.model, held_out_ids, batch_size)
    train = run_config(run).train
    setting = setting_of(train, loaded.model.config)
    return {"run": str(run), "group": group_label(setting), "setting": setting, "seed": train.seed, **recall,
            "read_weights": read}


REPEATS_READ = {"natural text": None, "chunk 3 = chunk 1": 0, "chunk 3 = chunk 2": 1}  # chunk 3's source


def read_weights_on_repeats(model, held_out_ids, batch_size: int) -> dict | None:
    """Where a content-addressed read looks (``memory_read="attention"``, fixed slots, 2+ memories; ``None``
    otherwise): the read's mean attention per chunk over "nothing" and each memory slot, at the chunk's token
    positions, on the held-out windows as they are and with chunk 3 overwritten by chunk 1 or by chunk 2. A read
    that finds the repeat weighs slot 1 more when chunk 3 repeats chunk 1 than when it repeats chunk 2, and slot
    2 the other way round: ``selectivity`` is the mean of those two differences (0: the read ignores content,
    1: it reads only the matching memory)."""
    config = model.config
    if getattr(model, "memory_read", None) is None or config.memory_positions != "fixed" or config.max_memories < 2:
        return None
    means = {name: mean_read_weights(model, held_out_ids, batch_size, source)
             for name, source in REPEATS_READ.items()}
    of_first, of_second = means["chunk 3 = chunk 1"][2], means["chunk 3 = chunk 2"][2]  # chunk 3: (1 + S,)
    selectivity = float((of_first[1] - of_second[1]) + (of_second[2] - of_first[2])) / 2
    return {"selectivity": round(selectivity, 4),
            "per_chunk": {name: [{"chunk": c + 1, "nothing": round(float(row[0]), 4),
                                  "slots": [round(float(x), 4) for x in row[1:]]} for c, row in enumerate(rows)]
                          for name, rows in means.items()}}


def mean_read_weights(model, held_out_ids, batch_size: int, source: int | None):
    """``(chunks, 1 + S)``: the read's mean attention at each chunk's tokens over the windows of
    ``held_out_ids``, with chunk 3 overwritten by chunk ``source + 1`` (as they are when ``source`` is None)."""
    import torch

    chunk = model.config.n_ctx
    ids = held_out_ids[:, : chunk * (model.config.max_memories + 1)].clone()
    if source is not None:
        ids[:, 2 * chunk : 3 * chunk] = ids[:, source * chunk : (source + 1) * chunk]
    captured = []
    hook = model.memory_read.register_forward_hook(
        lambda module, args, output: captured.append(module.weights(*args)[:, -chunk:].float()))
    try:
        with torch.no_grad():
            for start in range(0, ids.shape[0], batch_size):
                model(ids[start : start + batch_size].to(model.device))
    finally:
        hook.remove()
    chunks = ids.shape[1] // chunk
    weights = torch.cat([w.view(-1, chunks, *w.shape[1:]) for w in captured])  # (windows, chunks, C, 1 + S)
    return weights.mean(dim=(0, 2))


def pair_gains(score: dict) -> dict[tuple[int, int], float]:
    """(source, target) -> recall gain of one run."""
    return {(pair["source"], pair["target"]): pair["recall_gain"] for pair in score["pairs"]}


def from_first_chunk(score: dict) -> float:
    """Mean recall gain over the chunks that repeat the first chunk (its memory in slot 0)."""
    return statistics.fmean(gain for (source, _), gain in pair_gains(score).items() if source == 0)


def from_later_chunks(score: dict) -> float | None:
    """Mean recall gain over the repeats of any chunk but the first (None with only two chunks)."""
    gains = [gain for (source, _), gain in pair_gains(score).items() if source > 0]
    return statistics.fmean(gains) if gains else None


def from_every_chunk(score: dict) -> float:
    """Mean recall gain over every (source, target) pair."""
    return statistics.fmean(pair_gains(score).values())


def pooled_rows(scores: list[dict]) -> list[list]:
    """One row per group and pair: repeat loss and recall gain, mean ± std over the group's seeds."""
    groups = defaultdict(list)
    for score in scores:
        groups[score["group"]].append(score)
    rows = []
    for group, members in groups.items():
        for index, pair in enumerate(members[0]["pairs"]):
            repeat = seed_stats([m["pairs"][index]["repeat_loss"] for m in members])
            alone = seed_stats([m["pairs"][index]["alone_loss"] for m in members])
            gain = seed_stats([m["pairs"][index]["recall_gain"] for m in members])
            rows.append([group, len(members), pair["target"] + 1, pair["source"] + 1,
                         f"{repeat.mean:.3f} ± {repeat.std:.3f}", f"{alone.mean:.3f}",
                         f"{gain.mean:+.3f} ± {gain.std:.3f}"])
    return rows


def paired_verdict(scores: list[dict], treated: str, control: str, measure) -> tuple[str, list[float]]:
    """Per seed, ``measure`` of the ``treated`` group's run minus the ``control`` group's; the verdict on 'the
    treatment raises the recall gain' (positive = it does)."""
    by_seed = defaultdict(dict)
    for score in scores:
        by_seed[score["seed"]][score["group"]] = measure(score)
    effects = [groups[treated] - groups[control] for _, groups in sorted(by_seed.items())
               if treated in groups and control in groups]
    if not effects:
        return "not measured (needs runs of both groups with the same seed)", []
    return verdict(effects), effects


def comparisons(scores: list[dict]) -> list[dict]:
    """Every verdict the runs allow, each against the setting that differs in one thing: pointing at slot 0 (first
    − any source), each content-addressed read (against the slots read) and each deeper decoder (against the next
    shallower one, both reading slots), the last two trained on any source. Each: the question, its groups, the
    verdict and per-seed effects ("not measured" when no run of the control shares a seed)."""
    settings = {score["group"]: score["setting"] for score in scores}
    asked = []
    for label, setting in settings.items():
        if setting["recall"] == "first" and setting["read"] == "slots":
            asked.append((0, "pointing the decoder at the memory's slot helps recall", label,
                          group_label({**setting, "recall": SEARCHING}), from_first_chunk, "gain on repeats of chunk 1"))
        elif setting["recall"] == SEARCHING and setting["read"] != "slots":
            asked.append((1, "a content-addressed read helps the decoder find the memory", label,
                          group_label({**setting, "read": "slots"}), from_every_chunk, "gain over every pair"))
        elif setting["recall"] == SEARCHING:
            shallower = [other["decoder_blocks"] for other in settings.values() if other["recall"] == SEARCHING
                         and other["read"] == "slots" and other["decoder_blocks"] < setting["decoder_blocks"]]
            if shallower:
                asked.append((2, "a deeper decoder helps recall", label,
                              group_label({**setting, "decoder_blocks": max(shallower)}), from_every_chunk,
                              "gain over every pair"))
    results = []
    for _, question, treated, control, measure, measured in sorted(asked, key=lambda entry: entry[:3]):
        call, effects = paired_verdict(scores, treated, control, measure)
        results.append({"question": question, "treated": treated, "control": control, "measured": measured,
                        "verdict": call, "effects": effects})
    return results + selectivity_verdicts(scores)


SELECTIVE = 0.05  # the least selectivity (weight share) called content-addressed


def selectivity_verdicts(scores: list[dict]) -> list[dict]:
    """Per read setting, the call on 'the read weighs the matching memory at least SELECTIVE more', from its
    seeds' selectivity: reproduced when every seed passes SELECTIVE and the mean exceeds twice its standard error;
    refuted when the mean plus twice its standard error stays below SELECTIVE (the read is content-blind within
    that margin; needs 2+ seeds); otherwise inconclusive."""
    by_group = defaultdict(list)
    for score in sorted(scores, key=lambda score: score["seed"]):
        if score.get("read_weights"):
            by_group[score["group"]].append(score["read_weights"]["selectivity"])
    results = []
    for group, effects in sorted(by_group.items()):
        stats = seed_stats(effects)
        error = stats.std / math.sqrt(stats.n) if stats.n > 1 else float("inf")
        call = "refuted" if stats.mean + 2 * error < SELECTIVE else verdict(effects, minimum=SELECTIVE)
        results.append({"question": f"the read weighs the matching memory at least {SELECTIVE} more",
                        "treated": group, "control": "content-blind weights (selectivity 0)",
                        "measured": "selectivity", "unit": "weight", "verdict": call, "effects": effects})
    return results


def verdict_line(result: dict) -> str:
    """One markdown line of a comparison's verdict."""
    effects = result["effects"]
    effect_text = (f": {seed_stats(effects).mean:+.3f} ± {seed_stats(effects).std:.3f} "
                   f"{result.get('unit', 'nats/token')} over "
                   f"{len(effects)} seed(s) ({', '.join(f'{e:+.3f}' for e in effects)})" if effects else "")
    return (f"**Verdict on '{result['question']}'** ({result['measured']}, {result['treated']} − "
            f"{result['control']}, per seed): **{result['verdict']}**{effect_text}.")


def plot(scores: list[dict], path: Path) -> None:
    """One heat map of mean recall gain per group (rows: repeating chunk, columns: the chunk it repeats)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = defaultdict(list)
    for score in scores:
        groups[score["group"]].append(pair_gains(score))
    chunks = max(target for gains in groups[next(iter(groups))] for _, target in gains) + 1
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_axis_off()
    highest = max(max(gains.values()) for members in groups.values() for gains in members)
    for ax, (group, members) in zip(axes.flat, groups.items()):
        grid = np.full((chunks, chunks), np.nan)
        for (source, target) in members[0]:
            grid[target, source] = statistics.fmean(gains[(source, target)] for gains in members)
        image = ax.imshow(grid[1:, :-1], cmap="viridis", vmin=0, vmax=max(highest, 1e-3))
        for (row, column), value in np.ndenumerate(grid[1:, :-1]):
            if not np.isnan(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", color="white", fontsize=9)
        ax.set_xticks(range(chunks - 1), [str(c + 1) for c in range(chunks - 1)])
        ax.set_yticks(range(chunks - 1), [str(c + 2) for c in range(chunks - 1)])
        ax.set_xlabel("repeats chunk (its memory's slot + 1)")
        ax.set_ylabel("repeating chunk")
        title = group.replace(", memory_read=", ",\nread: ")
        ax.set_title(f"{title}\n({len(members)} seed{'s' if len(members) > 1 else ''})", fontsize=10)
    figure.colorbar(image, ax=axes.ravel().tolist(), label="recall gain (nats/token)")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def read_weight_lines(scores: list[dict]) -> list[str]:
    """A table of where each content-addressed read looks, and how selective it is (nothing for runs without
    one)."""
    rows = [[score["group"], score["seed"], text, entry["chunk"], f"{entry['nothing']:.3f}",
             " / ".join(f"{x:.3f}" for x in entry["slots"])]
            for score in scores if score.get("read_weights")
            for text, entries in score["read_weights"]["per_chunk"].items() for entry in entries if entry["chunk"] > 1]
    if not rows:
        return []
    selective = [[score["group"], score["seed"], f"{score['read_weights']['selectivity']:+.3f}"]
                 for score in scores if score.get("read_weights")]
    return ["## Where the content-addressed read looks", "",
            "The read's mean attention at each chunk's tokens (chunk 1 can only read 'nothing'), on the held-out "
            "windows as they are and with chunk 3 overwritten by chunk 1 or chunk 2. Selectivity: how much more "
            "chunk 3 weighs a slot when it repeats that slot's chunk than when it repeats the other, averaged over "
            "slots 1 and 2 (0: the weights ignore content; 1: only the matching memory is read).", "",
            markdown_table(["setting", "seed", "selectivity"], selective), "",
            markdown_table(["setting", "seed", "text", "chunk", "weight on nothing", "weight on slots 1 / 2 / …"],
                           rows), ""]


def main(argv: list[str] | None = None) -> int:
    import json

    args = build_parser().parse_args(argv)
    runs = [Path(run) for run in args.runs]
    held_out, tokenizer_id = held_out_windows(runs[0])
    ids = held_out.input_ids[: args.windows]
    scores = [score_run(run, ids, tokenizer_id, args.batch_size) for run in runs]
    summary = [[s["group"], s["seed"], s["run"], round(from_first_chunk(s), 4),
                "n/a" if from_later_chunks(s) is None else round(from_later_chunks(s), 4),
                round(from_every_chunk(s), 4)] for s in scores]
    results = comparisons(scores)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(scores, out.with_suffix(".png"))
    lines = [
        "# Chunk recall: can the decoder find the memory it needs?", "",
        f"Command: `python benchmarks/findings/memory_recall.py {' '.join(args.runs)} --out {args.out}`", "",
        f"{ids.shape[0]} held-out windows of {ids.shape[1]} tokens ({scores[0]['chunk_tokens']}-token chunks). "
        "In each scored window one chunk repeats an earlier one; loss in nats/token on the repeated tokens the "
        "repeating chunk's own pass predicts; 'alone' is the same text decoded with memories removed; gain = "
        "alone − repeat.", "",
        "## Per run", "",
        markdown_table(["recall training", "seed", "run", "gain, repeats of chunk 1 (slot 0)",
                        "gain, repeats of later chunks", "gain, every pair"], summary), "",
        "## Per pair (mean ± std over seeds)", "",
        markdown_table(["recall training", "seeds", "repeating chunk", "repeats chunk", "repeat loss",
                        "decoded alone", "recall gain"], pooled_rows(scores)), "",
        *(line for result in results for line in (verdict_line(result), "")),
        *read_weight_lines(scores),
        f"![chunk recall]({out.with_suffix('.png').name})", "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps({"scores": scores, "comparisons": results},
                                                   indent=1), encoding="utf-8")
    print("\n".join(lines[:-2]))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
