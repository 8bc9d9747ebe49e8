"""Smoke test of the findings scripts F1-F4 and F9 (benchmarks/findings/): each runs end to end at its ``tiny``
preset (a few steps of tiny models, one seed) in this process and writes its Markdown with a verdict, the JSON of
its numbers and the PNG. The science is in the default runs (docs/findings/); this only keeps the scripts working."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

FINDINGS = Path(__file__).resolve().parents[1] / "benchmarks" / "findings"
SCRIPTS = ["f1_causal_masks", "f2_mixer_vs_transformer_autoencoder", "f3_unroll_for_transformer_decoders",
           "f4_heads_kernel_large_embedding", "f9_trivial_encodings"]
CALLS = ("reproduced", "refuted", "inconclusive")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"findings_{name}", FINDINGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_findings_script_writes_a_verdict(name, tmp_path):
    script = load_script(name)
    assert script.main(["--size", "tiny", "--seeds", "0", "--out_dir", str(tmp_path)]) == 0
    text = (tmp_path / f"{name}.md").read_text(encoding="utf-8")
    verdict_line = next(line for line in text.splitlines() if line.startswith("**Verdict:**"))
    assert any(call in verdict_line for call in CALLS), verdict_line
    assert f"Command: `python benchmarks/findings/{name}.py --size tiny" in text
    assert "|---|" in text  # the table of variants
    results = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert results["effects"] and all(isinstance(values, list) for values in results["effects"].values())
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_autoencoder_sweep_ranks_variants_within_the_budget(tmp_path):
    """Two variants (one joined with '+') of a tiny autoencoder, a few seconds each: both are scored, the table
    and the plot are written, and an unknown variant stops before any training."""
    script = load_script("autoencoder_sweep")
    out = tmp_path / "sweep"
    argv = ["--minutes", "0.05", "--n-ctx", "8", "--eval-seconds", "1", "--eval-windows", "16",
            "--set", "hidden_size=32", "--out", str(out), "--variants"]
    assert script.main([*argv, "base", "k_4+lr_5e-3"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert {row["variant"] for row in rows} == {"base", "k_4+lr_5e-3"}
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["steps"] > 0 and row["curve"] for row in rows)
    assert next(r for r in rows if r["variant"] == "k_4+lr_5e-3")["config"]["mixer_kernel_size"] == 4
    assert "| 8 | base |" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit, match="unknown variant 'k_5'"):
        script.main([*argv, "base", "k_5"])


def test_autoencoder_windows_writes_each_run_and_resumes(tmp_path):
    """Two variants at one window, then a third with --resume: the kept runs are not retrained (their curves are
    unchanged), the new one is added, and the transformer gets half the mixer width."""
    script = load_script("autoencoder_windows")
    out = tmp_path / "autoencoder_windows"
    argv = ["--minutes", "0.03", "--windows", "8", "--hidden_size", "32", "--eval_windows", "16",
            "--eval_seconds", "1", "--out", str(out), "--variants"]
    assert script.main([*argv, "flat", "transformer"]) == 0
    first = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [(r["variant"], r["n_ctx"]) for r in first] == [("flat", 8), ("transformer", 8)]
    assert {r["variant"]: r["config"]["hidden_size"] for r in first} == {"flat": 32, "transformer": 16}
    assert script.main([*argv, "flat", "kernel", "--resume"]) == 0
    second = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert [r["variant"] for r in second] == ["flat", "kernel", "transformer"]
    assert second[0]["curve"] == first[0]["curve"]
    assert second[1]["config"]["mixer_kernel_size"] == 64 and second[1]["seed"] == 0
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["steps"] > 0 for r in second)
    assert "| 8 | kernel |" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert out.with_suffix(".png").stat().st_size > 0


def test_long_run_points_read_the_recipe_metrics_and_every_20_minute_run(tmp_path):
    """The stars: the recipe's last evaluation (as kernel, at its elapsed minutes) and each variant's 20-minute
    runs; a window the recipe's metrics already give keeps the recipe's point; a plot does not star its own rows."""
    script = load_script("autoencoder_windows")
    metrics = tmp_path / "run_metrics"
    metrics.mkdir()
    (metrics / "autoencoder_32.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 10, "val_token_accuracy": 0.5}, {"step": 20, "train_loss": 1.0, "elapsed_s": 1200.0},
        {"step": 20, "val_token_accuracy": 0.9}]) + "\n", encoding="utf-8")
    (tmp_path / "autoencoder_windows_20min.json").write_text(json.dumps([
        {"variant": "kernel", "n_ctx": 32, "seconds": 1100.0, "accuracy": 0.1},
        {"variant": "kernel", "n_ctx": 64, "seconds": 1174.0, "accuracy": 0.49},
        {"variant": "transformer", "n_ctx": 16, "seconds": 1180.0, "accuracy": 0.8}]), encoding="utf-8")
    points = script.long_run_points(metrics)
    assert points == {"kernel": {32: (20.0, 0.9), 64: (1174.0 / 60, 0.49)}, "transformer": {16: (1180.0 / 60, 0.8)}}
    # a plot of the 20-minute runs themselves stars only the others
    own = [{"variant": "kernel", "n_ctx": 64, "seconds": 1174.0}, {"variant": "transformer", "n_ctx": 16,
                                                                      "seconds": 1180.2}]
    assert script.other_long_runs(own, points) == {"kernel": {32: (20.0, 0.9)}}


def test_rerun_command_of_a_sparse_window_grid_trains_only_the_tables_runs(tmp_path):
    """Variants run at different windows: one command per set of windows (the later ones resume), never the
    product of every variant with every window; a full grid stays one command."""
    script = load_script("autoencoder_windows")
    out = tmp_path / "grid"
    sparse = [{"variant": "heads", "n_ctx": 16, "minutes": 20.0}, {"variant": "transformer", "n_ctx": 16,
                                                                     "minutes": 20.0},
              {"variant": "transformer", "n_ctx": 64, "minutes": 20.0}, {"variant": "kernel", "n_ctx": 64,
                                                                          "minutes": 20.0}]
    commands = script.rerun_command(sparse, out).split(" && ")
    assert [c.split("--windows ")[1].split(" --")[0] for c in commands] == ["16", "64", "16 64"]
    assert "--variants heads " in commands[0] and "--resume" not in commands[0]
    assert "--variants kernel " in commands[1] and commands[1].endswith("--resume")
    assert "--variants transformer " in commands[2] and f"--out {out} --resume" in commands[2]
    full = [{"variant": v, "n_ctx": n, "minutes": 4.0, "seed": 1} for v in script.VARIANTS for n in (8, 32)]
    assert script.rerun_command(full, script.FINDINGS_DIR / "autoencoder_windows") == (
        "python benchmarks/findings/autoencoder_windows.py --minutes 4 --seed 1 --windows 8 32")


def test_best_per_window_counts_the_starred_long_runs():
    """A starred run of a comparable budget that beats every row of its window is named best (marked as starred);
    a star at a window without rows adds no window, and a star of a much longer budget does not compete."""
    script = load_script("autoencoder_windows")
    rows = [{"variant": "transformer", "n_ctx": 32, "accuracy": 0.48, "minutes": 20.0},
            {"variant": "heads", "n_ctx": 16, "accuracy": 0.85, "minutes": 20.0},
            {"variant": "transformer", "n_ctx": 16, "accuracy": 0.99, "minutes": 20.0}]
    stars = {"kernel": {32: (20.0, 0.959), 8: (20.0, 1.0)}, "heads": {16: (18.0, 0.5)}}
    assert script.best_per_window(rows, stars) == (
        "16 tokens: `transformer` 99.0%; 32 tokens: `kernel` (starred run, 20 min) 95.9%")
    short = [{**r, "minutes": 4.0} for r in rows]
    assert script.best_per_window(short, stars) == "16 tokens: `transformer` 99.0%; 32 tokens: `transformer` 48.0%"


def test_data_scaling_slope_pooling_and_verdict():
    """The data-scaling script's arithmetic on made-up runs: accuracy = 0.1 + 0.03 log2(tokens / 1000) gives a slope
    of 3 points per doubling, pooled means and spreads by share, and the verdict weighs the slope against the
    spread."""
    script = load_script("autoencoder_data_scaling")
    rows = [{"corpus": "builtin", "train_fraction": share, "train_tokens": 1000 * 2**level, "seed": seed, "steps": 100.0,
             "held_out_accuracy": 0.1 + 0.03 * level + noise, "held_out_ce": 4.0 - level / 10,
             "seen_accuracy": 0.2 + 0.03 * level, "seen_ce": 3.0}
            for share, level in ((0.25, 0), (0.5, 1), (1.0, 2)) for seed, noise in ((0, 0.005), (1, -0.005))]
    slope, intercept = script.slope_per_doubling(rows)
    assert slope == pytest.approx(0.03) and intercept == pytest.approx(0.1 - 0.03 * math.log2(1000))
    pooled = script.pool_by_share(rows)
    assert [entry["train_fraction"] for entry in pooled] == [0.25, 0.5, 1.0]
    assert pooled[1]["held_out_accuracy"] == pytest.approx(0.13) and pooled[1]["seeds"] == [0, 1]
    spread = script.seed_spread(pooled)
    assert spread == pytest.approx(0.00707, abs=1e-4)
    assert script.data_verdict(slope, spread) == "data-limited"
    assert script.data_verdict(0.001, spread) == "not data-limited"
    assert script.data_verdict(0.01, spread) == "inconclusive"
    crossing = script.crossing_tokens(slope, intercept, 0.5)
    assert intercept + slope * math.log2(crossing) == pytest.approx(0.5)
    assert script.crossing_tokens(-0.01, intercept, 0.5) is None
    with pytest.raises(SystemExit, match="one training share"):
        script.slope_per_doubling(rows[:2])
    # a curve that flattens: steep over all shares, flat over the last doubling, which the verdict reads
    flattening = [{**row, "held_out_accuracy": {1000: 0.11, 2000: 0.16, 4000: 0.21, 8000: 0.214}[row["train_tokens"]]}
                  for row in rows + [{**rows[0], "train_fraction": 2.0, "train_tokens": 8000}]]
    assert {row["train_tokens"] for row in script.last_doubling(flattening)} == {4000, 8000}
    assert script.slope_per_doubling(flattening)[0] > 0.03
    assert script.slope_per_doubling(script.last_doubling(flattening))[0] == pytest.approx(0.004)


def test_step_scaling_pools_schedules_fits_the_last_doubling_and_extrapolates():
    """The step-scaling script's arithmetic on made-up runs: schedules of 1000, 2000 and 4000 steps (two seeds at
    1000) pool by schedule, the last doubling's slope is read apart from the overall one, the verdict weighs it
    against the seed spread, and the target's crossing is where the line reaches it."""
    script = load_script("autoencoder_step_scaling")
    accuracy = {1000: 0.10, 2000: 0.16, 4000: 0.19}
    rows = [{"max_steps": steps, "steps": float(steps), "seed": seed, "held_out_accuracy": accuracy[steps] + noise,
             "held_out_ce": 4.0, "seen_accuracy": 0.3, "seen_ce": 3.0, "steps_per_second": 2.0}
            for steps, seed, noise in ((1000, 0, 0.01), (1000, 1, -0.01), (2000, 0, 0.0), (4000, 0, 0.0))]
    pooled = script.pool_by_schedule(rows)
    assert [entry["max_steps"] for entry in pooled] == [1000, 2000, 4000] and pooled[0]["seeds"] == [0, 1]
    assert pooled[0]["held_out_accuracy"] == pytest.approx(0.10)
    assert pooled[0]["held_out_accuracy_std"] == pytest.approx(0.01414, abs=1e-4)
    slope, intercept = script.fit_per_doubling([row for row in rows if row["max_steps"] > 1000])
    assert slope == pytest.approx(0.03) and intercept + slope * math.log2(4000) == pytest.approx(0.19)
    assert script.fit_per_doubling(rows)[0] > slope  # the curve flattens
    assert script.step_verdict(slope, 0.01414) == "step-limited"
    assert script.step_verdict(0.005, 0.01414) == "not step-limited"
    assert script.step_verdict(0.02, 0.01414) == "inconclusive"
    assert script.step_verdict(slope, 0.0).startswith("inconclusive (no schedule has two seeds")
    crossing = script.crossing_steps(slope, intercept, 0.5)
    assert intercept + slope * math.log2(crossing) == pytest.approx(0.5)
    assert script.crossing_steps(0.0, intercept, 0.5) is None
    with pytest.raises(SystemExit, match="one schedule length"):
        script.fit_per_doubling(rows[:2])


