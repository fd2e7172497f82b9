"""flows.settings: the sweep's control spends the distillation budget, with its own overrides."""

from flows.settings import control_settings, resolve_settings
from sqlcopilot_core.config import config_from_dict
from sqlcopilot_core.distill import DistillConfig


def test_control_spends_the_distill_budget_with_its_own_learning_rate():
    settings = resolve_settings("cpu", ["distill.max_steps=50", "finetune.max_steps=900"], None)
    control = control_settings(settings)
    assert control["max_steps"] == 50  # the distillation's budget, not finetune's
    assert control["prompt_form"] == settings["finetune"]["prompt_form"]  # finetune's own keys stay
    assert control["learning_rate"] == 0.00005 != settings["distill"]["learning_rate"]  # the profile's control section
    overridden = control_settings(resolve_settings("cpu", ["control.learning_rate=0.0001"], None))
    assert overridden["learning_rate"] == 0.0001
    # without a control section the control trains at the distillation's rate
    smoke = resolve_settings("smoke", [], None)
    assert "control" not in smoke
    distill = config_from_dict(DistillConfig, smoke.get("distill", {}), "distill")
    assert control_settings(smoke)["learning_rate"] == distill.learning_rate
