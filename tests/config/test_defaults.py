"""Configs that hold only differences: signature defaults underneath, labels deciding outputs and loss."""

from __future__ import annotations

import inspect

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cxr.config.compose import CONFIG_DIR, DEFAULTS_FROM_SIGNATURES, compose, signature_defaults
from cxr.config.validate import ConfigError, check_overrides
from cxr.tasks.classification import ClassificationTask


def test_signature_defaults_lists_every_defaulted_argument_as_plain_data():
    node = signature_defaults("cxr.models.PlainCNN")
    assert node["_target_"] == "cxr.models.PlainCNN"
    assert node["widths"] == [256, 128, 64, 32, 32] and node["batch_norm"] is False
    node = signature_defaults("cxr.tasks.classification.ClassificationTask")
    assert "model" not in node and "optimizer" not in node  # no default: the YAML or cxr-train gives them
    assert node["monitor"] == "val/loss"


@pytest.mark.parametrize(
    ("group", "name"), [(g, n) for g, names in DEFAULTS_FROM_SIGNATURES.items() for n in names]
)
def test_yaml_holds_only_what_differs_from_the_constructor(group, name):
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"))
    assert raw.pop("defaults") == [f"{name}_defaults", "_self_"]
    target = raw.pop("_target_")
    defaults = signature_defaults(target)
    params = inspect.signature(instantiate({"_target_": "hydra.utils.get_class", "path": target})).parameters
    assert set(raw) <= set(params)
    repeated = [k for k, v in raw.items() if k in defaults and v == defaults[k]]
    assert not repeated, f"conf/{group}/{name}.yaml repeats constructor defaults: {repeated}"


@pytest.mark.parametrize(("labels", "outputs", "loss"), [("binary", 1, "bce"), ("three_class", 3, "ce")])
def test_labels_decide_outputs_and_loss_in_one_override(labels, outputs, loss):
    cfg = compose(
        [f"datamodule.labels={labels}", "model=depthwise_cnn", "model.widths=[4,4]", "model.hidden=4"]
    )
    assert (cfg.model.num_classes, cfg.task.loss) == (outputs, loss)
    model = instantiate(cfg.model, _convert_="all")
    task = instantiate(cfg.task, model=model, _convert_="all")
    assert isinstance(task, ClassificationTask)
    assert model(torch.zeros(1, 1, 200, 200)).shape == (1, outputs)


def test_an_override_that_contradicts_the_labels_is_one_line(ped_cxr_dir):
    from cxr.config.validate import validate_config

    cfg = compose([f"datamodule.data_dir={ped_cxr_dir}", "datamodule.labels=binary", "model.num_classes=3"])
    with pytest.raises(ConfigError, match=r"^model\.num_classes=3 does not fit datamodule\.labels=binary"):
        validate_config(cfg)
    with pytest.raises(Exception, match=r"datamodule\.labels=four_class: no number of network outputs"):
        OmegaConf.to_container(compose(["datamodule.labels=four_class"]).model, resolve=True)


def test_arguments_left_at_their_default_override_without_plus():
    check_overrides(["model=plain_cnn", "model.batch_norm=true", "task.threshold=0.3", "model.head=avgpool"])
    cfg = compose(["model=plain_cnn", "model.batch_norm=true", "model.head=avgpool"])
    assert cfg.model.batch_norm is True and cfg.model.head == "avgpool"
