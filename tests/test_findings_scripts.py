"""Smoke test of the findings scripts F1-F4 and F9 (benchmarks/findings/): each runs end to end at its ``tiny``
preset (a few steps of tiny models, one seed) in this process and writes its Markdown with a verdict, the JSON of
its numbers and the PNG. The science is in the default runs (docs/findings/); this only keeps the scripts working."""

from __future__ import annotations

import importlib.util
import json
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