def test_memory_recall_reads_slot_zero_gains_and_pairs_seeds_by_group():
    """The chunk-recall script's arithmetic on made-up scores: the first-chunk gain averages the pairs whose
    source is chunk 0; each verdict compares two settings that differ in one thing (source, read or decoder
    depth) seed by seed; a setting whose control was not run is said to be unmeasured rather than called."""
    script = load_script("memory_recall")

    def score(seed, first_gain, later_gain, recall="any", blocks=2, read="slots"):
        setting = {"recall": recall, "decoder_blocks": blocks, "read": read}
        pairs = [{"source": s, "target": t, "repeat_loss": 4.0 - gain, "alone_loss": 4.0, "recall_gain": gain}
                 for s, t, gain in ((0, 1, first_gain), (0, 2, first_gain + 0.2), (1, 2, later_gain))]
        group = script.group_label(setting)
        return {"group": group, "setting": setting, "seed": seed, "run": f"{group}{seed}", "chunk_tokens": 4,
                "pairs": pairs}

    scores = [score(0, 1.0, 0.0, recall="first"), score(0, 0.3, 0.3),
              score(1, 1.2, 0.1, recall="first"), score(1, 0.2, 0.3)]
    first, searching = "repeat_source=first, 2-block decoder", "repeat_source=any, 2-block decoder"
    assert [s["group"] for s in scores[:2]] == [first, searching]
    assert script.group_label({"recall": None, "decoder_blocks": 4, "read": "slots"}) == (
        "no recall training, 4-block decoder")
    assert script.from_first_chunk(scores[0]) == pytest.approx(1.1)
    assert script.from_later_chunks(scores[1]) == pytest.approx(0.3)
    assert script.from_every_chunk(scores[0]) == pytest.approx((1.0 + 1.2 + 0.0) / 3)
    slot = script.comparisons(scores)
    assert len(slot) == 1 and slot[0]["effects"] == pytest.approx([0.7, 1.0]) and slot[0]["verdict"] == "reproduced"
    assert (slot[0]["treated"], slot[0]["control"]) == (first, searching)
    assert script.comparisons([scores[0], scores[2]])[0]["verdict"].startswith("not measured")
    assert script.comparisons([scores[1], scores[3]]) == []  # nothing differs in one thing
    rows = script.pooled_rows(scores)
    assert len(rows) == 6 and rows[0][:4] == [first, 2, 2, 1]
    assert rows[0][6] == "+1.100 ± 0.141"
    # a read is compared with the slots read of the same depth; a deeper decoder with the next shallower one
    read = "attention before block 2"
    with_more = scores + [score(0, 0.3, 0.0, blocks=4, read=read), score(1, 0.2, 0.6, blocks=4, read=read),
                          score(0, 0.6, 0.6, blocks=4), score(1, 0.2, 0.3, blocks=4),
                          score(0, 0.9, 0.9, blocks=8)]
    slot, reads, deeper, deepest = script.comparisons(with_more)
    deep_read = "repeat_source=any, 4-block decoder, memory_read=attention before block 2"
    assert (reads["treated"], reads["control"]) == (deep_read, "repeat_source=any, 4-block decoder")
    assert reads["effects"] == pytest.approx([-0.4, 0.1]) and reads["verdict"] == "inconclusive"
    assert "content-addressed read" in script.verdict_line(reads)
    assert (deeper["treated"], deeper["control"]) == ("repeat_source=any, 4-block decoder", searching)
    assert deeper["effects"] == pytest.approx([0.3, 0.0])
    assert (deepest["treated"], deepest["control"]) == ("repeat_source=any, 8-block decoder",
                                                        "repeat_source=any, 4-block decoder")
    assert deepest["effects"] == pytest.approx([0.3])  # seed 1 has no 8-block run
    assert "deeper decoder" in script.verdict_line(deepest)


