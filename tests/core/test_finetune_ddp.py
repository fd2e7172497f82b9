"""The finetune recipe data-parallel: two CPU processes (torchrun, gloo) train the tiny model on the sample data and
must hold the same weights after their steps, different from where they started (the gpu profile's multi-GPU path,
exercised here on CPUs)."""

import json
import os
import re
import subprocess
import sys

import pytest

from sqlcopilot_core.modeling import save_model, tiny_model_and_tokenizer
from sqlcopilot_core.sample import build_sample_spider
from sqlcopilot_core.training import weights_digest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_agree_on_the_weights_after_a_step(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    base = save_model(model, tokenizer, tmp_path / "base")
    spider = build_sample_spider(tmp_path / "spider")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "sqlcopilot_core.finetune", str(base), str(spider), str(tmp_path / "out"), "--set",
               "max_steps=2", "warmup_steps=0", "batch_size=1", "max_seq_len=512", "max_schema_tokens=256",
               "learning_rate=0.01", "checkpoint_every=0", "log_every=1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]
    # each rank prints one flat JSON object; the two may share a line of the combined output
    stats = [json.loads(text) for text in re.findall(r'\{[^{}]*"weights_sha256"[^{}]*\}', done.stdout)]
    assert sorted(s["process_index"] for s in stats) == [0, 1] and {s["processes"] for s in stats} == {2}
    assert len({s["weights_sha256"] for s in stats}) == 1  # both ranks hold the same weights
    assert stats[0]["weights_sha256"] != weights_digest(model)  # and they moved
    assert stats[0]["steps"] == 2 and stats[0]["examples_seen"] == stats[1]["examples_seen"] > 2
