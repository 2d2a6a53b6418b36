"""ClassificationTask: trains any classifier from ``cxr.models`` on NORMAL/PNEUMONIA (or 3-class) labels.

The model's logits are (B, 1) for binary work (sigmoid, BCE as in Go & Bissaliyeva) or (B, C) for
the 3-class labels (softmax; class 0 is normal, every other class is pneumonia). Metrics per stage:

- ``{stage}/precision``, ``recall``, ``f1``, ``specificity``, ``accuracy``, ``auroc``: pneumonia as
  the positive class (probability of pneumonia = 1 − p(normal)), at ``threshold``; when a stage's
  images are all of one class, ``auroc`` and ``specificity`` (no normal images) or ``recall`` (no
  pneumonia) are undefined: NaN, with a warning naming the stage;
- ``{stage}/precision_macro``, ``recall_macro``: unweighted mean over classes ("mean per class"),
  as the paper reports them;
- ``{stage}/loss``; the confusion matrix of the last val/test epoch in ``self.confusion[stage]``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    MulticlassConfusionMatrix,
    MulticlassPrecision,
    MulticlassRecall,
)

from cxr.models.outputs import class_probabilities, pneumonia_probability
from cxr.tasks.losses import ClassificationLoss
from cxr.tasks.optim import check_monitor_mode, configure_optimizers


def _stage_metrics(num_labels: int, threshold: float) -> tuple[MetricCollection, MetricCollection]:
    return MetricCollection(
        {
            "precision": BinaryPrecision(threshold=threshold),
            "recall": BinaryRecall(threshold=threshold),
            "f1": BinaryF1Score(threshold=threshold),
            "specificity": BinarySpecificity(threshold=threshold),
            "accuracy": BinaryAccuracy(threshold=threshold),
            "auroc": BinaryAUROC(),
        }
    ), MetricCollection(
        {
            "precision_macro": MulticlassPrecision(num_labels, average="macro"),
            "recall_macro": MulticlassRecall(num_labels, average="macro"),
            "confusion": MulticlassConfusionMatrix(num_labels),
        }
    )


class ClassificationTask(pl.LightningModule):
    """Owns loss, metrics and optimiser for an image classifier.

    Args:
        model: ``nn.Module`` mapping float32 (B, C, H, W) to logits (B, num_classes); must expose
            ``num_classes`` (1 = binary).
        optimizer: optimiser factory ``params -> Optimizer`` (Hydra ``_partial_: true``).
        scheduler: optional factory ``optimizer -> LRScheduler``; ReduceLROnPlateau watches ``monitor``
            in ``monitor_mode`` (see :mod:`cxr.tasks.optim`).
        loss: ``"bce"``, ``"ce"`` or ``"focal"`` (see :class:`~cxr.tasks.losses.ClassificationLoss`).
        class_weighted: weight the loss by the datamodule's inverse-frequency ``class_weights``.
        focal_gamma: focal loss focusing parameter.
        threshold: decision threshold on the pneumonia probability.
        monitor, monitor_mode: the metric that checkpoints and schedulers follow.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        loss: str = "bce",
        class_weighted: bool = False,
        focal_gamma: float = 2.0,
        threshold: float = 0.5,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
    ) -> None:
        super().__init__()
        check_monitor_mode(monitor_mode)
        # Factories stay out of the checkpoint: it must load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = int(model.num_classes)
        self.num_labels = max(self.num_classes, 2)
        self.criterion = ClassificationLoss(loss, self.num_classes, focal_gamma=focal_gamma)
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            binary, multi = _stage_metrics(self.num_labels, threshold)
            self.metrics[f"{stage}_binary"], self.metrics[f"{stage}_multi"] = binary, multi
        self.train_accuracy = BinaryAccuracy(threshold=threshold)
        self.confusion: dict[str, list[list[int]]] = {}

    def setup(self, stage: str) -> None:
        if self.hparams.class_weighted and self.criterion.class_weights is None:
            dm = getattr(self.trainer, "datamodule", None)
            weights = getattr(dm, "class_weights", None)
            if weights is None:
                raise ValueError("class_weighted=true needs a datamodule with a class_weights property")
            self.criterion.class_weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def probabilities(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pneumonia probability (B,), class probabilities (B, max(C, 2))); see :mod:`cxr.models.outputs`."""
        probs = class_probabilities(logits)
        return pneumonia_probability(probs), probs

    def _binary_target(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels > 0).long()

    def _predicted_class(self, p_pneumonia: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 1:
            return (p_pneumonia >= self.hparams.threshold).long()
        return probs.argmax(dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.criterion(logits, batch["label"])
        p, _ = self.probabilities(logits.detach())
        self.train_accuracy(p, self._binary_target(batch["label"]))
        bs = len(batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/accuracy", self.train_accuracy, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict, stage: str) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        labels = batch["label"]
        loss = self.criterion(logits, labels)
        p, probs = self.probabilities(logits)
        self.metrics[f"{stage}_binary"].update(p, self._binary_target(labels))
        self.metrics[f"{stage}_multi"].update(self._predicted_class(p, probs), labels.long())
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(labels))
        return {"index": batch["index"], "label": labels, "probability": p}

    def _eval_epoch_end(self, stage: str) -> None:
        binary, multi = self.metrics[f"{stage}_binary"], self.metrics[f"{stage}_multi"]
        values = {f"{stage}/{k}": v for k, v in binary.compute().items()}
        out = multi.compute()
        confusion = out.pop("confusion")
        self.confusion[stage] = confusion.int().tolist()
        values.update({f"{stage}/{k}": v for k, v in out.items()})
        # torchmetrics reports 0.0 for a ratio whose denominator class is absent: undefined, so NaN
        n_normal, n_total = int(confusion[0].sum()), int(confusion.sum())
        undefined = (("auroc", "specificity") if n_normal == 0 else ()) + (
            ("auroc", "recall") if n_normal == n_total else ()
        )
        if n_total and undefined:
            for name in dict.fromkeys(undefined):
                values[f"{stage}/{name}"] = torch.tensor(float("nan"), device=confusion.device)
            if not getattr(self._trainer, "sanity_checking", False):
                rank_zero_warn(
                    f"{stage}: only {'pneumonia' if n_normal == 0 else 'normal'} images ({n_total}); "
                    f"{', '.join(dict.fromkeys(undefined))} undefined, reported as NaN"
                )
        self.log_dict(values)
        binary.reset()
        multi.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Also returns ``{"index", "label", "probability"}`` (B,) for callbacks (test predictions)."""
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        p, probs = self.probabilities(self.model(batch["image"]))
        return {"index": batch["index"], "probability": p, "class_probabilities": probs}

    def configure_optimizers(self):
        return configure_optimizers(
            self.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            self.hparams.monitor,
            self.hparams.monitor_mode,
        )
