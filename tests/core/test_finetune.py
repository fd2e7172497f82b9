import copy
import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from sqlcopilot_core.config import ConfigError, config_from_dict
from sqlcopilot_core.finetune import FinetuneConfig, exec_guided_weights, finetune, main, weighted_sql_loss
from sqlcopilot_core.generate import PredictConfig, predict_examples
from sqlcopilot_core.modeling import load_model, tiny_model_and_tokenizer
from sqlcopilot_core.packing import PackedData, collate_packs, per_branch_loss
from sqlcopilot_core.prompting import Prompter, model_prompt_settings
from sqlcopilot_core.spider import Example
from tests.core.test_generate import pet_examples  # noqa: F401  (fixture)

FAST = dict(warmup_steps=0, batch_size=2, max_seq_len=256, max_schema_tokens=None, log_every=1,
            checkpoint_every=0, gen_max_new_tokens=12)
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "prompt.json"}


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_exec_guided_weights_grow_with_edit_distance():
    gold = [5, 6, 7, 8]
    weights = exec_guided_weights([[5, 6, 7, 9], [5, 1, 2, 9], [1, 2], [5, 6, 7, 8]], [gold] * 4,
                                  [False, False, False, True])
    assert weights.tolist() == [0.25, 0.75, 1.0, 0.0]
    assert exec_guided_weights([gold], [gold], [True]).tolist() == [0.0]
    with pytest.raises(ValueError, match="2 predictions, 1 golds"):
        exec_guided_weights([gold, gold], [gold], [True, True])


def test_all_matching_batch_has_no_loss_and_no_gradient(pet_examples):
    model, tokenizer = tiny_model_and_tokenizer()
    model.train()
    config = FinetuneConfig(**FAST)
    data = PackedData(pet_examples[:2], tokenizer, Prompter(config.prompt_settings(), tokenizer), 1024, 0,
                      progress=False)
    batch = collate_packs(data.epoch_packs(0), tokenizer.pad_token_id)
    gold_ids = [list(e.target_ids[:-1]) for e in batch.examples]
    assert weighted_sql_loss(model, batch, exec_guided_weights(gold_ids, gold_ids, [True, True])) is None
    assert all(p.grad is None for p in model.parameters())
    # One wrong answer: only its cross-entropy counts, scaled by its edit distance, averaged over the batch.
    wrong = [gold_ids[0], gold_ids[1][:-4]]
    mixed = exec_guided_weights(wrong, gold_ids, [True, False])
    loss = weighted_sql_loss(model, batch, mixed)
    expected = mixed[1] * per_branch_loss(model, batch)[1] / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.fixture(scope="module")
def memorized(tmp_path_factory):
    """The tiny model trained (sft) until it answers 'SELECT 1' to one question, with its per-step losses."""
    tmp = tmp_path_factory.mktemp("memorized")
    examples = [Example("How many pets?", "SELECT 1", "pets", make_pets_db(tmp), 0)]
    model, tokenizer = tiny_model_and_tokenizer()
    losses = []
    config = FinetuneConfig(**{**FAST, "batch_size": 1, "learning_rate": 3e-3, "max_steps": 40})
    stats = finetune(model, tokenizer, examples, config, tmp / "out",
                     on_metrics=lambda step, metrics: losses.append(metrics["loss"]))
    return model, tokenizer, examples, losses, stats


def make_pets_db(folder):
    import sqlite3

    db = folder / "pets.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE pets(id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
                           "INSERT INTO pets VALUES (1, 'Rex', 5), (2, 'Tom', 2);")
    return db


def test_sft_loss_decreases_and_stats_count_the_run(memorized):
    model, tokenizer, examples, losses, stats = memorized
    assert len(losses) == 40 and losses[19] < losses[0] / 2 and losses[-1] < losses[19]
    assert {k: stats[k] for k in ("steps", "examples_seen", "epochs", "stop_reason", "skipped_correct")} == \
        {"steps": 40, "examples_seen": 40, "epochs": 40.0, "stop_reason": "max_steps", "skipped_correct": 0}
    assert stats["train_tokens"] > 40 * 9 and stats["tokens_per_s"] > 0 and stats["examples_per_s"] > 0
    assert predict_examples(model, tokenizer, examples, PredictConfig(max_new_tokens=12), progress=False) == \
        ["SELECT 1"]


