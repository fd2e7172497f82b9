"""The exportable decoder and the export stage core, on tiny random Llama models.

    .venv/bin/python -m pytest -q tests/core/test_export.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.decoder import Decoder, greedy_generate, reorder_beam_caches
from sqlcopilot_core.export import ExportConfig, ExportError, export_model, hf_greedy, load_exported, read_manifest
from sqlcopilot_core.modeling import apply_layer_shapes, load_model, save_model, tiny_config, tiny_tokenizer

PROMPTS = ["SELECT name FROM singer WHERE age > 30", "How many heads of the departments are older than 56 ?",
           "-- SQLite\nSELECT count(*) FROM"]
PRUNED_SHAPES = [{"num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 120},
                 {"num_attention_heads": 3, "num_key_value_heads": 1, "intermediate_size": 56}]


def make_model_folder(path: Path, shapes: list[dict] | None = None, seed: int = 0, **config) -> Path:
    """A tiny Llama saved as a model folder; weights drawn wide (std 0.2) so greedy tokens vary from step to
    step instead of repeating one token, which would let a broken cache pass unnoticed."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer), initializer_range=0.2, **config))
    if shapes:
        apply_layer_shapes(model, shapes)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "proj" in name:
                    parameter.normal_(0.0, 0.2)
    return save_model(model.eval(), tokenizer, path)


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    return tokenizer(prompt, return_tensors="pt").input_ids


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine it costs a lot of waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def exported_dir(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "fp32"
    export_model(model_dir, out, ExportConfig(max_seq_len=96, parity_new_tokens=12), PROMPTS)
    return out


@pytest.mark.parametrize("packed", [False, True])
def test_decoder_logits_equal_transformers_at_every_step(model_dir, packed):
    model, tokenizer = load_model(model_dir)
    decoder = Decoder.from_hf(model, max_seq_len=64)
    if packed:
        decoder.pack()
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        with torch.inference_mode():
            caches = decoder.new_caches()
            steps = [decoder.prefill(ids, caches)]
            tokens = [int(steps[-1].argmax())]
            for pos in range(ids.shape[1], ids.shape[1] + 10):
                steps.append(decoder.decode_step(tokens[-1], pos, caches))
                tokens.append(int(steps[-1].argmax()))
            expected = model(torch.tensor([ids[0].tolist() + tokens[:-1]])).logits[0, ids.shape[1] - 1:]
        assert (torch.cat(steps) - expected).abs().max().item() < 1e-4
        assert len(set(tokens)) > 3, "the tiny model should not repeat one token"


@pytest.mark.parametrize("shapes", [None, PRUNED_SHAPES])
def test_prefix_prefill_and_beam_rows_equal_the_one_row_graph(tmp_path, shapes):
    """prefill_at on top of a prefix gives the full prefill's logits and cache; decode_beams gives every row the
    logits decode_step gives one row, whatever the parent order of the beam caches."""
    decoder = torch.jit.script(Decoder.from_folder(make_model_folder(tmp_path / "model", shapes, seed=1), 64))
    ids = torch.randint(0, 250, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full, split = decoder.new_caches(), decoder.new_caches()
        logits = decoder.prefill(ids, full)
        decoder.prefill_at(ids[:, :5], 0, split)
        assert (decoder.prefill_at(ids[:, 5:], 5, split) - logits).abs().max() < 1e-5
        assert max((a - b).abs().max().item() for a, b in zip(full, split)) < 1e-5
        tokens, expected, caches = [int(logits.argmax())], [], [c.clone() for c in full]
        for pos in range(12, 18):
            expected.append(decoder.decode_step(tokens[-1], pos, caches))
            tokens.append(int(expected[-1].argmax()))
        beam_caches = decoder.new_beam_caches(3, 8)
        for fed, pos in enumerate(range(12, 18)):
            reorder_beam_caches(beam_caches, [0, 0, 0] if fed == 0 else [2, 0, 1], fed)
            rows = decoder.decode_beams(torch.tensor([tokens[fed]] * 3), pos, 12, full, beam_caches)
            assert rows.shape == (3, 258) and (rows - expected[fed]).abs().max() < 1e-4


def test_export_greedy_equals_transformers_greedy(model_dir, exported_dir):
    model, tokenizer = load_model(model_dir)
    exported = load_exported(exported_dir)
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)
        assert exported.generate_exported(ids, 20) == hf_greedy(model, ids, 20, tokenizer.eos_token_id)


def test_exported_beams_follow_transformers_beams_and_one_beam_is_greedy(model_dir, exported_dir):
    """The graph's beam reference (decode_beams over a shared prompt cache) gives beams.hf_beam_generate's
    candidates; with one beam it is greedy decoding (end-of-text left out); a prefix prefilled first changes
    nothing."""
    from sqlcopilot_core.beams import hf_beam_generate

    model, tokenizer = load_model(model_dir)
    exported = load_exported(exported_dir)
    for prompt in PROMPTS:
        ids = prompt_ids(tokenizer, prompt)[0].tolist()
        beams = exported.beams_exported(ids, 3, 12)
        with torch.inference_mode():
            assert [c.tokens for c in beams] == [c.tokens for c in hf_beam_generate(model, ids, 3, 12,
                                                                                     tokenizer.eos_token_id)]
        assert [c.tokens for c in exported.beams_exported(ids, 3, 12, prefix_len=4)] == [c.tokens for c in beams]
        greedy = [t for t in exported.generate_exported(ids, 12) if t != tokenizer.eos_token_id]
        assert [list(c.tokens) for c in exported.beams_exported(ids, 1, 12)] == [greedy]


def test_export_folder_holds_graph_tokenizer_and_manifest(model_dir, exported_dir):
    assert {p.name for p in exported_dir.iterdir()} == {"decoder.pt", "manifest.json", "tokenizer.json",
                                                         "tokenizer_config.json", "token_texts.json"}
    manifest = read_manifest(exported_dir)
    assert manifest["format"] == "sqlcopilot-export" and manifest["format_version"] == 3
    tokenizer = tiny_tokenizer()
    assert tokenizer.convert_tokens_to_ids(";") in manifest["stop_token_ids"]
    assert all(";" in tokenizer.decode([i]) or "\n\n" in tokenizer.decode([i]) for i in manifest["stop_token_ids"])
    assert set(manifest["files"]) == {"decoder.pt", "tokenizer.json", "tokenizer_config.json",
                                        "token_texts.json"}
    assert manifest["vocab_size"] == 258 and manifest["eos_token_id"] == 256 and manifest["pad_token_id"] == 257
    assert (manifest["max_seq_len"], manifest["dtype"], manifest["hidden_size"], manifest["head_dim"]) == \
        (96, "float32", 96, 16)
    assert manifest["layers"] == [{"num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 192}] * 2
    assert manifest["graph"] == "decoder.pt" and manifest["tied_embeddings"] is True
    parity = manifest["parity"]
    assert parity["prompts"] == 3 and parity["greedy_identical"] == 3 and parity["max_abs_logit_diff"] < 1e-4
    assert load_exported(exported_dir).tokenizer().decode(prompt_ids(tiny_tokenizer(), "ok")[0]) == "ok"


@pytest.mark.parametrize("change, message", [({"format_version": 1}, "format_version 1"),
                                             ({"format": "gguf"}, "format 'gguf'")])
def test_unknown_manifest_is_refused_naming_the_export_stage(exported_dir, tmp_path, change, message):
    copy = Path(shutil.copytree(exported_dir, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(ExportError, match=f"{message}.*re-run the export stage"):
        load_exported(copy)


def test_export_writes_each_token_s_text_for_the_cpp_constraint(exported_dir):
    """token_texts.json and the special ids (banned but end-of-text): the C++ schema constraint's vocabulary."""
    from sqlcopilot_core.sqlconstraint import token_texts

    manifest = read_manifest(exported_dir)
    assert json.loads((exported_dir / "token_texts.json").read_text()) == token_texts(tiny_tokenizer())
    assert manifest["token_texts"] == "token_texts.json" and manifest["special_token_ids"] == [256, 257]


def test_missing_graph_is_named(exported_dir, tmp_path):
    copy = Path(shutil.copytree(exported_dir, tmp_path / "copy"))
    (copy / "decoder.pt").unlink()
    with pytest.raises(ExportError, match=r"missing file\(s\) \['decoder.pt'\]; re-run the export stage"):
        load_exported(copy)


def flip_one_bit(path: Path, offset_fraction: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_fraction)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["decoder.pt", "tokenizer.json"])
def test_a_flipped_bit_is_refused_naming_the_file(exported_dir, tmp_path, name):
    copy = Path(shutil.copytree(exported_dir, tmp_path / "copy"))
    flip_one_bit(copy / name)
    with pytest.raises(ExportError, match=f"{copy / name}: checksum differs from the manifest"):
        load_exported(copy)


def test_pruned_model_with_differing_layer_widths_exports_and_matches(tmp_path):
    model_dir = make_model_folder(tmp_path / "pruned", PRUNED_SHAPES, seed=1)
    manifest = export_model(model_dir, tmp_path / "export", ExportConfig(max_seq_len=64), PROMPTS)
    assert manifest["layers"] == PRUNED_SHAPES
    assert manifest["parity"]["greedy_identical"] == len(PROMPTS)
    model, tokenizer = load_model(model_dir)
    ids = prompt_ids(tokenizer, PROMPTS[0])
    assert load_exported(tmp_path / "export").generate_exported(ids, 16) == hf_greedy(model, ids, 16, 256)


def test_hidden_width_need_not_equal_heads_times_head_dim(tmp_path):
    model_dir = make_model_folder(tmp_path / "narrow", hidden_size=72, intermediate_size=128)  # 6 heads x 16 = 96
    manifest = export_model(model_dir, tmp_path / "export", ExportConfig(max_seq_len=64), PROMPTS[:1])
    assert (manifest["hidden_size"], manifest["head_dim"]) == (72, 16)
    assert manifest["parity"]["greedy_identical"] == 1


def test_bfloat16_export_runs_and_records_its_agreement(model_dir, tmp_path):
    manifest = export_model(model_dir, tmp_path / "bf16", ExportConfig(dtype="bfloat16", max_seq_len=64), PROMPTS)
    parity = manifest["parity"]
    assert manifest["dtype"] == "bfloat16" and parity["reference"] == "transformers bfloat16"
    assert len(parity["vs_float32_first_divergence"]) == len(PROMPTS)
    assert parity["max_abs_logit_diff"] < 2.0 and parity["max_abs_prefill_logit_diff"] == 0.0
    exported = load_exported(tmp_path / "bf16")
    assert exported.module.embed.dtype == torch.bfloat16
    # The first token comes straight from the prompt pass, before bfloat16 rounding can compound.
    model, tokenizer = load_model(model_dir, dtype=torch.bfloat16)
    ids = prompt_ids(tokenizer, PROMPTS[0])
    assert exported.generate_exported(ids, 1) == hf_greedy(model, ids, 1, 256)


def test_generation_stops_at_end_of_sequence(model_dir):
    model, tokenizer = load_model(model_dir)
    decoder = Decoder.from_hf(model, max_seq_len=64)
    ids = prompt_ids(tokenizer, PROMPTS[0])
    with torch.inference_mode():
        free = greedy_generate(decoder, ids, 8)
        assert greedy_generate(decoder, ids, 8, eos_token_id=free[2]) == free[:3]
        # 60 prompt positions + 4 fed tokens fill the 64-position cache; the 5th token is chosen but never fed.
        assert len(greedy_generate(decoder, torch.zeros(1, 60, dtype=torch.long), 50)) == 5


def test_export_refuses_bad_settings(model_dir, exported_dir, tmp_path):
    with pytest.raises(ConfigError, match="export.dtype"):
        ExportConfig(dtype="float16")
    with pytest.raises(ExportError, match="not empty"):
        export_model(model_dir, exported_dir, ExportConfig(), PROMPTS)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        Decoder.from_hf(load_model(model_dir)[0], max_seq_len=10_000)
    with pytest.raises(ValueError, match="max_seq_len"):
        load_exported(exported_dir).generate_exported(list(range(96)), 4)


def test_failed_parity_leaves_no_loadable_export(model_dir, tmp_path):
    strict = ExportConfig(max_seq_len=64, max_logit_diff=0.0)  # float32 kernels differ from transformers' by ~1e-6
    with pytest.raises(ExportError, match="largest logit difference .* exceeds 0"):
        export_model(model_dir, tmp_path / "strict", strict, PROMPTS[:1])
    assert not (tmp_path / "strict" / "manifest.json").exists()
    assert json.loads((tmp_path / "strict" / "parity_failure.json").read_text())["prompts"] == 1
    assert not list(tmp_path.glob(".strict.partial-*"))  # the half-written graph is not left beside it


def test_an_export_stopped_half_way_leaves_nothing_that_looks_like_an_export(model_dir, tmp_path, monkeypatch):
    import sqlcopilot_core.export as export_module

    def interrupted(*args, **kwargs):  # the graph and tokenizer files are written by now: stop as a kill would
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "parity_check", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(model_dir, tmp_path / "out", ExportConfig(max_seq_len=64), PROMPTS[:1])
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())
    monkeypatch.undo()
    import socket
    killed = tmp_path / f".out.partial-{socket.gethostname()}:999999999:0"  # a SIGKILLed export's (no such process)
    killed.mkdir()
    (killed / "decoder.pt").write_bytes(b"half")
    manifest = export_model(model_dir, tmp_path / "out", ExportConfig(max_seq_len=64), PROMPTS[:1])  # runs again
    assert load_exported(tmp_path / "out").manifest["files"] == manifest["files"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the dead run's partial folder is gone


def test_export_into_an_existing_empty_folder_writes_in_place(model_dir, tmp_path):
    (tmp_path / "mounted").mkdir()
    export_model(model_dir, tmp_path / "mounted", ExportConfig(max_seq_len=64), PROMPTS[:1])
    assert load_exported(tmp_path / "mounted").manifest["graph"] == "decoder.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["mounted"]
