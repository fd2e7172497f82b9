"""Distillation of a pruned tiny Llama (hidden width cut too) from the briefly fine-tuned teacher it was pruned from."""

import copy
import dataclasses
import sqlite3

import pytest
import torch
from safetensors.torch import load_file

from sqlcopilot_core.config import ConfigError, config_from_dict
from sqlcopilot_core.distill import (DistillConfig, distill, distill_schedule, initial_projection, main, phase_at,
                                     resolve_layer_map)
from sqlcopilot_core.finetune import FinetuneConfig, finetune
from sqlcopilot_core.modeling import load_model, tiny_config, tiny_model_and_tokenizer
from sqlcopilot_core.prune import PruneConfig, prune_model
from sqlcopilot_core.spider import Example
from tests.core.test_generate import PET_QUERIES

FAST = dict(warmup_steps=0, batch_size=2, max_seq_len=256, max_schema_tokens=None, log_every=1, checkpoint_every=0,
            learning_rate=3e-3)
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
               "prompt.json"}


@pytest.fixture(scope="module")
def pet_examples(tmp_path_factory) -> list[Example]:
    """The four pet questions of test_generate, on a database shared by this module's tests."""
    db = tmp_path_factory.mktemp("distill") / "database" / "pets" / "pets.sqlite"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE pets(id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
                           "INSERT INTO pets VALUES (1, 'Rex', 5), (2, 'Tom', 2), (3, 'Kit', 4);")
    return [Example(question, query, "pets", db, i) for i, (question, query) in enumerate(PET_QUERIES)]


@pytest.fixture(scope="module")
def pair(pet_examples, tmp_path_factory):
    """(teacher, pruned student, tokenizer): the teacher is fine-tuned on the pet questions, as in the pipeline, so
    it is sure of its answers; the student keeps ~half the parameters and 66 of 96 hidden channels."""
    teacher, tokenizer = tiny_model_and_tokenizer(seed=0)
    finetune(teacher, tokenizer, pet_examples, FinetuneConfig(**{**FAST, "max_steps": 20}),
             tmp_path_factory.mktemp("teacher"))
    teacher.eval()
    student = copy.deepcopy(teacher)
    prune_model(student, PruneConfig(ratio=0.5, prune_hidden=True))
    assert student.config.hidden_size < teacher.config.hidden_size
    return teacher, student, tokenizer


def fresh(pair):
    teacher, student, tokenizer = pair
    return copy.deepcopy(teacher), copy.deepcopy(student), tokenizer


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, after, prefix) -> bool:
    names = [k for k in before if k.startswith(prefix)]
    assert names, prefix
    return any(not torch.equal(before[k], after[k]) for k in names)


@pytest.mark.parametrize("hidden_loss", ["mse", "relative_mse"])
def test_loss_decreases_on_a_fixed_batch(pair, pet_examples, tmp_path, hidden_loss):
    teacher, student, tokenizer = fresh(pair)
    metrics = []
    # Without the CE term the student copies the teacher rather than memorizing the one example beyond it.
    config = DistillConfig(**{**FAST, "schedule": "all", "ce_weight": 0.0, "batch_size": 1, "max_steps": 30,
                              "hidden_loss": hidden_loss})
    stats = distill(student, teacher, tokenizer, pet_examples[:1], config, tmp_path / "out",
                    on_metrics=lambda step, m: metrics.append(m))
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 30 and losses[-1] < losses[0] / 4 and losses[-1] < losses[14]
    assert metrics[-1]["kl"] < metrics[0]["kl"] / 4 and metrics[-1]["hidden"] < metrics[0]["hidden"]
    assert metrics[-1]["ce"] < metrics[0]["ce"]  # towards the teacher, which answers better than the pruned student
    assert stats["mapping"] == {"student_layers": 2, "teacher_layers": 2, "layer_map": {"0": 0, "1": 1},
                                "student_hidden_size": 66, "teacher_hidden_size": 96, "projection": "linear",
                                "projection_init": "matched_embedding_columns"}


