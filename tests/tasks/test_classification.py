import functools

import pytest
import torch
from torch import nn

from cxr.tasks.classification import ClassificationTask

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


class LogitEcho(nn.Module):
    """Returns the first pixel of each image as its logit(s): tests choose the model's output."""

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return x[:, : self.num_classes, 0, 0] + self.bias


def _task(num_classes=1, loss="bce"):
    return ClassificationTask(
        LogitEcho(num_classes), optimizer=functools.partial(torch.optim.Adam, lr=1e-3), loss=loss
    )


def _batch(logits, labels):
    logits = torch.as_tensor(logits, dtype=torch.float32)
    if logits.ndim == 1:
        logits = logits[:, None]
    image = torch.zeros(len(labels), logits.shape[1], 4, 4)
    image[:, :, 0, 0] = logits
    return {"image": image, "label": torch.as_tensor(labels), "index": torch.arange(len(labels))}


def test_binary_metrics_match_hand_computed_values():
    task = _task()
    # predictions 1, 0, 1, 1 against labels 1, 1, 0, 1: TP=2, FN=1, FP=1, TN=0
    task.validation_step(_batch([2.0, -2.0, 2.0, 2.0], [1, 1, 0, 1]), 0)
    binary = task.metrics["val_binary"].compute()
    multi = task.metrics["val_multi"].compute()
    assert binary["precision"].item() == pytest.approx(2 / 3)
    assert binary["recall"].item() == pytest.approx(2 / 3)
    assert binary["specificity"].item() == 0.0
    assert binary["accuracy"].item() == pytest.approx(0.5)
    # normal class: precision 0/1, recall 0/1; pneumonia: 2/3 and 2/3 → macro 1/3 each
    assert multi["precision_macro"].item() == pytest.approx(1 / 3)
    assert multi["recall_macro"].item() == pytest.approx(1 / 3)
    assert multi["confusion"].tolist() == [[0, 1], [1, 2]]


def test_three_class_pneumonia_probability_is_one_minus_normal():
    task = _task(num_classes=3, loss="ce")
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    p, probs = task.probabilities(logits)
    assert torch.allclose(probs, logits.softmax(1))
    assert torch.allclose(p, 1 - logits.softmax(1)[:, 0])
    task.validation_step(_batch(logits, [0, 1, 2]), 0)
    assert task.metrics["val_multi"].compute()["recall_macro"].item() == pytest.approx(1.0)
    assert task.metrics["val_binary"].compute()["recall"].item() == pytest.approx(1.0)


def test_training_step_returns_differentiable_loss():
    task = _task()
    loss = task.training_step(_batch([0.0, 1.0], [0, 1]), 0)
    loss.backward()
    assert task.model.bias.grad is not None and torch.isfinite(loss)


def test_class_weighted_needs_weights_from_datamodule():
    task = ClassificationTask(LogitEcho(), optimizer=functools.partial(torch.optim.Adam), class_weighted=True)
    task.trainer = type("T", (), {"datamodule": None})()  # no datamodule attached
    with pytest.raises(ValueError, match="class_weights"):
        task.setup("fit")


def test_plateau_scheduler_follows_a_maximised_monitor():
    """A plateau scheduler reduces when the monitored metric stops improving in its own direction."""
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=2)
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    task = ClassificationTask(
        LogitEcho(), optimizer=adam, scheduler=plateau, monitor="val/auroc", monitor_mode="max"
    )
    config = task.configure_optimizers()
    assert (
        config["lr_scheduler"]["monitor"] == "val/auroc" and config["lr_scheduler"]["scheduler"].mode == "max"
    )
    assert (
        ClassificationTask(LogitEcho(), optimizer=adam, scheduler=plateau)
        .configure_optimizers()["lr_scheduler"]["scheduler"]
        .mode
        == "min"
    )  # the default monitor, val/loss
    with pytest.raises(ValueError, match="monitor_mode must be 'min' or 'max', got 'up'"):
        ClassificationTask(LogitEcho(), optimizer=adam, monitor_mode="up")
