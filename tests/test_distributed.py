"""Distributed training on CPU gives the single-process results: FSDP2 sharding under torchrun, and DDP through
``accelerate launch``.

Both tests start real 2-process jobs over the gloo backend with ``subprocess`` and read what the processes
wrote; they compare against a 1-process run of the same global batch.

* FSDP2: ``tests/dist_scripts/fsdp_train.py`` shards every block and the root with ``fully_shard`` (Accelerate
  refuses FSDP on CPU, so this is how a CPU machine tests sharding) and trains side by side with an unsharded
  copy.
* DDP: ``accelerate launch --config_file configuration/accelerate/cpu_2proc.yaml train_accelerate.py`` (2
  processes, batch ``B`` each) versus ``python train_accelerate.py`` (1 process, batch ``2B``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_MODEL, builtin_data, read_log, tiny_preset, train_small_tokenizer

REPO = Path(__file__).resolve().parents[1]
DIST_SCRIPTS = REPO / "tests" / "dist_scripts"
LAUNCH_TIMEOUT_S = 180
CPU_2PROC_CONFIG = REPO / "configuration" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    """A TCP port nobody listens on right now, for the rendezvous of one launched job."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_env() -> dict[str, str]:
    """Environment for launched processes: one thread each (2 processes share 2 cores), repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def run_checked(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``command``; on failure show its output in the assertion message."""
    return run_all_checked([command], cwd)[0]


def run_all_checked(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run ``commands`` side by side (much of a launch is imports and waiting); fail with their output."""
    running = [subprocess.Popen(command, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for command in commands]
    done = []
    try:
        for command, process in zip(commands, running):
            stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT_S)
            done.append(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for result in done:
        assert result.returncode == 0, (
            f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return done


def torchrun(script: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    return run_checked(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args],
        cwd=REPO,
    )


# ----- FSDP2 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mixer", "memory"])
def test_fsdp2_sharded_training_matches_unsharded(tmp_path, family):
    output = tmp_path / "fsdp.json"
    torchrun(DIST_SCRIPTS / "fsdp_train.py", "--output", str(output), "--family", family, "--steps", "4")
    result = json.loads(output.read_text())

    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["num_sharded_blocks"] >= 2
    # really sharded: each rank holds about half of the elements (dim-0 shards, rounded up)
    assert result["local_numel"] <= 0.55 * result["full_numel"], result

    sharded, reference = result["sharded_losses"], result["reference_losses"]
    assert len(sharded) == len(reference) == 4
    assert sharded == pytest.approx(reference, abs=1e-5, rel=1e-5)
    assert reference[-1] < reference[0] - 0.3, f"training did not move the loss: {reference}"

    # weights moved by ~0.1-1; sharded and unsharded agree to rounding (a mask written into .data gave 3e-3)
    assert result["max_weight_change_from_init"] > 0.05
    assert result["max_weight_diff"] < 1e-5, f"{result['worst_parameter']} differs by {result['max_weight_diff']}"

    # the causal mask survives sharded training: earlier logits ignore later tokens, later logits do not
    assert result["causal_leak"] == 0.0
    assert result["later_logits_change"] > 1e-3


# ----- DDP through accelerate launch ------------------------------------------------------------------------

DDP_STEPS = 8
PER_PROCESS_BATCH = 4
STATE_LINE = re.compile(r"processes: (\d+), distributed: (\w+)")


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> dict[str, str]:
    """A small tokenizer and a window cache shared by the 1- and 2-process runs."""
    return train_small_tokenizer(tmp_path_factory.mktemp("ddp_data"))


def write_preset(path: Path, data: dict[str, str], output_dir: Path, batch_size: int) -> Path:
    """A tiny mixer run: lr high enough that the loss moves in a few steps, a loss record every step."""
    preset = tiny_preset("mixer", TINY_MODEL, builtin_data(data), output_dir, batch_size=batch_size, lr=1e-2,
                         warmup_steps=1, max_steps=DDP_STEPS, eval_every=DDP_STEPS, save_every=DDP_STEPS,
                         eval_batches=2, resume="never",
                         max_minutes=30)  # never reached: the processes only agree on the clock every step
    path.write_text(json.dumps(preset))
    return path


def launch_state(done: subprocess.CompletedProcess) -> tuple[int, str]:
    """(number of processes, distributed type) from the run's "processes: N, distributed: T" log line."""
    match = STATE_LINE.search(done.stdout + done.stderr)
    assert match, f"no accelerator state line in the log:\n{done.stdout}\n{done.stderr}"
    return int(match.group(1)), match.group(2)


def test_accelerate_launch_two_cpu_processes_is_ddp_matching_one_process(tmp_path, ddp_data):
    assert CPU_2PROC_CONFIG.is_file(), f"missing Accelerate config {CPU_2PROC_CONFIG}"
    two_dir, one_dir = tmp_path / "two_processes", tmp_path / "one_process"
    two_command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC_CONFIG),
        "--main_process_port", str(free_port()), str(REPO / "train_accelerate.py"),
        "--preset", str(write_preset(tmp_path / "two.json", ddp_data, two_dir, PER_PROCESS_BATCH)),
    ]
    one_command = [
        sys.executable, str(REPO / "train_accelerate.py"),
        "--preset", str(write_preset(tmp_path / "one.json", ddp_data, one_dir, 2 * PER_PROCESS_BATCH)),
    ]
    # both may build the shared window cache at once: memmix_data writes it atomically (temp file + rename)
    two, one = run_all_checked([two_command, one_command], cwd=tmp_path)

    assert launch_state(two) == (2, "MULTI_CPU")
    assert launch_state(one) == (1, "NO")

    two_log, one_log = read_log(two_dir), read_log(one_dir)
    two_train = [record for record in two_log if "train_loss" in record]
    one_train = [record for record in one_log if "train_loss" in record]
    assert [r["step"] for r in two_train] == [r["step"] for r in one_train] == list(range(1, DDP_STEPS + 1))
    # the same global batch: 2 processes x B windows per step == 1 process x 2B
    assert [r["train_windows_seen"] for r in two_train] == [r["train_windows_seen"] for r in one_train]
    assert two_train[-1]["train_windows_seen"] == DDP_STEPS * 2 * PER_PROCESS_BATCH

    two_losses = [r["train_loss"] for r in two_train]
    one_losses = [r["train_loss"] for r in one_train]
    assert one_losses[0] - min(one_losses) > 0.05, f"the loss hardly moved, the comparison proves little: {one_losses}"
    assert two_losses == pytest.approx(one_losses, abs=1e-4)
    assert [r["grad_norm"] for r in two_train] == pytest.approx([r["grad_norm"] for r in one_train], rel=1e-3)

    two_eval = [record for record in two_log if "val_loss" in record][-1]
    one_eval = [record for record in one_log if "val_loss" in record][-1]
    assert two_eval["val_loss"] == pytest.approx(one_eval["val_loss"], abs=1e-4)
