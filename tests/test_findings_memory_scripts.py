"""The findings scripts F5-F8 (benchmarks/findings) run end to end at a tiny size and write their finding: the
Markdown (table, effects and a verdict), the JSON of every number and the figure. Windows and tokenizers come
from the shared cache (runs/findings), so only the first run on a fresh checkout trains a tokenizer.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

FINDINGS = Path(__file__).resolve().parents[1] / "benchmarks" / "findings"
VERDICT_WORDS = ("reproduced", "refuted", "inconclusive")

SCRIPTS = {
    "f5_oracle_normalized_loss": ["--size", "tiny", "--seeds", "0", "--steps", "2", "--eval_every", "1"],
    "f6_memory_vs_full_context": ["--size", "tiny", "--seeds", "0", "--steps", "2", "--eval_every", "1"],
    "f7_frozen_encoder": ["--size", "tiny", "--seeds", "0", "--steps", "2", "--ae_steps", "2", "--eval_every", "1"],
    "f8_qat_int8": ["--seeds", "0", "--steps", "3", "--eval_windows", "8", "--qat_formats", "int8", "int4"],
}


@pytest.fixture(scope="module", autouse=True)
def findings_on_path():
    sys.path.insert(0, str(FINDINGS))
    yield
    sys.path.remove(str(FINDINGS))


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_writes_its_finding_with_a_verdict(name, tmp_path):
    script = importlib.import_module(name)
    assert script.main([*SCRIPTS[name], "--out_dir", str(tmp_path)]) == 0
    text = (tmp_path / f"{name}.md").read_text(encoding="utf-8")
    verdict = next(line for line in text.splitlines() if line.startswith("**Verdict:**"))
    assert any(word in verdict for word in VERDICT_WORDS), verdict
    assert f"![{name}]({name}.png)" in text
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    results = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert results["per_seed"]["0"]  # every variant's numbers for the one seed