def test_layerwise_schedule_trains_one_layer_after_another(pair, pet_examples, tmp_path):
    teacher, student, tokenizer = fresh(pair)
    snapshots, phases, metrics = {0: weights(student)}, [], []

    def record(step, m):
        snapshots[step] = weights(student)
        phases.append(m["phase"])
        metrics.append(m)

    config = DistillConfig(**{**FAST, "schedule": "layerwise", "steps_per_layer": 2, "max_steps": 6})
    stats = distill(student, teacher, tokenizer, pet_examples, config, tmp_path / "out", on_metrics=record)
    assert [p["name"] for p in stats["schedule"]] == ["layer 0", "layer 1", "final"]
    assert phases == [0, 0, 1, 1, 2, 2]
    # steps 1-2 (phase 0): only what feeds layer 0's output moves; layer 1 and the final norm get no gradient
    assert changed(snapshots[0], snapshots[2], "model.layers.0.")
    assert not changed(snapshots[0], snapshots[2], "model.layers.1.")
    assert not changed(snapshots[0], snapshots[2], "model.norm.")
    # steps 3-4 (phase 1): layer 1 now learns, still nothing after it
    assert changed(snapshots[2], snapshots[4], "model.layers.1.")
    assert not changed(snapshots[2], snapshots[4], "model.norm.")
    # steps 5-6 (final phase): KL + CE reach the final norm; no hidden term is optimized
    assert changed(snapshots[4], snapshots[6], "model.norm.")
    assert all(m["hidden_active"] > 0 for m in metrics[:4]) and all(m["hidden_active"] == 0 for m in metrics[4:])
    assert all(m["loss"] == pytest.approx(m["hidden_active"]) for m in metrics[:4])
    assert metrics[4]["loss"] == pytest.approx(metrics[4]["kl"] + 0.5 * metrics[4]["ce"], rel=1e-5)


def test_schedule_phases_and_uniform_layer_map():
    config = DistillConfig(schedule="layerwise", steps_per_layer=3)
    schedule = distill_schedule(config, 2)
    assert [phase_at(schedule, step).name for step in range(8)] == ["layer 0"] * 3 + ["layer 1"] * 3 + ["final"] * 2
    assert phase_at(distill_schedule(dataclasses.replace(config, schedule="all"), 2), 99).hidden_layers == (0, 1)
    assert resolve_layer_map("uniform", 2, 4) == (1, 3)
    assert resolve_layer_map("uniform", 2, 3) == (1, 2)  # 1.5 rounds up
    assert resolve_layer_map("uniform", 3, 3) == (0, 1, 2)
    assert resolve_layer_map((0, 2), 2, 3) == (0, 2)
    with pytest.raises(ValueError, match=r"layer_map \[0, 3\] must give one teacher layer \(0..2\)"):
        resolve_layer_map((0, 3), 2, 3)


def test_projection_selects_the_kept_channels_or_fits_them(pair):
    teacher, student, _ = pair
    teacher_embedding = teacher.model.embed_tokens.weight.detach()
    student_embedding = student.model.embed_tokens.weight.detach()
    weight, how = initial_projection(teacher_embedding, student_embedding)
    assert how == "matched_embedding_columns" and torch.equal(teacher_embedding @ weight.T, student_embedding)
    kept = weight.argmax(1).tolist()
    assert initial_projection(teacher_embedding, student_embedding, kept)[0].equal(weight)
    trained = student_embedding + 0.01 * torch.randn_like(student_embedding)
    fitted, how = initial_projection(teacher_embedding, trained)
    assert how == "least_squares_embedding"
    def fit_error(projection):
        return (teacher_embedding @ projection.T - trained).pow(2).mean()

    assert fit_error(fitted) < fit_error(weight)


def test_killed_run_resumes_to_the_same_student_and_projections(pair, pet_examples, tmp_path):
    config = DistillConfig(**{**FAST, "learning_rate": 1e-3, "warmup_steps": 1, "schedule": "layerwise",
                              "steps_per_layer": 2, "max_steps": 6, "checkpoint_every": 3})
    teacher, student, tokenizer = fresh(pair)
    straight = distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "straight",
                       tmp_path / "ckpt_straight")

    def kill_at_step_4(step, metrics):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")

    teacher, student, tokenizer = fresh(pair)
    with pytest.raises(KeyboardInterrupt):
        distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt",
                on_metrics=kill_at_step_4)
    teacher, student, tokenizer = fresh(pair)
    phases = []
    resumed = distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt",
                      on_metrics=lambda step, m: phases.append((step, m["phase"])))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == straight["steps"] == 6
    assert phases == [(4, 1), (5, 2), (6, 2)]  # resumed in the middle of layer 1's phase
    assert resumed["examples_seen"] == straight["examples_seen"] > 6  # batch_size packs a step
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "killed")
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value)
    a = load_file(tmp_path / "ckpt_straight" / "step-00000006" / "trainable.safetensors")
    b = load_file(tmp_path / "ckpt" / "step-00000006" / "trainable.safetensors")
    assert set(a) == set(b) and {"projections.0.weight", "projections.1.weight"} <= set(a)
    for name, value in a.items():
        torch.testing.assert_close(b[name], value)
    with pytest.raises(ValueError, match=r"other settings \(temperature: 2.0 -> 3.0\)"):
        distill(student, teacher, tokenizer, pet_examples[:3], dataclasses.replace(config, temperature=3.0),
                tmp_path / "other", tmp_path / "ckpt")


