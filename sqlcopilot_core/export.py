"""Export stage core: compile a model folder's decoder to TorchScript, prove it matches transformers, describe it.

An export folder holds the graph (decoder.pt), the tokenizer files copied from the model folder and manifest.json
(format "sqlcopilot-export", format_version 3), which the C++ runner reads. All torch.jit use lives in this module.

    python -m sqlcopilot_core.export work/smollm2_base work/export_smollm2 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sqlcopilot_core.artifacts import file_checksums, sha256_file
from sqlcopilot_core.config import ConfigError, config_to_dict
from sqlcopilot_core.lifetime import identity_alive, process_identity
from sqlcopilot_core.generate import statement_end_ids
from sqlcopilot_core.decoder import Decoder, beam_generate, greedy_generate

FORMAT = "sqlcopilot-export"
FORMAT_VERSION = 3  # 2: "files" lists the sha256 and size of every file, checked by every loader;
                    # 3: "stop_token_ids", the tokens that end a statement (generate.statement_end_ids)
READABLE_VERSIONS = (2, 3)  # a version-2 manifest reads as one without stop tokens
GRAPH_FILE = "decoder.pt"
MANIFEST_FILE = "manifest.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json", "chat_template.jinja",
                   "prompt.json")  # prompt.json: the prompt settings the model was trained with (prompting.py)
TOKEN_TEXTS_FILE = "token_texts.json"  # each token id's text (sqlconstraint.token_texts), for the C++ schema constraint
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# bfloat16: transformers' own cached decoding differs from its full forward pass by up to ~1.2 on SmolLM2-135M.
DEFAULT_LOGIT_TOLERANCE = {"float32": 1e-4, "bfloat16": 0.1}


class ExportError(RuntimeError):
    """An export folder is missing, malformed or of an unknown version, or an export failed its parity check."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """How to compile a model folder into an export folder."""

    dtype: str = "float32"
    """Weight and activation type of the graph: float32 or bfloat16 (half the bytes read per token)."""
    max_seq_len: int = 1024
    """Positions in the fixed-size key/value cache: prompt plus generated tokens never exceed it."""
    parity_prompts: int = 4
    """How many of the given prompts the self-check runs (at least 1)."""
    parity_new_tokens: int = 16
    """Greedy tokens generated per prompt by both the graph and transformers, which must agree (float32)."""
    max_logit_diff: float | None = None
    """Largest allowed |graph - transformers| logit difference per unit of logit scale (the largest |logit| of
    transformers, at least 1): float32 rounding grows with the logits' size. None means 1e-4 for float32 and 0.1
    for bfloat16."""

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"export.dtype: {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.max_seq_len < 2:
            raise ConfigError(f"export.max_seq_len: {self.max_seq_len} is too small (need at least 2)")
        if self.parity_prompts < 1 or self.parity_new_tokens < 1:
            raise ConfigError("export.parity_prompts and export.parity_new_tokens must be at least 1")
        if self.parity_new_tokens >= self.max_seq_len:
            raise ConfigError(f"export.parity_new_tokens ({self.parity_new_tokens}) must be below max_seq_len "
                              f"({self.max_seq_len})")

    @property
    def logit_tolerance(self) -> float:
        return DEFAULT_LOGIT_TOLERANCE[self.dtype] if self.max_logit_diff is None else self.max_logit_diff


def export_model(model_dir: str | Path, out_dir: str | Path, config: ExportConfig, prompts: list[str]) -> dict:
    """Write graph, tokenizer files and manifest into `out_dir` (new or empty); return the manifest.

    Raises ExportError when the graph's float32 greedy tokens differ from transformers' or any logit differs by
    more than the tolerance; bfloat16 token agreement is recorded, not enforced (see `parity_check`).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir}: output folder is not empty")
    if not prompts:
        raise ExportError("export needs at least one prompt for its parity check")
    if out_dir.exists():  # an empty folder given (maybe a mount point): written in place, manifest.json last
        return _export_into(model_dir, out_dir, config, prompts, out_dir)
    # a new folder: written beside it and renamed into place last, so a run killed half way leaves nothing that
    # looks like an export; what such a run left is removed by the next export to the same place
    _remove_dead_partials(out_dir)
    staging = out_dir.parent / f"{PARTIAL_PREFIX.format(name=out_dir.name)}{process_identity(os.getpid())}"
    staging.mkdir(parents=True)
    try:
        manifest = _export_into(model_dir, staging, config, prompts, out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


PARTIAL_PREFIX = ".{name}.partial-"


def _remove_dead_partials(out_dir: Path) -> None:
    """Remove `.{name}.partial-<process identity>` folders beside out_dir whose process has ended (killed exports;
    lifetime.identity_alive, so a reused pid or another host's run is not mistaken for the owner)."""
    prefix = PARTIAL_PREFIX.format(name=out_dir.name)
    for path in out_dir.parent.glob(f"{prefix}*") if out_dir.parent.is_dir() else []:
        identity = path.name[len(prefix):]
        if identity.count(":") >= 2 and identity_alive(identity) is False:
            shutil.rmtree(path, ignore_errors=True)


def _export_into(model_dir: Path, out_dir: Path, config: ExportConfig, prompts: list[str], final_dir: Path) -> dict:
    from sqlcopilot_core.modeling import layer_shapes, load_model
    from sqlcopilot_core.sqlconstraint import token_texts

    model, tokenizer = load_model(model_dir, dtype=DTYPES[config.dtype])
    decoder = Decoder.from_hf(model, config.max_seq_len, DTYPES[config.dtype])
    torch.jit.script(decoder).save(str(out_dir / GRAPH_FILE))
    tokenizer_files = _copy_tokenizer_files(model_dir, out_dir)
    (out_dir / TOKEN_TEXTS_FILE).write_text(json.dumps(token_texts(tokenizer)))
    exported = ExportedModel(_load_graph(out_dir / GRAPH_FILE), out_dir)
    parity = parity_check(model, exported, tokenizer, prompts[: config.parity_prompts], config, model_dir)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "stage": "export",
        "graph": GRAPH_FILE, "dtype": config.dtype, "max_seq_len": config.max_seq_len,
        "vocab_size": int(decoder.embed.shape[0]), "hidden_size": int(decoder.embed.shape[1]),
        "head_dim": int(decoder.layers[0].head_dim), "num_layers": len(decoder.layers),
        "layers": layer_shapes(model), "tied_embeddings": decoder.lm_head.data_ptr() == decoder.embed.data_ptr(),
        "eos_token_id": _token_id(tokenizer.eos_token_id, model.config.eos_token_id),
        "pad_token_id": _token_id(tokenizer.pad_token_id, model.config.pad_token_id),
        "stop_token_ids": sorted(statement_end_ids(tokenizer)),
        "tokenizer_files": tokenizer_files, "config": config_to_dict(config),
        "source_model": str(model_dir), "torch_version": torch.__version__, "parity": parity,
        "token_texts": TOKEN_TEXTS_FILE, "special_token_ids": sorted(tokenizer.all_special_ids),  # C++ constraint
    }
    _enforce_parity(parity, config, final_dir)
    manifest["files"] = file_checksums(out_dir)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parity_check(model, exported, tokenizer, prompts: list[str], config: ExportConfig, model_dir: Path) -> dict:
    """Compare the exported graph with the transformers model it came from, prompt by prompt.

    Logits are compared at every generated position (the prefill and each cached decode step, against a
    transformers forward pass over the same tokens); greedy tokens against transformers' generate. For bfloat16 the
    reference is transformers in bfloat16, and the agreement of bfloat16 with float32 greedy tokens is recorded too:
    the prefill matches bit for bit, but the graph's decode attention runs in float32 where transformers' kernel
    rounds to bfloat16, so near-ties can later resolve differently (both are equally far from float32).
    """
    limit = config.max_seq_len - config.parity_new_tokens
    eos = _token_id(tokenizer.eos_token_id, model.config.eos_token_id)
    result: dict[str, Any] = {"prompts": len(prompts), "new_tokens": config.parity_new_tokens,
                              "reference": f"transformers {config.dtype}", "max_abs_logit_diff": 0.0,
                              "max_abs_prefill_logit_diff": 0.0, "max_abs_logit": 0.0,
                              "first_divergence": [], "truncated_prompts": 0}
    reference_tokens = []
    for prompt in tqdm(prompts, desc="export parity", unit="prompt"):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] > limit:
            ids, result["truncated_prompts"] = ids[:, -limit:], result["truncated_prompts"] + 1
        tokens, step_logits = exported.generate_with_logits(ids, config.parity_new_tokens)
        expected = hf_greedy(model, ids, config.parity_new_tokens, eos)
        reference_tokens.append((ids, expected))
        result["first_divergence"].append(_first_divergence(tokens, expected))
        with torch.no_grad():
            hf_logits = model(torch.tensor([ids[0].tolist() + tokens[:-1]])).logits[0, ids.shape[1] - 1:]
            hf_prefill = model(ids, logits_to_keep=1).logits[0]
        diff = (hf_logits.float() - step_logits.float()).abs().max().item()
        result["max_abs_logit_diff"] = max(result["max_abs_logit_diff"], diff)
        result["max_abs_logit"] = max(result["max_abs_logit"], hf_logits.float().abs().max().item())
        diff = (hf_prefill.float() - step_logits[:1].float()).abs().max().item()
        result["max_abs_prefill_logit_diff"] = max(result["max_abs_prefill_logit_diff"], diff)
    result["greedy_identical"] = sum(d is None for d in result["first_divergence"])
    if config.dtype != "float32":
        result["vs_float32_first_divergence"] = _float32_divergence(model_dir, reference_tokens, eos)
    return result


