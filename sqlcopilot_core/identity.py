"""Content identity of what a stage reads: its code (the project modules its module imports, found by walking the
import graph), the versions of the libraries that shape its numbers, and its data (the examples it uses and every
database file they touch). Each is a digest; a stage's cache key is made of them, so nothing is keyed by a name.

File digests are cached by file identity (device, inode, size, mtime, ctime) in <work>/file-digests.json, so an
unchanged rebuild hashes nothing again; any write to a file changes its ctime, so a changed file is always re-read.

    python -m sqlcopilot_core.identity sqlcopilot_core.stages.finetune
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlcopilot_core import paths

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("sqlcopilot_core",)
# The libraries whose versions change a stage's numbers (weights, pruning groups, tokenization).
LIBRARIES = ("torch", "transformers", "torch-pruning")
DIGEST_CACHE = "file-digests.json"
RACY_NS = 3_000_000_000


def module_file(name: str, root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of project module `name` under `root` (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(source: Path, module: str) -> set[str]:
    """Every name an `import` anywhere in `source` may load (function-level imports too): for `from a import b`
    both `a` and `a.b`, since b may be a submodule."""
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_modules(*roots: str, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """The project modules that importing `roots` runs: the roots, their packages and every project module they
    import, transitively. Imports of anything outside PROJECT_PACKAGES are not followed."""
    found: dict[str, Path] = {}
    pending = list(roots)
    for name in roots:
        if module_file(name, root) is None:
            raise ModuleNotFoundError(f"project_modules: no module {name} under {root}")
    while pending:
        name = pending.pop()
        if name in found or name.split(".")[0] not in PROJECT_PACKAGES:
            continue
        source = module_file(name, root)
        if source is None:  # `from package import function`: not a module
            continue
        found[name] = source
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        pending += sorted(imported_names(source, name))
    return dict(sorted(found.items()))


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def code_identity(*roots: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """{digest, modules, libraries}: sha256 over the source of every project module `roots` import, and the
    versions of LIBRARIES; the digest covers both."""
    modules = project_modules(*roots, root=root)
    digest = hashlib.sha256()
    for name, source in modules.items():
        digest.update(name.encode() + b"\0" + source.read_bytes() + b"\0")
    libraries = library_versions()
    digest.update(json.dumps(libraries, sort_keys=True).encode())
    return {"digest": digest.hexdigest()[:16], "modules": list(modules), "libraries": libraries}


class FileDigests:
    """sha256 of files, remembered by (device, inode, size, mtime, ctime) in a JSON file: computed once per
    file version. The artifact loader (checksums of committed files) and the data digests share it."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, str] | None = None
        self.dirty = False

    def load(self) -> dict[str, str]:
        if self.entries is None:
            try:
                self.entries = json.loads(self.path.read_text())
            except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
                self.entries = {}
        return self.entries

    def sha256(self, file: Path) -> str:
        from sqlcopilot_core.artifacts import sha256_file

        stat = os.stat(file)
        version = f"{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
        entries = self.load()
        if version in entries:
            return entries[version]
        digest = sha256_file(Path(file))
        # Timestamps tick coarsely: a file written within the last seconds could be written again with the same
        # (size, mtime, ctime), so only settled files are remembered (git's "racily clean" rule).
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_NS:
            entries[version] = digest
            self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries))
        os.replace(tmp, self.path)
        self.dirty = False


_digests: dict[Path, FileDigests] = {}


def file_digests() -> FileDigests:
    """The digest cache of the current work folder."""
    path = paths.work_dir() / DIGEST_CACHE
    if path not in _digests:
        _digests[path] = FileDigests(path)
    return _digests[path]


def examples_digest(examples) -> str:
    """sha256 over the examples in order (question, SQL, database id, parsed SQL) and the content of every
    database file they touch: the folder they came from plays no part."""
    cache = file_digests()
    digest = hashlib.sha256()
    databases: dict[str, str] = {}
    for example in examples:
        record = [example.question, example.query, example.db_id, example.sql]
        digest.update(json.dumps(record, sort_keys=True, default=str).encode() + b"\n")
        if example.db_id not in databases:
            databases[example.db_id] = cache.sha256(example.db_path)
    digest.update(json.dumps(databases, sort_keys=True).encode())
    cache.save()
    return digest.hexdigest()[:16]


def data_identity(data: dict[str, Any]) -> dict[str, str]:
    """name -> digest: lists of examples are digested with their databases, strings (digests made elsewhere) are
    kept, settings (dicts) are digested as JSON."""
    out = {}
    for name, value in sorted(data.items()):
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, dict):
            out[name] = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        else:
            out[name] = examples_digest(value)
    return out


def main(argv: list[str]) -> None:
    identity = code_identity(*argv)
    print(json.dumps(identity, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
