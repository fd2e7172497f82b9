"""The C++ runner: built once per session from cpp/, its ctest run on a tiny export, and its tokens and logits
compared with Python's (the llm.c test_gpt2 idea: same inputs, same outputs, largest difference printed).

    .venv/bin/python -m pytest -q -s tests/cpp/test_runner.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sqlcopilot_core.build import BuildError, build_runner, source_hash
from sqlcopilot_core.cpp_runtime import CppRunner, RunnerError
from sqlcopilot_core.export import ExportConfig, export_model, hf_greedy, load_exported
from sqlcopilot_core.modeling import load_model
from sqlcopilot_core.paths import work_dir
from tests.core.test_export import PROMPTS, PRUNED_SHAPES, make_model_folder, prompt_ids

CPP_DIR = Path(__file__).resolve().parents[2] / "cpp"
NEW_TOKENS = 24
CPU_FLAGS = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
KERNELS = "avx512f" in CPU_FLAGS
BF16_KERNELS = KERNELS and {"avx512bw", "avx512_bf16"} <= CPU_FLAGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory) -> dict[str, Path]:
    """float32 and bfloat16 exports of a uniform tiny model and of a pruned one (widths that are not multiples of the
    kernels' vector lengths)."""
    root = tmp_path_factory.mktemp("cpp_exports")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    uniform = make_model_folder(root / "uniform_model")
    pruned = make_model_folder(root / "pruned_model", PRUNED_SHAPES, seed=1)
    exports = {"float32": (uniform, ExportConfig(max_seq_len=96)),
               "pruned": (pruned, ExportConfig(max_seq_len=96)),
               "bfloat16": (uniform, ExportConfig(dtype="bfloat16", max_seq_len=96)),
               "pruned_bfloat16": (pruned, ExportConfig(dtype="bfloat16", max_seq_len=96))}
    for name, (model_dir, config) in exports.items():
        export_model(model_dir, root / name, config, PROMPTS)
    torch.set_num_threads(threads)
    return {name: root / name for name in exports} | {"uniform_model": uniform, "pruned_model": pruned}


@pytest.fixture(scope="session")
def expected_cases(tiny_exports) -> Path:
    """transformers' greedy tokens on the test prompts, as the C++ test program reads them."""
    model, tokenizer = load_model(tiny_exports["uniform_model"])
    cases = [{"input_ids": prompt_ids(tokenizer, p)[0].tolist(), "max_new_tokens": NEW_TOKENS,
              "expected": hf_greedy(model, prompt_ids(tokenizer, p), NEW_TOKENS, tokenizer.eos_token_id)}
             for p in PROMPTS]
    path = tiny_exports["float32"].parent / "cases.json"
    path.write_text(json.dumps(cases))
    return path


@pytest.fixture(scope="session")
def built(tiny_exports, expected_cases) -> dict:
    """cpp/ configured, compiled and ctest-ed (generation tests included); the build folder is reused across
    sessions, so only changed sources recompile."""
    build_dir = work_dir() / "build" / "cpp-tests"
    env = {"SQLCOPILOT_TEST_EXPORT": str(tiny_exports["float32"]), "SQLCOPILOT_TEST_CASES": str(expected_cases)}
    return build_runner(CPP_DIR, build_dir, run_tests=True, test_env=env)


def test_ctest_passes_and_the_test_program_checks_generation(built, tiny_exports, expected_cases):
    assert "100% tests passed" in Path(built["log"]).read_text()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SQLCOPILOT_TEST_")}
    bare = subprocess.run([built["test_program"]], capture_output=True, text=True, env=env, check=True).stdout
    assert "generation tests not run" in bare
    full = subprocess.run([built["test_program"], str(tiny_exports["float32"]), str(expected_cases)],
                          capture_output=True, text=True, env=env).stdout
    assert "PASS generation equals transformers' greedy tokens" in full and "23 passed, 0 failed" in full, full


@pytest.mark.parametrize("decode, threads", [("kernel", 1), ("kernel", 2), ("graph", 1)])
@pytest.mark.parametrize("export", ["float32", "pruned"])
def test_cpp_tokens_and_logits_equal_python(built, tiny_exports, export, decode, threads):
    if decode == "kernel" and not KERNELS:
        pytest.skip("this CPU lacks AVX-512F: the runner decodes with the graph only")
    model_key = "uniform_model" if export == "float32" else "pruned_model"
    model, tokenizer = load_model(tiny_exports[model_key])
    exported = load_exported(tiny_exports[export])
    ids_list = [prompt_ids(tokenizer, p)[0].tolist() for p in PROMPTS]
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        results = runner.generate(ids_list, NEW_TOKENS, return_logits=True)
    largest = 0.0
    for ids, (cpp_tokens, timings) in zip(ids_list, results):
        assert cpp_tokens == exported.generate_exported(ids, NEW_TOKENS)
        assert cpp_tokens == hf_greedy(model, torch.tensor([ids]), NEW_TOKENS, tokenizer.eos_token_id)
        assert timings["new_tokens"] == len(cpp_tokens) and timings["prefill_ms"] > 0
        assert timings["decode"] == decode
        with torch.no_grad():
            reference = model(torch.tensor([ids + cpp_tokens[:1]])).logits[0, -2:]
        for got, want in zip((timings["first_logits"], timings["step_logits"]), reference):
            largest = max(largest, (torch.tensor(got) - want).abs().max().item())
    print(f"\n{export} ({decode}, {threads} thread(s)): C++ prefill and decode-step logits vs transformers: largest |difference| "
          f"{largest:.3g}")
    assert largest < 1e-4


@pytest.mark.parametrize("decode, threads", [("kernel", 1), ("kernel", 2), ("graph", 1)])
@pytest.mark.parametrize("export", ["bfloat16", "pruned_bfloat16"])
def test_cpp_bfloat16_equals_python_graphs(built, tiny_exports, export, decode, threads):
    if decode == "kernel" and not BF16_KERNELS:
        pytest.skip("this CPU lacks AVX-512 BF16: the runner decodes bfloat16 with the graph only")
    exported = load_exported(tiny_exports[export])
    tokenizer = exported.tokenizer()
    ids_list = [prompt_ids(tokenizer, p)[0].tolist() for p in PROMPTS]
    with CppRunner(built["runner"], tiny_exports[export], threads=threads, decode=decode) as runner:
        results = runner.generate(ids_list, NEW_TOKENS, return_logits=True)
    largest = 0.0
    for ids, (cpp_tokens, timings) in zip(ids_list, results):
        assert cpp_tokens == exported.generate_exported(ids, NEW_TOKENS)
        caches = exported.new_caches()
        python_logits = exported.prefill(torch.tensor([ids]), caches).float()[0]
        assert torch.equal(torch.tensor(timings["first_logits"]), python_logits)
        step = exported.decode_step(cpp_tokens[0], len(ids), caches).float()[0]
        if decode == "graph":
            assert torch.equal(torch.tensor(timings["step_logits"]), step)
        # the kernels add in another order than oneDNN, so a bfloat16 rounding may land one step apart
        largest = max(largest, ((torch.tensor(timings["step_logits"]) - step).abs() / step.abs().max()).max().item())
    print(f"\n{export} ({decode}, {threads} thread(s)): decode-step logits vs Python graphs: largest |difference| / largest |logit| "
          f"{largest:.3g}")
    assert largest < 2 ** -6


def test_cpp_refuses_unknown_manifest_version(built, tiny_exports, tmp_path):
    copy = Path(shutil.copytree(tiny_exports["float32"], tmp_path / "future"))
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(RunnerError, match="code 2.*format_version 99.*re-run the export stage"):
        with CppRunner(built["runner"], copy) as runner:
            runner.generate([[1, 2, 3]], 4)


def test_runner_prints_usage_and_rejects_bad_requests(built, tiny_exports):
    usage = subprocess.run([built["runner"]], capture_output=True, text=True)
    assert usage.returncode == 1 and "usage: sqlcopilot-runner --model" in usage.stderr
    requests = '{"id": "a", "input_ids": [999]}\nnot json\n{"id": 7, "input_ids": [65, 66], "max_new_tokens": 3}\n'
    served = subprocess.run([built["runner"], "--model", str(tiny_exports["float32"]), "--threads", "1"],
                            input=requests, capture_output=True, text=True, check=True)
    replies = [json.loads(line) for line in served.stdout.splitlines()]
    assert replies[0] == {"id": "a", "error": "token id 999 is outside the vocabulary of 258"}
    assert "invalid JSON at character" in replies[1]["error"]
    assert replies[2]["id"] == 7 and replies[2]["new_tokens"] == len(replies[2]["output_ids"]) == 3


def test_source_hash_follows_sources(tmp_path):
    copy = Path(shutil.copytree(CPP_DIR, tmp_path / "cpp"))
    before = source_hash(copy)
    assert source_hash(copy) == before
    (copy / "src" / "main.cpp").write_text((copy / "src" / "main.cpp").read_text() + "\n// changed\n")
    assert source_hash(copy) != before


def test_build_names_a_folder_without_cmakelists(tmp_path):
    with pytest.raises(BuildError, match="no CMakeLists.txt"):
        build_runner(tmp_path, tmp_path / "build")


def test_build_says_what_to_install_when_tools_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="cmake .*not on PATH.*re-run the build stage"):
        build_runner(CPP_DIR, tmp_path / "build")


def test_decode_speed_requests_decode_past_end_of_text(built, tiny_exports, tmp_path):
    """stop_at_eos=false decodes exactly max_new_tokens (how the evaluate stage times decoding in both runtimes)."""
    copy = Path(shutil.copytree(tiny_exports["float32"], tmp_path / "eos_first"))
    with CppRunner(built["runner"], copy, threads=1) as runner:
        (first, _), = runner.generate([[65, 66, 67]], 1)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "eos_token_id": first[0]}))  # ends at once
    with CppRunner(built["runner"], copy, threads=1) as runner:
        (stopped, _), = runner.generate([[65, 66, 67]], 8)
        (forced, timing), = runner.generate([[65, 66, 67]], 8, stop_at_eos=False)
    assert stopped == first and len(forced) == timing["new_tokens"] == 8