def hf_greedy(model, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None) -> list[int]:
    """transformers' own greedy generation: the new token ids (ending at end-of-sequence if produced)."""
    from transformers import GenerationConfig

    greedy = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    with torch.no_grad():
        output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=greedy)
    return output[0, input_ids.shape[1]:].tolist()


class ExportedModel:
    """An export folder loaded in Python: the TorchScript graph driven by a Python greedy loop."""

    def __init__(self, module: torch.jit.ScriptModule, export_dir: Path, manifest: dict | None = None):
        self.module, self.dir, self.manifest = module, export_dir, manifest or {}
        self.max_seq_len = module.max_seq_len
        self.eos_token_id = self.manifest.get("eos_token_id", -1)
        self.stop_token_ids = frozenset(self.manifest.get("stop_token_ids", ()))

    def new_caches(self) -> list[torch.Tensor]:
        return self.module.new_caches()

    def prefill(self, input_ids: torch.Tensor, caches: list[torch.Tensor]) -> torch.Tensor:
        with torch.jit.optimized_execution(False):
            return self.module.prefill(input_ids, caches)

    def decode_step(self, token: int, pos: int, caches: list[torch.Tensor]) -> torch.Tensor:
        with torch.jit.optimized_execution(False):
            return self.module.decode_step(token, pos, caches)

    def prefill_at(self, input_ids: torch.Tensor, pos: int, caches: list[torch.Tensor]) -> torch.Tensor:
        with torch.jit.optimized_execution(False):
            return self.module.prefill_at(input_ids, pos, caches)

    def new_beam_caches(self, rows: int, capacity: int) -> list[torch.Tensor]:
        return self.module.new_beam_caches(rows, capacity)

    def decode_beams(self, tokens: torch.Tensor, pos: int, prompt_len: int, caches: list[torch.Tensor],
                     beam_caches: list[torch.Tensor]) -> torch.Tensor:
        with torch.jit.optimized_execution(False):
            return self.module.decode_beams(tokens, pos, prompt_len, caches, beam_caches)

    def generate_exported(self, input_ids: torch.Tensor | list[int], max_new_tokens: int,
                          stop_ids: frozenset[int] = frozenset()) -> list[int]:
        """Greedy new tokens after input_ids ([1, T] tensor or list), stopping at end-of-sequence, a token of
        `stop_ids` or the limit."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
        self._check_length(ids)
        with torch.inference_mode():
            return greedy_generate(self, ids, max_new_tokens, self.eos_token_id, stop_ids)

    def beams_exported(self, input_ids: torch.Tensor | list[int], num_beams: int, max_new_tokens: int,
                       stop_ids: frozenset[int] = frozenset(), stop_at_eos: bool = True, prefix_len: int = 0,
                       constraint=None) -> list:
        """Beam candidates (beams.Candidate, best first) after input_ids, as the C++ runner computes them;
        `constraint`: a sqlconstraint.SchemaConstraint (the runner's request field "constraint")."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
        self._check_length(ids)
        with torch.inference_mode():
            return beam_generate(self, ids, num_beams, max_new_tokens, self.eos_token_id if stop_at_eos else -1,
                                 stop_ids, prefix_len, constraint)

    def generate_with_logits(self, input_ids: torch.Tensor, max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
        """Greedy new tokens (not stopping at end-of-sequence) and the logits [n, vocab] each was chosen from."""
        self._check_length(input_ids)
        with torch.inference_mode():
            caches = self.new_caches()
            logits = [self.prefill(input_ids, caches)]
            tokens = [int(logits[-1].argmax(-1))]
            for pos in range(input_ids.shape[1], input_ids.shape[1] + max_new_tokens - 1):
                logits.append(self.decode_step(tokens[-1], pos, caches))
                tokens.append(int(logits[-1].argmax(-1)))
        return tokens, torch.cat(logits)

    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.dir)

    def _check_length(self, ids: torch.Tensor) -> None:
        if ids.numel() == 0 or ids.shape[1] >= self.max_seq_len:
            raise ValueError(f"prompt of {ids.shape[1]} tokens: need 1 to {self.max_seq_len - 1} (max_seq_len of "
                             f"{self.dir})")


def load_exported(export_dir: str | Path) -> ExportedModel:
    """Load an export folder (manifest checked, weights packed for fast decoding)."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    return ExportedModel(_load_graph(export_dir / manifest["graph"]), export_dir, manifest)


def read_manifest(export_dir: str | Path, check_graph: bool = True) -> dict:
    """The manifest of an export folder, refusing unknown formats and versions and naming missing files and files
    whose checksum differs. `check_graph=False` leaves the graph to the C++ runner, which checks it when it loads it
    (hashing it costs ~1.4 s per 300 MB on a 2-core machine)."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{export_dir}: no {MANIFEST_FILE}; re-run the export stage")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: invalid JSON ({exc}); re-run the export stage") from None
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; re-run the export stage")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ExportError(f"{path}: format_version {manifest.get('format_version')!r} is not understood (this code "
                          f"reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-run the export stage")
    missing_keys = [k for k in ("graph", "max_seq_len", "eos_token_id", "vocab_size", "dtype", "tokenizer_files",
                                "files") if k not in manifest]
    if missing_keys:
        raise ExportError(f"{path}: missing field(s) {missing_keys}; re-run the export stage")
    missing = [name for name in [manifest["graph"], *manifest["tokenizer_files"]] if not (export_dir / name).is_file()]
    if missing:
        raise ExportError(f"{export_dir}: missing file(s) {missing}; re-run the export stage")
    verify_files(export_dir, manifest, [name for name in manifest["files"] if check_graph or name != manifest["graph"]])
    return manifest


