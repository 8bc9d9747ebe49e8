"""Checkpoints exported by an earlier memmix keep working: their weights load into today's classes (no missing or
unexpected keys) and give the logits stored beside them, and they still load as remote code in a fresh process.

The checkpoints in ``tests/fixtures/legacy_checkpoints/`` were made by ``tests/fixtures/make_legacy_checkpoints.py``
before the architecture redesign, and cover every family with its weight-layout variants (heads, kernel k > 1,
Llama blocks, narrow encoder and bottleneck, recurrent, oracle concat, unroll, transformer decoder). The remote
code that ``save_pretrained`` wrote beside them is kept once, in ``tests/fixtures/legacy_remote_code/``, and put
back beside each checkpoint for the remote-code test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modeling_memmix import MemoryMixerForCausalLM, MixerAutoencoder, MixerForCausalLM

FOLDER = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"
REMOTE_CODE = Path(__file__).resolve().parent / "fixtures" / "legacy_remote_code"
CLASSES = {"masked_mixer": MixerForCausalLM, "memory_mixer": MemoryMixerForCausalLM,
           "mixer_autoencoder": MixerAutoencoder}
CHECKPOINTS = sorted(path.name for path in FOLDER.iterdir() if path.is_dir())


def expected(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = json.loads((FOLDER / name / "expected.json").read_text())
    return torch.tensor(data["input_ids"]), torch.tensor(data["logits"])


def test_every_family_has_a_legacy_checkpoint():
    types = {json.loads((FOLDER / name / "config.json").read_text())["model_type"] for name in CHECKPOINTS}
    assert types == set(CLASSES)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_legacy_weights_load_into_todays_classes_with_the_same_logits(name):
    model_type = json.loads((FOLDER / name / "config.json").read_text())["model_type"]
    model, info = CLASSES[model_type].from_pretrained(FOLDER / name, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, logits = expected(name)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).logits, logits, atol=1e-5, rtol=1e-5)


LOADER = textwrap.dedent("""
    import json, sys
    sys.modules["modeling_memmix"] = None  # only the checkpoints' own remote code may run
    import torch
    from transformers import AutoModel, AutoModelForCausalLM
    for folder in sys.argv[1:]:
        causal = json.load(open(folder + "/config.json"))["model_type"] != "mixer_autoencoder"
        auto = AutoModelForCausalLM if causal else AutoModel
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        data = json.load(open(folder + "/expected.json"))
        with torch.no_grad():
            logits = model(torch.tensor(data["input_ids"])).logits
        assert torch.allclose(logits, torch.tensor(data["logits"]), atol=1e-5, rtol=1e-5), folder
    print("ok")
""")


def test_legacy_checkpoints_load_as_remote_code_in_a_fresh_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    folders = []
    for name in CHECKPOINTS:  # each checkpoint as saved: its files and the remote code of its day
        folder = tmp_path / name
        shutil.copytree(FOLDER / name, folder)
        for code in REMOTE_CODE.glob("*.py"):
            shutil.copy(code, folder)
        folders.append(str(folder))
    result = subprocess.run([sys.executable, "-c", LOADER, *folders], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
