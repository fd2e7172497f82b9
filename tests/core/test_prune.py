"""Structured pruning of the tiny 2-layer GQA Llama (6 query heads over 2 key/value heads, head_dim 16)."""

import pytest
import torch

from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.modeling import (count_parameters, layer_shapes, load_model, save_model,
                                      tiny_model_and_tokenizer)
from sqlcopilot_core.prune import (PruneConfig, PruneError, check_shapes, make_calibration_batches, plan_pruning,
                                   prune_model)

HEAD_DIM = 16
SQL_TEXTS = ["SELECT count(*) FROM singer", "SELECT name FROM stadium WHERE capacity > 5000",
             "SELECT avg(age) FROM head", "SELECT T1.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id",
             "SELECT DISTINCT country FROM singer ORDER BY country", "SELECT max(weight) FROM pets"]


def calibration_for(tokenizer, config):
    return make_calibration_batches([tokenizer(t)["input_ids"] for t in SQL_TEXTS], config, tokenizer.pad_token_id)


def assert_gqa_consistent(model):
    for index, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        assert attn.head_dim == HEAD_DIM, index
        assert attn.q_proj.out_features % HEAD_DIM == 0 and attn.k_proj.out_features % HEAD_DIM == 0, index
        heads, kv_heads = attn.q_proj.out_features // HEAD_DIM, attn.k_proj.out_features // HEAD_DIM
        assert kv_heads >= 1 and heads % kv_heads == 0, index
        assert attn.num_key_value_groups == heads // kv_heads, index
        assert attn.v_proj.weight.shape == attn.k_proj.weight.shape, index
        assert attn.o_proj.weight.shape == (model.config.hidden_size, heads * HEAD_DIM), index
        assert mlp.down_proj.weight.shape == (model.config.hidden_size, mlp.gate_proj.out_features), index
    check_shapes(model)


def test_config_rejects_bad_values():
    for bad in ({"ratio": 0}, {"ratio": 1.2}, {"criterion": "random"}, {"min_heads_per_group": 0},
                {"calibration_batches": 0}):
        with pytest.raises(ConfigError):
            PruneConfig(**bad)


def test_heads_are_removed_whole_and_every_layer_stays_grouped():
    model, _ = tiny_model_and_tokenizer(seed=0)
    report = prune_model(model, PruneConfig(ratio=0.5))
    assert_gqa_consistent(model)
    heads = [shape["num_attention_heads"] for shape in report["layers"]]
    assert sum(heads) < 12, "no query head was pruned"
    assert report["layers"] == layer_shapes(model)