def test_exec_guided_skips_answers_that_already_run_right(memorized, tmp_path):
    trained, tokenizer, (known,), _, _ = memorized
    model = copy.deepcopy(trained)
    before = weights(model)
    config = FinetuneConfig(**{**FAST, "objective": "exec_guided", "batch_size": 1, "max_steps": 2})
    stats = finetune(model, tokenizer, [known], config, tmp_path / "all_right")
    assert stats["skipped_correct"] == 2 and stats["final_loss"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing to learn: no update
    unknown = dataclasses.replace(known, query="SELECT 2", question="How many pets are old?", index=1)
    metrics = []
    # one pack holds both questions (same schema)
    stats = finetune(model, tokenizer, [known, unknown], dataclasses.replace(config, max_steps=1),
                     tmp_path / "one_wrong", on_metrics=lambda step, m: metrics.append(m))
    assert stats["skipped_correct"] == 1 and metrics[0]["skipped_correct_total"] == 1 and stats["final_loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_killed_run_resumes_to_the_same_weights(pet_examples, tmp_path):
    config = FinetuneConfig(**{**FAST, "learning_rate": 1e-3, "warmup_steps": 2, "max_steps": 6,
                               "checkpoint_every": 3, "weight_decay": 0.1})
    model, tokenizer = tiny_model_and_tokenizer()
    straight = finetune(model, tokenizer, pet_examples[:3], config, tmp_path / "straight")

    def kill_at_step_4(step, metrics):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")

    model, tokenizer = tiny_model_and_tokenizer()
    with pytest.raises(KeyboardInterrupt):
        finetune(model, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt",
                 on_metrics=kill_at_step_4)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000003"]
    model, tokenizer = tiny_model_and_tokenizer()
    resumed = finetune(model, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt")
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == straight["steps"] == 6
    assert resumed["examples_seen"] == straight["examples_seen"] > 6
    assert resumed["epochs"] == straight["epochs"] == straight["examples_seen"] / 3
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "killed")
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000006"]
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 0.001 -> 0.002\)"):
        finetune(model, tokenizer, pet_examples[:3], dataclasses.replace(config, learning_rate=2e-3),
                 tmp_path / "other", tmp_path / "ckpt")


def test_wall_clock_budget_stops_and_saves(pet_examples, tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    config = FinetuneConfig(**{**FAST, "max_steps": 100_000, "max_minutes": 0.01})
    stats = finetune(model, tokenizer, pet_examples, config, tmp_path / "out")
    assert stats["stop_reason"] == "max_minutes" and 1 <= stats["steps"] < 100_000 and stats["wall_s"] >= 0.6
    assert [p.name for p in (tmp_path / "out" / "checkpoint").iterdir()] == [f"step-{stats['steps']:08d}"]
    assert MODEL_FILES <= {p.name for p in (tmp_path / "out").iterdir()}


def test_lora_run_saves_a_plain_merged_model(pet_examples, tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    base = weights(model)
    config = FinetuneConfig(**{**FAST, "lora": True, "lora_r": 4, "learning_rate": 1e-2, "max_steps": 3})
    stats = finetune(model, tokenizer, pet_examples, config, tmp_path / "out", tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "out").iterdir()} == MODEL_FILES
    assert model_prompt_settings(tmp_path / "out") == config.prompt_settings()  # the model carries its prompt
    assert not any("lora" in k for k in load_file(tmp_path / "out" / "model.safetensors"))
    adapters = load_file(tmp_path / "ckpt" / "step-00000003" / "trainable.safetensors")
    assert adapters and all("lora_" in k for k in adapters)
    assert stats["trainable_parameters"] == sum(v.numel() for v in adapters.values())
    loaded, _ = load_model(tmp_path / "out")
    merged = loaded.state_dict()
    assert set(merged) == set(base)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])


@pytest.mark.parametrize("values, message", [
    ({"objective": "rl"}, "objective must be one of"),
    ({"warmup_steps": 10, "max_steps": 10}, r"warmup_steps \(10\) must be >= 0 and below max_steps \(10\)"),
    ({"max_seq_len": 256}, r"max_schema_tokens \(400\) must be >= 1 and below max_seq_len \(256\)"),
    ({"lora": True, "lora_targets": []}, "lora_targets must name at least one layer"),
    ({"batch": 4}, r"unknown key\(s\) \['batch'\]"),
])
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(FinetuneConfig, values)


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--resume-dir" in capsys.readouterr().out


def test_epochs_set_the_step_count(pet_examples, tmp_path):
    model, tokenizer = tiny_model_and_tokenizer()
    config = FinetuneConfig(**{**FAST, "batch_size": 1, "epochs": 2, "max_steps": 1000, "max_seq_len": 512})
    stats = finetune(model, tokenizer, pet_examples, config, tmp_path / "out")
    assert stats["planned_steps"] == stats["steps"] == 2 * stats["packs_per_epoch"]
    assert stats["examples_seen"] == 2 * len(pet_examples) and stats["epochs"] == 2.0
    assert stats["tokens_per_epoch_packed"] < stats["tokens_per_epoch_unpacked"]


def test_example_stream_resumes_mid_epoch_and_reshuffles_each_epoch():
    from itertools import islice

    from sqlcopilot_core.training import example_stream

    straight = list(islice(example_stream(5, seed=1), 15))
    assert list(islice(example_stream(5, seed=1, start=7), 8)) == straight[7:]
    epochs = [straight[i:i + 5] for i in (0, 5, 10)]
    assert all(sorted(e) == list(range(5)) for e in epochs) and len({tuple(e) for e in epochs}) > 1
