"""Model folders: a standard Hugging Face Llama folder whose layers may differ in width after pruning.

A pruned model keeps the base config and adds `sqlcopilot_layers` (per layer: query heads, key/value heads, MLP
width) to config.json; `load_model` rebuilds those shapes before loading safetensors, so no pickle is involved.

    python -c "from sqlcopilot_core.modeling import tiny_model_and_tokenizer as t; m, k = t(); print(m)"
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 byte symbols + end and pad) that needs no download, for tests and smoke runs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS_TOKEN, PAD_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   model_max_length=4096)


def tiny_config(vocab_size: int, **overrides) -> LlamaConfig:
    """2 layers, 96 channels, 6 query heads sharing 2 key/value heads (grouped-query, like SmolLM2 at 9/3)."""
    settings = dict(vocab_size=vocab_size, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                    rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=None,
                    eos_token_id=vocab_size - 2, pad_token_id=vocab_size - 1)
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_model_and_tokenizer(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised tiny Llama and its byte tokenizer; the same seed gives the same weights."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tokenizer)))
    return model.eval(), tokenizer


def layer_shapes(model: LlamaForCausalLM) -> list[dict[str, int]]:
    """Per decoder layer: query heads, key/value heads and MLP width, read off the weight shapes."""
    shapes = []
    for layer in model.model.layers:
        head_dim = layer.self_attn.head_dim
        shapes.append({"num_attention_heads": layer.self_attn.q_proj.out_features // head_dim,
                       "num_key_value_heads": layer.self_attn.k_proj.out_features // head_dim,
                       "intermediate_size": layer.mlp.gate_proj.out_features})
    return shapes


def apply_layer_shapes(model: LlamaForCausalLM, shapes: list[dict[str, int]]) -> None:
    """Resize every layer's projections to `shapes` (fresh weights) so a pruned state dict fits exactly."""
    if len(shapes) != len(model.model.layers):
        raise ValueError(f"sqlcopilot_layers lists {len(shapes)} layers, the model has {len(model.model.layers)}")
    hidden = model.config.hidden_size
    for index, (layer, shape) in enumerate(zip(model.model.layers, shapes)):
        heads, kv_heads, width = shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]
        if kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"layer {index}: {heads} query heads cannot share {kv_heads} key/value heads evenly")
        attn, mlp, bias = layer.self_attn, layer.mlp, model.config.attention_bias
        attn.q_proj = nn.Linear(hidden, heads * attn.head_dim, bias=bias)
        attn.k_proj = nn.Linear(hidden, kv_heads * attn.head_dim, bias=bias)
        attn.v_proj = nn.Linear(hidden, kv_heads * attn.head_dim, bias=bias)
        attn.o_proj = nn.Linear(heads * attn.head_dim, hidden, bias=bias)
        attn.num_key_value_groups = heads // kv_heads
        mlp.gate_proj = nn.Linear(hidden, width, bias=model.config.mlp_bias)
        mlp.up_proj = nn.Linear(hidden, width, bias=model.config.mlp_bias)
        mlp.down_proj = nn.Linear(width, hidden, bias=model.config.mlp_bias)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model(model: LlamaForCausalLM, tokenizer, out_dir: str | Path) -> Path:
    """Write config (with per-layer shapes), safetensors weights and tokenizer files into `out_dir`."""
    out_dir = Path(out_dir)
    shapes = layer_shapes(model)
    model.config.sqlcopilot_layers = shapes
    model.config.num_parameters = count_parameters(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """All weights of a folder's model.safetensors, or of every shard its index lists."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for name in files:
            state.update(load_file(model_dir / name))
        return state
    single = model_dir / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (or its index); re-run the stage that made it")
    return load_file(single)


def load_model(model_dir: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """Load (model, tokenizer) from a folder written by `save_model` or any standard Llama folder."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    # a folder only: a missing one would otherwise be read as a model hub id and retried over the network
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model folder not found (a folder written by a stage, or a base model "
                                f"fetched by download_base)")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model folder (no config.json); re-run the stage that made it")
    config = AutoConfig.from_pretrained(model_dir)
    config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(config)
    shapes = getattr(config, "sqlcopilot_layers", None)
    if shapes:
        apply_layer_shapes(model, shapes)
    state = load_state_dict(model_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: weights do not fit the config: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _to_dtype_keeping_rotary_float32(model, dtype).eval(), tokenizer


def _to_dtype_keeping_rotary_float32(model: LlamaForCausalLM, dtype: torch.dtype) -> LlamaForCausalLM:
    """model.to(dtype), except the rotary inverse frequencies, which stay float32 as from_pretrained keeps them:
    rounded to bfloat16 they shift a position-300 angle by ~0.3 rad and change greedy outputs."""
    rotary = model.model.rotary_emb
    frequencies = {name: buffer.clone() for name, buffer in rotary.named_buffers(recurse=False)}
    model = model.to(dtype)
    for name, buffer in frequencies.items():
        setattr(rotary, name, buffer)
    return model