def test_kept_query_heads_are_the_same_number_in_every_kept_group():
    model, _ = tiny_model_and_tokenizer(seed=0)
    for layer in plan_pruning(model, PruneConfig(ratio=0.4)).layers:
        owners = [head // 3 for head in layer.query_heads]
        assert set(owners) == set(layer.kv_heads)
        assert len({owners.count(group) for group in layer.kv_heads}) == 1


def test_pruned_model_runs_forward_and_generate():
    model, tokenizer = tiny_model_and_tokenizer(seed=1)
    prune_model(model, PruneConfig(ratio=0.4))
    prompt = tokenizer("SELECT name FROM", return_tensors="pt")
    with torch.no_grad():
        logits = model(**prompt).logits
        output = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert logits.shape == (1, prompt["input_ids"].shape[1], len(tokenizer)) and torch.isfinite(logits).all()
    assert output.shape[1] == prompt["input_ids"].shape[1] + 6


@pytest.mark.parametrize("prune_hidden", [False, True])
def test_saved_and_reloaded_model_gives_the_same_logits(tmp_path, prune_hidden):
    model, tokenizer = tiny_model_and_tokenizer(seed=2)
    prune_model(model, PruneConfig(ratio=0.2 if prune_hidden else 0.5, prune_hidden=prune_hidden))
    save_model(model, tokenizer, tmp_path)
    reloaded, _ = load_model(tmp_path)
    input_ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (model(input_ids).logits - reloaded(input_ids).logits).abs().max().item()
    assert difference < 1e-5
    assert layer_shapes(reloaded) == layer_shapes(model)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight


@pytest.mark.parametrize("ratio, prune_hidden", [(0.75, False), (0.5, False), (0.3, False), (0.12, True)])
def test_parameter_count_lands_within_two_percent(ratio, prune_hidden):
    model, _ = tiny_model_and_tokenizer(seed=0)
    original = count_parameters(model)
    report = prune_model(model, PruneConfig(ratio=ratio, prune_hidden=prune_hidden))
    assert report["kept_parameters"] == count_parameters(model)
    assert abs(count_parameters(model) / (ratio * original) - 1) <= 0.02
    assert (report["hidden_size"] < 96) == prune_hidden
    assert_gqa_consistent(model)


def test_pruning_the_hidden_width_keeps_head_dim_and_the_tied_embedding():
    model, _ = tiny_model_and_tokenizer(seed=0)
    report = prune_model(model, PruneConfig(ratio=0.12, prune_hidden=True))
    hidden = report["hidden_size"]
    assert hidden % 6 == 0 and model.config.hidden_size == hidden
    assert model.model.embed_tokens.weight.shape == (258, hidden)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert all(layer.input_layernorm.weight.shape == (hidden,) for layer in model.model.layers)
    assert model.model.norm.weight.shape == (hidden,)


def test_taylor_drops_channels_that_cannot_affect_the_loss_but_magnitude_keeps_them():
    # MLP channels 0..9 of layer 0 get big gate/up rows but a zero down column: large, yet dead
    def crafted_model():
        model, tokenizer = tiny_model_and_tokenizer(seed=3)
        mlp = model.model.layers[0].mlp
        with torch.no_grad():
            mlp.gate_proj.weight[:10] *= 10
            mlp.up_proj.weight[:10] *= 10
            mlp.down_proj.weight[:, :10] = 0
        return model, tokenizer

    dead = set(range(10))
    model, tokenizer = crafted_model()
    magnitude = plan_pruning(model, PruneConfig(ratio=0.5, prune_heads=False))
    model, tokenizer = crafted_model()
    config = PruneConfig(ratio=0.5, prune_heads=False, criterion="taylor")
    taylor = plan_pruning(model, config, calibration_for(tokenizer, config))
    assert dead <= set(magnitude.layers[0].mlp_channels)
    assert not dead & set(taylor.layers[0].mlp_channels)


def test_taylor_prunes_a_valid_model_from_a_loss_callable():
    model, tokenizer = tiny_model_and_tokenizer(seed=0)
    batch = tokenizer(SQL_TEXTS[:2], return_tensors="pt", padding=True)
    calls = []

    def loss(m):
        calls.append(1)
        return m(**batch, labels=batch["input_ids"], use_cache=False).loss

    config = PruneConfig(ratio=0.5, criterion="taylor", calibration_batches=3)
    report = prune_model(model, config, calibration=loss)
    assert len(calls) == 3 and abs(report["achieved_ratio"] - 0.5) <= 0.01
    assert_gqa_consistent(model)


def test_taylor_without_calibration_is_a_clear_error():
    model, _ = tiny_model_and_tokenizer(seed=0)
    with pytest.raises(PruneError, match="calibration"):
        prune_model(model, PruneConfig(criterion="taylor"))


def test_global_ranking_lets_layers_differ_and_local_ranking_keeps_them_equal():
    def model_with_weak_second_layer():
        model, _ = tiny_model_and_tokenizer(seed=0)
        with torch.no_grad():
            mlp = model.model.layers[1].mlp
            for linear in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                linear.weight *= 0.2
        return model

    global_plan = plan_pruning(model_with_weak_second_layer(), PruneConfig(ratio=0.5, prune_heads=False))
    local_plan = plan_pruning(model_with_weak_second_layer(),
                              PruneConfig(ratio=0.5, prune_heads=False, global_ranking=False))
    global_widths = [len(layer.mlp_channels) for layer in global_plan.layers]
    assert global_widths[1] < global_widths[0]
    assert len({len(layer.mlp_channels) for layer in local_plan.layers}) == 1


def test_unreachable_ratio_names_the_minimum_and_prune_hidden():
    model, _ = tiny_model_and_tokenizer(seed=0)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(PruneError, match=r"minimum reachable ratio .* is 0\.2\d+.*prune_hidden"):
        prune_model(model, PruneConfig(ratio=0.1))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a refused plan changed the model"


def test_pruning_only_the_mlp_leaves_attention_whole():
    model, _ = tiny_model_and_tokenizer(seed=0)
    report = prune_model(model, PruneConfig(ratio=0.6, prune_heads=False))
    assert all(s["num_attention_heads"] == 6 and s["num_key_value_heads"] == 2 for s in report["layers"])
    assert abs(report["achieved_ratio"] - 0.6) <= 0.012


def test_calibration_batches_are_padded_and_masked():
    _, tokenizer = tiny_model_and_tokenizer()
    config = PruneConfig(calibration_batches=2, calibration_batch_size=2)
    batches = calibration_for(tokenizer, config)
    assert len(batches) == 2 and all(b["input_ids"].shape[0] == 2 for b in batches)
    for batch in batches:
        assert ((batch["labels"] == -100) == (batch["attention_mask"] == 0)).all()


# ---- allocation by measured sensitivity ----

@pytest.fixture(scope="module")
def sample_spider(tmp_path_factory):
    from sqlcopilot_core.sample import build_sample_spider

    return build_sample_spider(tmp_path_factory.mktemp("spider") / "sample")


@pytest.fixture(scope="module")
def packed(sample_spider):
    """A handful of packed Spider train examples (the profile's sensitivity_examples stands for a few hundred)."""
    from sqlcopilot_core.prompting import PromptSettings
    from sqlcopilot_core.sensitivity import packed_batches
    from sqlcopilot_core.spider import load_split

    _, tokenizer = tiny_model_and_tokenizer()
    return packed_batches(load_split(sample_spider, "train"), tokenizer, PromptSettings(max_schema_tokens=256), 4,
                          0, 4, 512)


def test_config_rejects_bad_sensitivity_settings():
    for bad, field in (({"allocation": "random"}, "allocation"), ({"sensitivity_fractions": (0.5, 1.0)},
                                                                   "sensitivity_fractions"),
                       ({"sensitivity_fractions": ()}, "sensitivity_fractions"),
                       ({"sensitivity_examples": 0}, "sensitivity_examples")):
        with pytest.raises(ConfigError, match=f"PruneConfig.{field}"):
            PruneConfig(**bad)


def test_sensitivity_needs_packed_batches():
    model, _ = tiny_model_and_tokenizer()
    with pytest.raises(PruneError, match="allocation 'sensitivity' needs packed calibration batches"):
        plan_pruning(model, PruneConfig(ratio=0.5, allocation="sensitivity"))


def test_sensitivity_is_one_finite_figure_per_layer_and_structure_and_the_widths_hit_the_ratio(packed):
    import math

    from sqlcopilot_core.sensitivity import summary_by_layer

    model, _ = tiny_model_and_tokenizer(seed=0)
    config = PruneConfig(ratio=0.3, allocation="sensitivity", prune_hidden=True, sensitivity_fractions=(0.25, 0.5))
    report = prune_model(model, config, sensitivity_batches=packed)
    measured = report["sensitivity"]
    assert math.isfinite(measured["base_loss"]) and len(measured["layers"]) == 2
    for layer in measured["layers"]:
        assert set(layer) == {"attention", "mlp"}
        assert layer["attention"] == {0.5: pytest.approx(layer["attention"][0.5])}  # 1 of 2 groups, rounded once
        assert set(layer["mlp"]) == {0.25, 0.5}
        assert all(math.isfinite(rise) for figures in layer.values() for rise in figures.values())
    assert set(measured["hidden"]) == {0.25, 0.5} and all(map(math.isfinite, measured["hidden"].values()))
    assert abs(report["achieved_ratio"] - 0.3) <= 0.02
    assert_gqa_consistent(model)
    assert report["allocation"] == "sensitivity" and len(report["removed_fractions"]) == 2
    assert [set(row) for row in summary_by_layer(report)] == [
        {"sensitivity_attention", "sensitivity_mlp", "removed_attention", "removed_mlp"}] * 2
    model.eval()(input_ids=torch.zeros((1, 3), dtype=torch.long), use_cache=False)


@pytest.mark.parametrize("ratio, prune_hidden", [(0.5, False), (0.3, False), (0.12, True)])
def test_sensitivity_widths_are_valid_gqa_shapes_at_every_ratio(packed, ratio, prune_hidden):
    model, _ = tiny_model_and_tokenizer(seed=1)
    config = PruneConfig(ratio=ratio, allocation="sensitivity", prune_hidden=prune_hidden,
                         sensitivity_fractions=(0.5,))
    report = prune_model(model, config, sensitivity_batches=packed)
    assert abs(report["achieved_ratio"] - ratio) <= 0.02
    check_shapes(model)


@pytest.mark.parametrize("trained_layer", [0, 1])
def test_the_layer_whose_removal_hurts_more_keeps_more(packed, trained_layer):
    """Only one layer's MLP is trained (the other stays random, so removing it costs nothing): the sensitivity
    allocation keeps more of the trained layer's MLP channels than of the other's."""
    from sqlcopilot_core.packing import per_branch_loss

    model, _ = tiny_model_and_tokenizer(seed=0)
    model.requires_grad_(False)
    mlp = model.model.layers[trained_layer].mlp.requires_grad_(True)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        loss = per_branch_loss(model, packed[0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    report = prune_model(model, PruneConfig(ratio=0.5, allocation="sensitivity", sensitivity_fractions=(0.5,)),
                         sensitivity_batches=packed)
    rises = [layer["mlp"][0.5] for layer in report["sensitivity"]["layers"]]
    assert rises[trained_layer] > rises[1 - trained_layer]
    widths = [shape["intermediate_size"] for shape in report["layers"]]
    assert widths[trained_layer] > widths[1 - trained_layer], widths
    check_shapes(model)


def test_compare_reports_held_out_loss_of_global_and_sensitivity_allocation(tmp_path, sample_spider, capsys):
    import json
    import math

    from sqlcopilot_core.prompting import PromptSettings, write_prompt_settings
    from sqlcopilot_core.prune import main

    model, tokenizer = tiny_model_and_tokenizer(seed=0)
    save_model(model, tokenizer, tmp_path / "model")
    write_prompt_settings(tmp_path / "model", PromptSettings(max_schema_tokens=256))
    main(["compare", "--model", str(tmp_path / "model"), "--spider-dir", str(sample_spider), "--ratio", "0.5",
          "--holdout", "4", "--ex", "2", "--out", str(tmp_path / "compare.json"),
          "--set", "sensitivity_examples=4", "sensitivity_fractions=[0.5]", "sensitivity_max_seq_len=768",
          "calibration_batches=2"])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "compare.json").read_text())
    assert printed.rstrip().endswith(json.dumps(result, indent=1))
    assert result["criterion"] == "taylor" and result["holdout"] == 4 and 1 <= result["holdout_used"] <= 4
    for name in ("global", "sensitivity"):
        assert math.isfinite(result[name]["holdout_loss"]) and abs(result[name]["achieved_ratio"] - 0.5) <= 0.02
        assert 0 <= result[name]["ex"] <= 1
    assert "removed_fractions" in result["sensitivity"] and "removed_fractions" not in result["global"]
    assert math.isfinite(result["unpruned"]["holdout_loss"])


def test_compare_can_put_every_layer_cut_alike_beside_the_global_ranking(tmp_path, sample_spider):
    import math

    from sqlcopilot_core.prompting import PromptSettings
    from sqlcopilot_core.prune import compare_allocations
    from sqlcopilot_core.spider import load_split

    model, tokenizer = tiny_model_and_tokenizer(seed=0)
    result = compare_allocations(model, tokenizer, load_split(sample_spider, "train"),
                                 PromptSettings(max_schema_tokens=256), PruneConfig(ratio=0.5, criterion="taylor",
                                                                                    calibration_batches=2), 4,
                                 variants=("global", "uniform"))
    assert set(result) >= {"global", "uniform"} and "sensitivity" not in result
    assert result["taylor_examples"] == 4 and "holdout_loss_change" not in result
    shapes = [tuple(sorted(layer.items())) for layer in result["uniform"]["layers"]]
    assert len(set(shapes)) == 1, shapes  # every layer the same width
    for name in ("global", "uniform"):
        assert math.isfinite(result[name]["holdout_loss"]) and abs(result[name]["achieved_ratio"] - 0.5) <= 0.02
    with pytest.raises(PruneError, match="variants"):
        compare_allocations(model, tokenizer, load_split(sample_spider, "train"), PromptSettings(), PruneConfig(), 4,
                            variants=("random",))


def test_rerunning_the_layers_above_a_recorded_input_gives_the_whole_pass_loss(packed):
    from sqlcopilot_core.packing import per_branch_loss
    from sqlcopilot_core.sensitivity import LayerInputs, branch_losses_from

    model, _ = tiny_model_and_tokenizer(seed=0)
    with torch.no_grad():
        with LayerInputs(model) as inputs:
            whole = per_branch_loss(model, packed[0])
        for start in (0, 1):
            torch.testing.assert_close(branch_losses_from(model, packed[0], inputs, start), whole)


def test_sensitivity_examples_can_come_grouped_by_database(sample_spider):
    from collections import Counter

    from sqlcopilot_core.prompting import PromptSettings
    from sqlcopilot_core.sensitivity import packed_batches
    from sqlcopilot_core.spider import load_split

    _, tokenizer = tiny_model_and_tokenizer()
    examples = load_split(sample_spider, "train")
    grouped = packed_batches(examples, tokenizer, PromptSettings(max_schema_tokens=256), 6, 0, 8, 768,
                             per_database=3)
    databases = Counter(e.example.db_id for batch in grouped for e in batch.examples)
    assert sum(databases.values()) <= 6 and max(databases.values()) <= 3 and len(databases) <= 2
    spread = packed_batches(examples, tokenizer, PromptSettings(max_schema_tokens=256), 6, 0, 8, 768)
    assert sum(b.n_tokens() for b in grouped) < sum(b.n_tokens() for b in spread)
