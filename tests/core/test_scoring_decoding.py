"""The scorer with a decoding other than greedy: ex for the configured decoding, ex_greedy beside it, the share of
answers that fail to execute; on the tiny model and the sample data's real SQLite files."""

import pytest

from sqlcopilot_core.sample import build_sample_spider
from sqlcopilot_core.scoring import EvalConfig
from sqlcopilot_core.stages import evaluate
from tests.core.test_export import make_model_folder


def test_guided_score_logs_ex_greedy_and_the_failing_share(tmp_path):
    spider = build_sample_spider(tmp_path / "spider")
    model = make_model_folder(tmp_path / "model")
    config = EvalConfig(spider_dir=str(spider), limit=3, max_new_tokens=8, decoding="guided", num_beams=2,
                        constrained=True, speed_tokens=4)
    metrics = evaluate.score(model, tmp_path / "score", config)
    assert metrics["n"] == 3 and 0.0 <= metrics["ex"] <= 1.0
    assert 0.0 <= metrics["ex_greedy"] <= 1.0 and 0.0 <= metrics["fail_share"] <= 1.0
    assert (tmp_path / "score" / "greedy" / "summary.json").is_file()
    plain = evaluate.score(model, tmp_path / "plain", EvalConfig(spider_dir=str(spider), limit=3, max_new_tokens=8,
                                                                  speed_tokens=4))
    assert "ex_greedy" not in plain and plain["ex"] == metrics["ex_greedy"]


def test_unknown_decoding_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="EvalConfig.decoding"):
        EvalConfig(decoding="nucleus")
    with pytest.raises(ValueError, match="EvalConfig.num_beams"):
        EvalConfig(decoding="beam", num_beams=99)