def test_docstring_corpus_reads_a_package_without_tests_or_builtin_duplicates(tmp_path, monkeypatch, capsys):
    """A made-up installed package: its long docstrings are written as JSON lines; short ones, those in its tests
    folder and one that repeats a built-in document are left out; a missing package stops before any writing. The
    near-copy check finds a held-out document with one word changed, and nothing in the made-up text."""
    from memmix_data import builtin_documents, load_documents, package_docstrings, split_documents

    package = tmp_path / "site" / "fakepkg"
    (package / "tests").mkdir(parents=True)
    kept = ("Kept: " + "a long explanation of what this function does. " * 6).strip()
    builtin = builtin_documents()[0]
    (package / "__init__.py").write_text(f'"""{kept}"""\n\ndef short():\n    """Too short."""\n', encoding="utf-8")
    (package / "core.py").write_text(f"def again():\n    {builtin!r}\n", encoding="utf-8")
    (package / "tests" / "helpers.py").write_text(f'"""Tests: {kept}"""\n', encoding="utf-8")
    assert package_docstrings(package) == [kept, builtin]
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    script = load_script("docstring_corpus")
    out = tmp_path / "corpus" / "docs.jsonl"
    assert script.main(["--packages", "fakepkg", "--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [
        {"text": kept, "package": "fakepkg"}]
    assert load_documents(str(out)) == [kept]  # data.corpus reads the file
    assert "0 of " in capsys.readouterr().out.splitlines()[-1]  # no near-copy of a held-out document
    held_out = split_documents(builtin_documents(), 0.05, 0)[1][0]
    near_copy = held_out.replace(held_out.split()[0], "Changed", 1)
    assert script.held_out_overlap([near_copy])["near_copies"] == 1
    assert script.held_out_overlap([kept]) == {**script.held_out_overlap([kept]), "near_copies": 0, "in_corpus": 0.0}
    with pytest.raises(SystemExit, match="'no_such_package_here' is not an installed package"):
        script.main(["--packages", "fakepkg", "no_such_package_here", "--out", str(tmp_path / "other.jsonl")])
    assert not (tmp_path / "other.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="No source folder"):
        package_docstrings(tmp_path / "missing")


def test_memory_recall_reports_where_a_content_addressed_read_looks(monkeypatch):
    """The read's weights are measured at each chunk's tokens on natural text and with chunk 3 repeating chunk 1
    or 2: chunk 1 can only read "nothing", chunk c never weighs slots it cannot see, each row sums to one; a model
    without a read has no such table. Selectivity is the mean of the two slots' weight differences between the
    repeats, and its call needs every seed above the margin (or, refuted, the whole spread below it)."""
    import torch
    from variants import memory_config, random_ids, wake_memory_read

    from modeling_memmix import MemoryMixerForCausalLM

    script = load_script("memory_recall")
    torch.manual_seed(0)
    model = wake_memory_read(MemoryMixerForCausalLM(memory_config("past_fixed", memory_read="attention")).eval())
    read = script.read_weights_on_repeats(model, random_ids(5, 64), batch_size=2)
    assert list(read["per_chunk"]) == ["natural text", "chunk 3 = chunk 1", "chunk 3 = chunk 2"]
    assert -1 <= read["selectivity"] <= 1
    for per_chunk in read["per_chunk"].values():
        assert [entry["chunk"] for entry in per_chunk] == [1, 2, 3, 4] and per_chunk[0]["nothing"] == 1.0
        for entry in per_chunk:
            assert entry["nothing"] + sum(entry["slots"]) == pytest.approx(1.0, abs=1e-3)
            assert all(weight == 0 for weight in entry["slots"][entry["chunk"] - 1 :])
    assert read["per_chunk"]["natural text"][1] == read["per_chunk"]["chunk 3 = chunk 1"][1]  # chunk 2 unchanged
    lines = script.read_weight_lines([{"group": "g", "seed": 0, "read_weights": read}])
    assert lines[0].startswith("## Where") and "| g | 0 | natural text | 2 |" in "\n".join(lines)
    plain = MemoryMixerForCausalLM(memory_config("past_fixed")).eval()
    assert script.read_weights_on_repeats(plain, random_ids(2, 64), batch_size=2) is None
    assert script.read_weight_lines([{"group": "g", "seed": 0, "read_weights": None}]) == []

    weights = {None: [[1, 0, 0], [0, 1, 0], [0, 0.5, 0.5]], 0: [[1, 0, 0], [0, 1, 0], [0, 0.7, 0.3]],
               1: [[1, 0, 0], [0, 1, 0], [0, 0.4, 0.6]]}
    monkeypatch.setattr(script, "mean_read_weights",
                        lambda model, ids, batch_size, source: torch.tensor(weights[source]))
    assert script.read_weights_on_repeats(model, random_ids(2, 64), 2)["selectivity"] == pytest.approx(0.3)

    def read_run(seed, selectivity):
        return {"group": "read", "seed": seed, "read_weights": {"selectivity": selectivity}}

    calls = [script.selectivity_verdicts([read_run(0, a), read_run(1, b)])[0]["verdict"]
             for a, b in ((0.30, 0.35), (0.001, 0.003), (0.30, 0.01), (0.03, 0.04))]
    assert calls == ["reproduced", "refuted", "inconclusive", "refuted"]
    assert script.selectivity_verdicts([read_run(0, 0.001)])[0]["verdict"] == "inconclusive"  # one seed
    assert "weight over 2 seed(s)" in script.verdict_line(script.selectivity_verdicts([read_run(0, 0.3),
                                                                                      read_run(1, 0.4)])[0])
