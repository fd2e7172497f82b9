from dataclasses import dataclass

import pytest

from sqlcopilot_core.config import ConfigError, apply_overrides, config_from_dict, config_to_dict, load_profile


@dataclass(frozen=True)
class Example:
    steps: int = 1
    lr: float = 0.1
    lora: bool = False
    targets: tuple = ("q_proj",)


def test_unknown_keys_rejected_and_strings_coerced():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]"):
        config_from_dict(Example, {"stepz": 3})
    config = config_from_dict(Example, {"steps": "4", "lr": "1e-3", "lora": "true", "targets": "a,b"})
    assert config == Example(4, 1e-3, True, ("a", "b"))
    assert config_to_dict(config)["targets"] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"Example.steps: cannot read 'x'"):
        config_from_dict(Example, {"steps": "x"})


def test_profiles_and_overrides():
    smoke = load_profile("smoke")
    assert "finetune" in smoke
    changed = apply_overrides(smoke, ["finetune.max_steps=7"])
    assert changed["finetune"]["max_steps"] == 7 and smoke["finetune"].get("max_steps") != 7
    with pytest.raises(ConfigError, match="expected stage.key=value"):
        apply_overrides(smoke, ["max_steps=7"])
    with pytest.raises(ConfigError, match="known profiles"):
        load_profile("nope")


def test_every_profile_scores_with_valid_decoding_settings():
    from sqlcopilot_core.scoring import EvalConfig

    for name in ("smoke", "cpu", "gpu"):
        config = config_from_dict(EvalConfig, load_profile(name).get("evaluate", {}))
        assert config.decoding in ("greedy", "beam", "guided")
    assert config_from_dict(EvalConfig, load_profile("cpu")["evaluate"]).constrained