def verify_files(export_dir: Path, manifest: dict, names: list[str]) -> None:
    """ExportError naming the first of `names` that is missing or whose size or sha256 differs from the manifest."""
    if manifest["graph"] not in manifest["files"]:
        raise ExportError(f"{export_dir / MANIFEST_FILE}: 'files' lists no checksum of the graph; re-run the export "
                          f"stage")
    for name in names:
        expected, path = manifest["files"][name], export_dir / name
        if not path.is_file():
            raise ExportError(f"{path}: listed file missing; re-run the export stage")
        if path.stat().st_size != expected["bytes"] or sha256_file(path) != expected["sha256"]:
            raise ExportError(f"{path}: checksum differs from the manifest (the file changed after export); re-run "
                              f"the export stage")


def _load_graph(path: Path) -> torch.jit.ScriptModule:
    module = torch.jit.load(str(path), map_location="cpu")
    if torch.backends.mkldnn.is_available():
        module.pack()
    return module


def _copy_tokenizer_files(model_dir: Path, out_dir: Path) -> list[str]:
    copied = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if "tokenizer.json" not in copied and "tokenizer.model" not in copied:
        raise ExportError(f"{model_dir}: no tokenizer.json or tokenizer.model; re-run the stage that made the model")
    for name in copied:
        shutil.copyfile(model_dir / name, out_dir / name)
    return copied