def test_saved_student_reloads_and_matches_in_memory(pair, pet_examples, tmp_path):
    teacher, student, tokenizer = fresh(pair)
    config = DistillConfig(**{**FAST, "schedule": "all", "max_steps": 2})
    stats = distill(student, teacher, tokenizer, pet_examples, config, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == MODEL_FILES | {"checkpoint"}
    assert not any(k.startswith("projections") for k in load_file(tmp_path / "out" / "model.safetensors"))
    loaded, _ = load_model(tmp_path / "out")
    assert stats["parameters"] < stats["teacher_parameters"] and loaded.config.hidden_size == 66
    ids = tokenizer("SELECT name FROM pets", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, student.eval()(ids).logits)


def test_shallower_student_pairs_with_the_deeper_teacher_layers(pet_examples, tmp_path):
    teacher, tokenizer = tiny_model_and_tokenizer(seed=0)
    teacher = type(teacher)(tiny_config(len(tokenizer), num_hidden_layers=4)).eval()
    student = type(teacher)(tiny_config(len(tokenizer), num_hidden_layers=2))
    config = DistillConfig(**{**FAST, "schedule": "all", "max_steps": 1})
    stats = distill(student, teacher, tokenizer, pet_examples[:2], config, tmp_path / "out")
    assert stats["mapping"]["layer_map"] == {"0": 1, "1": 3} and stats["mapping"]["projection"] == "identity"
    config = dataclasses.replace(config, schedule="layerwise", steps_per_layer=1, max_steps=2)
    with pytest.raises(ValueError, match=r"the run.s 2 steps must exceed steps_per_layer x student layers"):
        distill(student, teacher, tokenizer, pet_examples[:2], config, tmp_path / "out2")


@pytest.mark.parametrize("values, message", [
    ({"schedule": "greedy"}, "schedule must be one of"),
    ({"temperature": 0}, "temperature must be > 0"),
    ({"hidden_loss": "cosine"}, "hidden_loss must be one of"),
    ({"kl_weight": -1.0}, "loss weights must be numbers >= 0"),
    ({"kl_weight": 0, "hidden_weight": 0, "ce_weight": 0, "schedule": "all"}, "at least one loss weight"),
    ({"hidden_weight": 0}, "schedule 'layerwise' needs hidden_weight > 0"),
    ({"layer_map": [2, 1]}, "layer_map must not decrease"),
    ({"layer_map": "first"}, "layer_map must be 'uniform' or teacher layer indices"),
    ({"steps_per_layer": 0}, "steps_per_layer must be >= 1"),
    ({"warmup_steps": 10, "max_steps": 10}, r"warmup_steps \(10\) must be >= 0 and below max_steps \(10\)"),
    ({"max_seq_len": 256}, r"max_schema_tokens \(400\) must be >= 1 and below max_seq_len \(256\)"),
    ({"teacher": "x"}, r"unknown key\(s\) \['teacher'\]"),
])
def test_config_errors_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(DistillConfig, values)


def test_layer_map_reads_lists_and_set_strings():
    assert config_from_dict(DistillConfig, {"layer_map": [0, 2]}).layer_map == (0, 2)
    assert config_from_dict(DistillConfig, {"layer_map": "1,3"}).layer_map == (1, 3)


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "teacher_dir" in capsys.readouterr().out


# ---- the final gold-SQL cross-entropy phase, and projections only where the widths differ ----

def test_final_gold_phase_trains_on_cross_entropy_alone(pair, pet_examples, tmp_path):
    teacher, student, tokenizer = fresh(pair)
    metrics = []
    config = DistillConfig(**{**FAST, "schedule": "all", "final_ce_fraction": 0.5, "batch_size": 1,
                              "max_steps": 8})
    stats = distill(student, teacher, tokenizer, pet_examples[:1], config, tmp_path / "out",
                    on_metrics=lambda step, m: metrics.append(m))
    assert [p["name"] for p in stats["schedule"]] == ["all", "gold"] and stats["final_phase"] == "gold"
    assert [m["phase"] for m in metrics] == [0] * 4 + [1] * 4
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert all(m["loss"] == pytest.approx(m["ce"], rel=1e-5) for m in metrics[4:])  # CE alone, weight 1
    first = metrics[0]  # the distillation phase still has every term
    assert first["loss"] == pytest.approx(first["kl"] + first["hidden_active"] + 0.5 * first["ce"], rel=1e-5)
    assert metrics[-1]["ce"] < metrics[4]["ce"]


def test_gold_phase_follows_the_final_phase_and_must_leave_it_steps():
    config = DistillConfig(schedule="layerwise", steps_per_layer=3, final_ce_fraction=0.25)
    schedule = distill_schedule(config, 2, total_steps=10)
    assert [phase_at(schedule, step).name for step in range(10)] == (["layer 0"] * 3 + ["layer 1"] * 3
                                                                     + ["final"] * 2 + ["gold"] * 2)
    assert distill_schedule(dataclasses.replace(config, final_ce_fraction=0.01), 2, 10)[-1].start_step == 9
    assert [p.name for p in distill_schedule(config, 2)] == ["layer 0", "layer 1", "final"]  # no total: no gold
    with pytest.raises(ValueError, match="final_ce_fraction 0.5: its 4 gold step"):
        distill_schedule(dataclasses.replace(config, final_ce_fraction=0.5), 2, 8)
    with pytest.raises(ConfigError, match="final_ce_fraction must be in"):
        DistillConfig(final_ce_fraction=1.0)


def test_killed_run_resumes_inside_the_gold_phase(pair, pet_examples, tmp_path):
    config = DistillConfig(**{**FAST, "learning_rate": 1e-3, "schedule": "all", "final_ce_fraction": 0.5,
                              "max_steps": 6, "checkpoint_every": 4})
    teacher, student, tokenizer = fresh(pair)
    distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "straight", tmp_path / "ckpt_straight")

    def kill_at_step_5(step, metrics):
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    teacher, student, tokenizer = fresh(pair)
    with pytest.raises(KeyboardInterrupt):
        distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt",
                on_metrics=kill_at_step_5)
    teacher, student, tokenizer = fresh(pair)
    phases = []
    resumed = distill(student, teacher, tokenizer, pet_examples[:3], config, tmp_path / "killed", tmp_path / "ckpt",
                      on_metrics=lambda step, m: phases.append((step, m["phase"])))
    assert resumed["resumed_from_step"] == 4 and phases == [(5, 1), (6, 1)]
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "killed")
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value)


