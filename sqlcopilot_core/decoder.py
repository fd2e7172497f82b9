"""The exportable model: a small Llama decoder with a fixed-size key/value cache, built from a model folder.

It computes what transformers' LlamaForCausalLM computes (same rotary tables, same norm and attention numerics), but
in a form TorchScript can compile with static shapes and that decodes one token with few, large operations:
query/key/value and gate/up projections are fused into one matrix each, the cache is written in place, and logits
are computed for the last position only. Layers may differ in width (pruned models): every size is read off the
weight shapes, except head_dim, which comes from the config.

Beams share the prompt: `decode_beams` advances N beams by one token each in one pass over the weights, every beam
attending over the prompt's cache (computed once) and its own small cache of generated tokens, which the caller
reorders by parent (`beam_generate`, the reference the C++ runner is tested against). `prefill_at` continues a
prompt on top of a cached prefix (a database's schema).

    python -m sqlcopilot_core.decoder work/smollm2_base "SELECT"
"""

import sys
from pathlib import Path
from typing import Final, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DecoderLayer(nn.Module):
    """One pre-norm block: attention over the cache, then a SwiGLU MLP, each added to the residual stream."""

    heads: Final[int]
    kv_heads: Final[int]
    head_dim: Final[int]
    width: Final[int]
    eps: Final[float]
    scale: Final[float]

    def __init__(self, weights: dict[str, Tensor], head_dim: int, eps: float):
        super().__init__()
        self.head_dim, self.eps, self.scale = head_dim, eps, head_dim ** -0.5
        self.heads = weights["q"].shape[0] // head_dim
        self.kv_heads = weights["k"].shape[0] // head_dim
        self.width = weights["gate"].shape[0]
        self.attn_norm = nn.Buffer(weights["attn_norm"].contiguous())
        self.mlp_norm = nn.Buffer(weights["mlp_norm"].contiguous())
        self.qkv = nn.Buffer(torch.cat([weights["q"], weights["k"], weights["v"]]))
        self.out = nn.Buffer(weights["o"].contiguous())
        self.gate_up = nn.Buffer(torch.cat([weights["gate"], weights["up"]]))
        self.down = nn.Buffer(weights["down"].contiguous())

    def pack(self):
        self.qkv, self.out = pack_weight(self.qkv), pack_weight(self.out)
        self.gate_up, self.down = pack_weight(self.gate_up), pack_weight(self.down)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, pos: int) -> Tensor:
        seq = x.size(0)
        qkv = linear(rms_norm(x, self.attn_norm, self.eps), self.qkv)
        qkv = qkv.view(seq, self.heads + 2 * self.kv_heads, self.head_dim)
        # Queries and keys get the rotation together: one op chain instead of two.
        qk = rotate(qkv.narrow(1, 0, self.heads + self.kv_heads), cos, sin)
        k_cache[0].narrow(1, pos, seq).copy_(qk.narrow(1, self.heads, self.kv_heads).transpose(0, 1))
        v_cache[0].narrow(1, pos, seq).copy_(qkv.narrow(1, self.heads + self.kv_heads, self.kv_heads).transpose(0, 1))
        keys, values = k_cache.narrow(2, 0, pos + seq), v_cache.narrow(2, 0, pos + seq)
        if seq == 1:
            attn = self.attend_one(qk.narrow(1, 0, self.heads), keys[0], values[0])
        else:
            # Inputs are 4-d and contiguous as transformers passes them: the bfloat16 kernel rounds differently
            # otherwise. A prefill from position 0 has the plain lower triangle as causal mask; one on top of a
            # cached prefix lets row i (position pos + i) see positions 0 .. pos + i.
            q = qk.narrow(1, 0, self.heads).transpose(0, 1).unsqueeze(0).contiguous()
            if pos == 0:
                attn = F.scaled_dot_product_attention(q, keys.contiguous(), values.contiguous(), is_causal=True,
                                                      scale=self.scale, enable_gqa=self.heads != self.kv_heads)
            else:
                mask = torch.ones([seq, pos + seq], dtype=torch.bool).tril(pos)
                attn = F.scaled_dot_product_attention(q, keys.contiguous(), values.contiguous(), attn_mask=mask,
                                                      scale=self.scale, enable_gqa=self.heads != self.kv_heads)
            attn = attn[0].transpose(0, 1)
        return self.mlp(x + linear(attn.reshape(seq, self.heads * self.head_dim), self.out))

    def step_beams(self, x: Tensor, cos: Tensor, sin: Tensor, k_cache: Tensor, v_cache: Tensor, k_beams: Tensor,
                   v_beams: Tensor, prompt_len: int, pos: int) -> Tensor:
        """One token per beam row x [rows, hidden], all at position `pos`: keys and values go to slot
        pos - prompt_len of the rows' own caches [rows+, kv_heads, capacity, head_dim]; each row attends over the
        shared prompt positions 0 .. prompt_len - 1 and its own slots 0 .. pos - prompt_len."""
        rows, slot = x.size(0), pos - prompt_len
        qkv = linear(rms_norm(x, self.attn_norm, self.eps), self.qkv)
        qkv = qkv.view(rows, self.heads + 2 * self.kv_heads, self.head_dim)
        qk = rotate(qkv.narrow(1, 0, self.heads + self.kv_heads), cos, sin)
        k_beams.narrow(0, 0, rows).select(2, slot).copy_(qk.narrow(1, self.heads, self.kv_heads))
        v_beams.narrow(0, 0, rows).select(2, slot).copy_(qkv.narrow(1, self.heads + self.kv_heads, self.kv_heads))
        attn = self.attend_beams(qk.narrow(1, 0, self.heads), k_cache[0].narrow(1, 0, prompt_len),
                                 v_cache[0].narrow(1, 0, prompt_len), k_beams.narrow(0, 0, rows).narrow(2, 0, slot + 1),
                                 v_beams.narrow(0, 0, rows).narrow(2, 0, slot + 1))
        return self.mlp(x + linear(attn.reshape(rows, self.heads * self.head_dim), self.out))

    def mlp(self, x: Tensor) -> Tensor:
        gate_up = linear(rms_norm(x, self.mlp_norm, self.eps), self.gate_up)
        return x + linear(F.silu(gate_up.narrow(1, 0, self.width)) * gate_up.narrow(1, self.width, self.width),
                          self.down)

    def attend_one(self, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """One query position over the cache, in float32 like the fused attention kernels; the query heads of a
        group share their key/value head by a reshape, never a copy of the cache."""
        q = q.view(self.kv_heads, self.heads // self.kv_heads, self.head_dim).float()
        scores = torch.matmul(q, keys.float().transpose(1, 2)) * self.scale
        attn = torch.matmul(scores.softmax(-1), values.float())
        return attn.to(keys.dtype).view(1, self.heads, self.head_dim)

    def attend_beams(self, q: Tensor, keys: Tensor, values: Tensor, own_keys: Tensor, own_values: Tensor) -> Tensor:
        """Row n's query q[n] [heads, head_dim] over the shared prompt keys [kv_heads, P, head_dim] (read once for
        all rows) and its own keys own_keys[n] [kv_heads, L, head_dim], one softmax over both, in float32."""
        rows, group = q.size(0), self.heads // self.kv_heads
        q = q.reshape(rows, self.kv_heads, group, self.head_dim).float()
        shared = torch.matmul(q.transpose(0, 1).reshape(self.kv_heads, rows * group, self.head_dim),
                              keys.float().transpose(1, 2))
        shared = shared.view(self.kv_heads, rows, group, -1).transpose(0, 1)
        own = torch.matmul(q, own_keys.float().transpose(2, 3))
        weights = (torch.cat([shared, own], -1) * self.scale).softmax(-1)
        prompt_len = keys.size(1)
        from_prompt = torch.matmul(weights.narrow(3, 0, prompt_len).transpose(0, 1).reshape(
            self.kv_heads, rows * group, prompt_len), values.float())
        attn = from_prompt.view(self.kv_heads, rows, group, self.head_dim).transpose(0, 1) + torch.matmul(
            weights.narrow(3, prompt_len, own_keys.size(2)), own_values.float())
        return attn.to(keys.dtype).reshape(rows, self.heads, self.head_dim)


class Decoder(nn.Module):
    """Token embedding, decoder layers, final norm and (tied or separate) output projection; batch size 1."""

    max_seq_len: Final[int]
    eps: Final[float]

    def __init__(self, state: dict[str, Tensor], head_dim: int, eps: float, inv_freq: Tensor, rope_scale: float,
                 max_seq_len: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        embed = state["model.embed_tokens.weight"]
        tied = "lm_head.weight" not in state or state["lm_head.weight"].data_ptr() == embed.data_ptr()
        state = {name: tensor.detach().to(dtype) for name, tensor in state.items()}
        embed = state["model.embed_tokens.weight"]
        self.max_seq_len, self.eps = max_seq_len, eps
        self.embed = nn.Buffer(embed.contiguous())
        self.lm_head = nn.Buffer(self.embed if tied else state["lm_head.weight"].contiguous())
        self.norm = nn.Buffer(state["model.norm.weight"])
        self.layers = nn.ModuleList([DecoderLayer(weights, head_dim, eps)
                                     for weights in _layer_weights(state)])
        cos, sin = rotary_tables(inv_freq, max_seq_len, rope_scale)
        self.cos, self.sin = nn.Buffer(cos.to(dtype)), nn.Buffer(sin.to(dtype))

    @classmethod
    def from_hf(cls, model, max_seq_len: int, dtype: torch.dtype = torch.float32) -> "Decoder":
        """Build from a transformers LlamaForCausalLM (possibly with per-layer widths)."""
        config = model.config
        unsupported = [name for name in ("attention_bias", "mlp_bias") if getattr(config, name, False)]
        if unsupported or config.hidden_act != "silu":
            raise ValueError(f"decoder supports bias-free SiLU Llama models; config has {unsupported or config.hidden_act}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if max_seq_len > config.max_position_embeddings:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}")
        inv_freq, rope_scale = rope_frequencies(config, head_dim)
        return cls(model.state_dict(), head_dim, config.rms_norm_eps, inv_freq, rope_scale, max_seq_len, dtype)

    @classmethod
    def from_folder(cls, model_dir: str | Path, max_seq_len: int, dtype: torch.dtype = torch.float32) -> "Decoder":
        """Build from a model folder (see sqlcopilot_core.modeling.load_model)."""
        from sqlcopilot_core.modeling import load_model

        return cls.from_hf(load_model(model_dir)[0], max_seq_len, dtype)

    @torch.jit.export
    def pack(self):
        """Reorder every matmul weight for fast one-row products; call once after loading (see `pack_weight`)."""
        for layer in self.layers:
            layer.pack()
        self.lm_head = pack_weight(self.lm_head)

    @torch.jit.export
    def new_caches(self) -> List[Tensor]:
        """Zeroed key and value caches, [1, kv_heads, max_seq_len, head_dim] per layer, in the order k0, v0, k1..."""
        caches: List[Tensor] = []
        for layer in self.layers:
            for _ in range(2):
                caches.append(self.cos.new_zeros([1, layer.kv_heads, self.max_seq_len, layer.head_dim]))
        return caches

    @torch.jit.export
    def prefill(self, input_ids: Tensor, caches: List[Tensor]) -> Tensor:
        """Logits [1, vocab] after the prompt input_ids [1, T]; fills cache positions 0..T-1."""
        return self.run(F.embedding(input_ids[0], self.embed), 0, caches)

    @torch.jit.export
    def prefill_at(self, input_ids: Tensor, pos: int, caches: List[Tensor]) -> Tensor:
        """Logits [1, vocab] after input_ids [1, T] at positions pos..pos+T-1, on top of cache positions 0..pos-1
        (a cached prompt prefix); fills those T positions."""
        return self.run(F.embedding(input_ids[0], self.embed), pos, caches)

    @torch.jit.export
    def new_beam_caches(self, rows: int, capacity: int) -> List[Tensor]:
        """Zeroed per-beam key and value caches, [rows, kv_heads, capacity, head_dim] per layer (k0, v0, k1, ...):
        the tokens each beam generated, beside the prompt's cache that all beams share."""
        caches: List[Tensor] = []
        for layer in self.layers:
            for _ in range(2):
                caches.append(self.cos.new_zeros([rows, layer.kv_heads, capacity, layer.head_dim]))
        return caches

    @torch.jit.export
    def decode_beams(self, tokens: Tensor, pos: int, prompt_len: int, caches: List[Tensor],
                     beam_caches: List[Tensor]) -> Tensor:
        """Logits [N, vocab] after feeding tokens[n] (N beams) at position `pos`: every row attends over the shared
        prompt cache positions 0..prompt_len-1 in `caches` and its own row of `beam_caches`, slots
        0..pos-prompt_len (the last one written here). The weights are read once for all N rows."""
        rows = tokens.size(0)
        if pos >= self.max_seq_len or pos < prompt_len:
            raise ValueError(f"position {pos} is outside the cache of {self.max_seq_len} (prompt {prompt_len})")
        if rows > beam_caches[0].size(0) or pos - prompt_len >= beam_caches[0].size(2):
            raise ValueError(f"{rows} beams at slot {pos - prompt_len} do not fit beam caches of shape "
                             f"{beam_caches[0].shape}")
        x = F.embedding(tokens, self.embed)
        cos, sin = self.cos.narrow(0, pos, 1).unsqueeze(1), self.sin.narrow(0, pos, 1).unsqueeze(1)
        for index, layer in enumerate(self.layers):
            x = layer.step_beams(x, cos, sin, caches[2 * index], caches[2 * index + 1], beam_caches[2 * index],
                                 beam_caches[2 * index + 1], prompt_len, pos)
        return linear(rms_norm(x, self.norm, self.eps), self.lm_head)

    @torch.jit.export
    def decode_step(self, token: int, pos: int, caches: List[Tensor]) -> Tensor:
        """Logits [1, vocab] after feeding `token` at position `pos`; writes that cache position."""
        return self.run(self.embed.narrow(0, token, 1), pos, caches)

    def run(self, x: Tensor, pos: int, caches: List[Tensor]) -> Tensor:
        seq = x.size(0)
        if pos + seq > self.max_seq_len:
            raise ValueError(f"sequence of {pos + seq} tokens exceeds the export's max_seq_len {self.max_seq_len}")
        cos, sin = self.cos.narrow(0, pos, seq).unsqueeze(1), self.sin.narrow(0, pos, seq).unsqueeze(1)
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, caches[2 * index], caches[2 * index + 1], pos)
        return linear(rms_norm(x.narrow(0, seq - 1, 1), self.norm, self.eps), self.lm_head)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Logits of the last position for a prompt [1, T], with throw-away caches (for a quick check)."""
        return self.prefill(input_ids, self.new_caches())


def greedy_generate(decoder, input_ids: Tensor, max_new_tokens: int, eos_token_id: int = -1,
                    stop_ids: frozenset[int] = frozenset()) -> list[int]:
    """Greedy continuation of input_ids [1, T] by a Decoder or its TorchScript module: the new token ids, stopping
    after `eos_token_id` or a token of `stop_ids` (both kept), the token limit or the cache length (the C++ runner
    follows the same rule)."""
    caches = decoder.new_caches()
    logits = decoder.prefill(input_ids, caches)
    tokens: list[int] = []
    pos = input_ids.size(1)
    while len(tokens) < max_new_tokens:
        tokens.append(int(logits.argmax(-1)))
        if tokens[-1] == eos_token_id or tokens[-1] in stop_ids or pos >= decoder.max_seq_len:
            break
        logits = decoder.decode_step(tokens[-1], pos, caches)
        pos += 1
    return tokens


def beam_generate(decoder, input_ids: Tensor, num_beams: int, max_new_tokens: int, eos_token_id: int = -1,
                  stop_ids: frozenset[int] = frozenset(), prefix_len: int = 0, constraint=None) -> list:
    """Beam candidates (sqlcopilot_core.beams.Candidate, best first) after input_ids [1, T] by a Decoder or its
    TorchScript module, the way the C++ runner decodes them: the prompt's cache is computed once and shared, each
    beam keeps its generated tokens' keys and values in its row of the beam caches, reordered by parent each step,
    and one `decode_beams` call advances all beams. `prefix_len` > 0 prefills input_ids[:prefix_len] first and the
    rest on top (as the runner does with a cached prefix). A full cache ends decoding as the token limit does.
    `constraint`: a sqlconstraint.SchemaConstraint applied as beams.beam_search applies it."""
    from sqlcopilot_core.beams import beam_search

    prompt_len = input_ids.size(1)
    caches = decoder.new_caches()
    if 0 < prefix_len < prompt_len:
        decoder.prefill_at(input_ids[:, :prefix_len], 0, caches)
        first = decoder.prefill_at(input_ids[:, prefix_len:], prefix_len, caches)
    else:
        first = decoder.prefill(input_ids, caches)
    limit = min(max_new_tokens, decoder.max_seq_len - prompt_len + 1)
    beam_caches = decoder.new_beam_caches(num_beams, max(1, limit - 1))
    fed = 0  # tokens each beam has in its cache

    def step(tokens: list[int], parents: list[int]) -> Tensor:
        nonlocal fed
        reorder_beam_caches(beam_caches, parents, fed)
        logits = decoder.decode_beams(torch.tensor(tokens), prompt_len + fed, prompt_len, caches, beam_caches)
        fed += 1
        return logits

    return beam_search(first, step, num_beams, limit, eos_token_id if eos_token_id >= 0 else None,
                       frozenset(stop_ids), constraint)


def reorder_beam_caches(beam_caches: list[Tensor], parents: list[int], length: int) -> None:
    """Row j of every beam cache becomes a copy of row parents[j] (slots 0..length-1, all that is written)."""
    index = torch.tensor(parents)
    for cache in beam_caches:
        filled = cache.narrow(2, 0, length)
        filled.narrow(0, 0, len(parents)).copy_(filled.index_select(0, index))


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Llama's RMSNorm: normalise in float32, round back, then scale (the order matters for bfloat16 parity)."""
    return weight * F.rms_norm(x.float(), [x.size(-1)], eps=eps).to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Llama rotary embedding x*cos + rotate_half(x)*sin, with rotate_half's sign folded into the `sin` table."""
    return x * cos + x.roll(x.size(-1) // 2, -1) * sin


def rotary_tables(inv_freq: Tensor, max_seq_len: int, scale: float) -> tuple[Tensor, Tensor]:
    """cos and signed sin tables [max_seq_len, head_dim] in float32, computed the way transformers computes them."""
    freqs = torch.arange(max_seq_len, dtype=torch.float32)[:, None] * inv_freq.float()[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    half = inv_freq.numel()
    signs = torch.cat([-torch.ones(half), torch.ones(half)])
    return angles.cos() * scale, angles.sin() * scale * signs


def rope_frequencies(config, head_dim: int) -> tuple[Tensor, float]:
    """Inverse frequencies and cos/sin scale from config.rope_parameters (transformers 5 layout)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)), 1.0
    if rope_type == "dynamic":
        raise ValueError("rope_type 'dynamic' rescales with sequence length; a static export cannot reproduce it")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](config)
    return inv_freq, float(scale)


def linear(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight.T, with a weight either plain [out, in] or packed by `pack_weight`."""
    if weight.is_mkldnn:
        no_scalars = torch.jit.annotate(List[Optional[Union[int, float, complex]]], [])
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", no_scalars, "")
    return F.linear(x, weight)


def pack_weight(weight: Tensor) -> Tensor:
    """The weight reordered into oneDNN's blocked layout for one-row inputs.

    Decoding multiplies one row by every weight matrix per token, so speed is how fast the weights stream from
    memory; the blocked layout streams at close to memory bandwidth where a plain row-major matmul reaches about
    half (bfloat16 gains the most). The packed tensor is opaque and cannot be saved, so graphs are saved unpacked
    and `Decoder.pack` runs after loading.
    """
    if weight.is_mkldnn:
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


def _layer_weights(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Per layer, the nine weight tensors under short names, from a Llama state dict."""
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
             "attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
    count = 1 + max(int(key.split(".")[2]) for key in state if key.startswith("model.layers."))
    layers = []
    for index in range(count):
        prefix = f"model.layers.{index}."
        missing = [f"{prefix}{name}.weight" for name in names.values() if f"{prefix}{name}.weight" not in state]
        if missing:
            raise ValueError(f"state dict lacks {missing}")
        layers.append({short: state[f"{prefix}{name}.weight"] for short, name in names.items()})
    return layers


def _main(model_dir: str, prompt: str) -> None:
    from sqlcopilot_core.modeling import load_model

    model, tokenizer = load_model(model_dir)
    decoder = Decoder.from_hf(model, max_seq_len=256)
    decoder.pack()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        tokens = greedy_generate(decoder, ids, 32, tokenizer.eos_token_id)
    print(prompt + tokenizer.decode(tokens))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m sqlcopilot_core.decoder MODEL_DIR PROMPT")
    _main(sys.argv[1], sys.argv[2])