def _token_id(*candidates) -> int:
    """The first id given (configs sometimes hold a list of end ids: take the first), or -1 for none."""
    for value in candidates:
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return -1


def _first_divergence(tokens: list[int], expected: list[int]) -> int | None:
    """Index of the first differing token over the shorter list (transformers stops at EOS), None if none."""
    for index, (a, b) in enumerate(zip(tokens, expected)):
        if a != b:
            return index
    return None


def _float32_divergence(model_dir: Path, reference_tokens: list, eos: int) -> list[int | None]:
    """Where bfloat16 transformers' greedy tokens first leave float32 transformers' (a property of the dtype)."""
    from sqlcopilot_core.modeling import load_model

    model32, _ = load_model(model_dir, dtype=torch.float32)
    return [_first_divergence(expected, hf_greedy(model32, ids, len(expected), eos)) for ids, expected in
            reference_tokens]


def _enforce_parity(parity: dict, config: ExportConfig, out_dir: Path) -> None:
    problems = []
    scale = max(1.0, parity["max_abs_logit"])
    if parity["max_abs_logit_diff"] > config.logit_tolerance * scale:
        problems.append(f"largest logit difference {parity['max_abs_logit_diff']:.3g} exceeds "
                        f"{config.logit_tolerance:g} x the logit scale {scale:.3g}")
    if config.dtype == "float32" and parity["greedy_identical"] != parity["prompts"]:
        problems.append(f"greedy tokens differ from transformers at positions {parity['first_divergence']}")
    if problems:
        # No manifest.json, so nothing loads this folder; the findings stay for a reader.
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "parity_failure.json").write_text(json.dumps(parity, indent=2) + "\n")
        raise ExportError(f"{out_dir}: exported graph does not match transformers: {'; '.join(problems)} "
                          "(details in parity_failure.json)")


def _main() -> None:
    parser = argparse.ArgumentParser(description="Export a model folder to TorchScript for the C++ runner.")
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--prompt", action="append", default=None)
    args = parser.parse_args()
    prompts = args.prompt or ["-- SQLite query listing every singer's name:\nSELECT"]
    manifest = export_model(args.model_dir, args.out_dir, ExportConfig(args.dtype, args.max_seq_len), prompts)
    print(json.dumps(manifest["parity"], indent=2))


if __name__ == "__main__":
    _main()