def test_projections_exist_only_when_the_hidden_width_was_pruned(pair, pet_examples, tmp_path):
    teacher, _, tokenizer = fresh(pair)
    same_width = copy.deepcopy(teacher)
    prune_model(same_width, PruneConfig(ratio=0.6))
    assert same_width.config.hidden_size == teacher.config.hidden_size
    config = DistillConfig(**{**FAST, "schedule": "all", "max_steps": 2, "checkpoint_every": 2})
    stats = distill(same_width, teacher, tokenizer, pet_examples[:2], config, tmp_path / "same", tmp_path / "ckpt")
    assert stats["mapping"]["projection"] == "identity"
    saved = load_file(tmp_path / "ckpt" / "step-00000002" / "trainable.safetensors")
    assert not [name for name in saved if name.startswith("projections.")]
    assert stats["final_loss"] == stats["final_loss"]  # finite, not NaN

    teacher, narrower, tokenizer = fresh(pair)
    stats = distill(narrower, teacher, tokenizer, pet_examples[:2], config, tmp_path / "narrow", tmp_path / "ckpt2")
    assert stats["mapping"]["projection"] == "linear"
    saved = load_file(tmp_path / "ckpt2" / "step-00000002" / "trainable.safetensors")
    assert {"projections.0.weight", "projections.1.weight"} <= set(saved)
