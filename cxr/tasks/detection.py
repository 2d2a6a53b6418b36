"""DetectionTask: trains :class:`cxr.models.retinanet.RetinaNet` on lung-opacity boxes.

Batches follow the shared detection contract: ``{"image": float32 (B, 1, S, S), "boxes": B float32
(N_i, 4) x1y1x2y2 in input pixels, "cls": int64 (B,) in {0 Normal, 1 No Lung Opacity / Not Normal,
2 Lung Opacity} (-1 = unlabelled: left out of the global loss and metrics), "orig_size": int64 (B, 2)
(H, W), "patient_id": list[str], "index": int64 (B,)}``.

Loss: ``box_cls_weight`` · focal box classification + ``box_reg_weight`` · box regression +
``global_cls_weight`` · cross-entropy of the global head vs ``cls`` (0.1 in Gabruseva et al.'s code).

Metrics per stage (``val``/``test``):

- ``rsna_map``: the challenge score (:class:`cxr.metrics.RSNAMeanAP`) of the detections with score
  ≥ t, after the model's own prefilter and NMS (the authors': score > 0.025, IoU 0.05) and, with
  ``relative_score_thresh`` r > 0, after dropping each image's detections scoring below r × its best
  (the authors' scorer: r = 0.5). The score punishes every false positive, so t matters: on ``val`` it is computed for every t
  in ``score_thresholds`` and the best is logged with its t as ``val/rsna_score_thresh``. This tunes t
  on the validation set, as the paper did, so ``val/rsna_map`` is optimistic. The chosen t is kept
  in the buffer ``score_thresh`` (saved in checkpoints); ``test/rsna_map`` uses it, and
  ``test/rsna_map_oracle`` reports the best t on test for reference.
- ``map``, ``map_50``, ``map_75``: COCO box AP (torchmetrics ``MeanAveragePrecision`` on
  faster_coco_eval, :func:`cxr.metrics.coco.coco_map`) over all detections the model returns.
- ``cls_precision``, ``cls_recall``, ``cls_auroc``: macro averages over the global head's classes.
- ``loss``, ``loss_box_cls``, ``loss_box_reg``, ``loss_global`` (also under ``train/``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAUROC, MulticlassPrecision, MulticlassRecall

from cxr.data.boxes import to_original
from cxr.metrics import RSNAMeanAP
from cxr.metrics.coco import coco_map
from cxr.tasks.optim import check_monitor_mode, configure_optimizers

log = logging.getLogger(__name__)


def _above(detections: list[dict[str, Tensor]], thresh: float) -> list[dict[str, Tensor]]:
    keep = [d["scores"] >= thresh for d in detections]
    return [{"boxes": d["boxes"][k], "scores": d["scores"][k]} for d, k in zip(detections, keep, strict=True)]


def relative_filter(detections: list[dict[str, Tensor]], ratio: float) -> list[dict[str, Tensor]]:
    """Per image, drop the detections scoring below ``ratio`` × the image's best score (the
    authors' ``scores[scores < scores[0] * 0.5] = 0``); ``ratio`` 0 keeps everything."""
    if ratio <= 0:
        return detections
    out = []
    for d in detections:
        keep = d["scores"] >= ratio * d["scores"].max() if len(d["scores"]) else d["scores"] > 0
        out.append({k: (v[keep] if k in ("boxes", "scores", "labels") else v) for k, v in d.items()})
    return out


class DetectionTask(pl.LightningModule):
    """Owns loss weighting, metrics and optimiser for a RetinaNet-style detector.

    Args:
        model: module with the :class:`~cxr.models.retinanet.RetinaNet` contract: train-mode
            ``forward(images, targets)`` -> loss dict (``loss_box_cls``, ``loss_box_reg``, and
            ``loss_global`` when targets carry ``"cls"`` and it has a global head);
            ``losses_and_detections(images, targets)`` -> (that dict, per-image detections);
            eval-mode ``forward(images)`` -> per-image ``{"boxes", "scores", "labels"[,
            "global_logits"]}``; attribute ``num_global_classes`` (0 = no global head).
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_: true``); Adam 1e-5 in the paper.
        scheduler: optional factory ``optimizer -> LRScheduler``; a ReduceLROnPlateau follows
            ``monitor`` with mode ``monitor_mode`` (a conflicting ``mode`` in the factory raises).
        box_cls_weight, box_reg_weight, global_cls_weight: loss weights (≥ 0).
        score_thresholds: candidate score thresholds for ``rsna_map``, each in [0, 1].
        relative_score_thresh: in [0, 1); see ``rsna_map`` above (0 = off).
        monitor, monitor_mode: the metric that checkpoints follow (and the scheduler, unless
            ``scheduler_monitor`` is given).
        scheduler_monitor, scheduler_monitor_mode: the metric a plateau scheduler follows, e.g.
            ``val/loss_box_reg`` (``min``) as the authors did; ``None`` = ``monitor``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        box_cls_weight: float = 1.0,
        box_reg_weight: float = 1.0,
        global_cls_weight: float = 0.1,
        score_thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        monitor: str = "val/rsna_map",
        monitor_mode: str = "max",
        relative_score_thresh: float = 0.0,
        scheduler_monitor: str | None = None,
        scheduler_monitor_mode: str | None = None,
    ) -> None:
        super().__init__()
        thresholds = tuple(float(t) for t in score_thresholds)
        if not thresholds or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(
                f"score_thresholds must be a non-empty sequence in [0, 1], got {score_thresholds}"
            )
        if min(box_cls_weight, box_reg_weight, global_cls_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        check_monitor_mode(monitor_mode)
        if scheduler_monitor_mode is not None:
            check_monitor_mode(scheduler_monitor_mode)
        if (scheduler_monitor is None) != (scheduler_monitor_mode is None):
            raise ValueError("scheduler_monitor and scheduler_monitor_mode go together (both or neither)")
        if not 0.0 <= relative_score_thresh < 1.0:
            raise ValueError(f"relative_score_thresh must be in [0, 1), got {relative_score_thresh}")
        # Factories stay out of the checkpoint: it must load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.thresholds = thresholds
        self.num_global_classes = int(model.num_global_classes)
        self.register_buffer("score_thresh", torch.tensor(math.nan))
        self.metrics = nn.ModuleDict({stage: self._stage_metrics() for stage in ("val", "test")})
        self.confusion: dict[str, list[list[int]]] = {}  # none kept: detection reports mAP, not a matrix

    def _stage_metrics(self) -> nn.ModuleDict:
        metrics = nn.ModuleDict(
            {
                "rsna": nn.ModuleList(RSNAMeanAP() for _ in self.thresholds),
                "rsna_tuned": RSNAMeanAP(),
                "coco": coco_map(),
            }
        )
        n = self.num_global_classes
        if n > 0:
            metrics["cls"] = MetricCollection(
                {
                    "cls_precision": MulticlassPrecision(n, average="macro"),
                    "cls_recall": MulticlassRecall(n, average="macro"),
                    "cls_auroc": MulticlassAUROC(n, average="macro"),
                }
            )
        return metrics

    def forward(self, images: Tensor) -> list[dict[str, Tensor]]:
        return self.model(images)

    @staticmethod
    def _targets(batch: dict) -> list[dict[str, Tensor]]:
        return [{"boxes": b, "cls": c} for b, c in zip(batch["boxes"], batch["cls"], strict=True)]

    def _losses(self, losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """The weighted total ``loss`` with the model's unweighted losses."""
        hp = self.hparams
        total = hp.box_cls_weight * losses["loss_box_cls"] + hp.box_reg_weight * losses["loss_box_reg"]
        if "loss_global" in losses:
            total = total + hp.global_cls_weight * losses["loss_global"]
        return {"loss": total, **losses}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        losses = self._losses(self.model(batch["image"], self._targets(batch)))
        bs = len(batch["image"])
        for name, value in losses.items():
            self.log(
                f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=bs
            )
        return losses["loss"]

    def _eval_step(self, batch: dict, stage: str) -> None:
        targets = [{"boxes": b} for b in batch["boxes"]]
        losses, detections = self.model.losses_and_detections(batch["image"], self._targets(batch))
        bs = len(batch["image"])
        for name, value in self._losses(losses).items():
            self.log(f"{stage}/{name}", value, on_epoch=True, prog_bar=name == "loss", batch_size=bs)
        detections = [{k: v.detach() for k, v in d.items()} for d in detections]
        global_logits = (
            torch.stack([d.pop("global_logits") for d in detections]) if self.num_global_classes else None
        )
        detections = relative_filter(detections, self.hparams.relative_score_thresh)
        metrics = self.metrics[stage]
        for thresh, metric in zip(self.thresholds, metrics["rsna"], strict=True):
            metric.update(_above(detections, thresh), targets)
        if stage == "test" and not torch.isnan(self.score_thresh):
            metrics["rsna_tuned"].update(_above(detections, float(self.score_thresh)), targets)
        labelled = [
            {"boxes": b, "labels": torch.ones(len(b), dtype=torch.int64, device=b.device)}
            for b in batch["boxes"]
        ]
        metrics["coco"].update(detections, labelled)
        labelled = batch["cls"] >= 0
        if "cls" in metrics and labelled.any():
            metrics["cls"].update(global_logits[labelled].softmax(dim=1), batch["cls"][labelled])

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.metrics[stage]
        scores = [float(m.compute()) for m in metrics["rsna"]]
        best = max(range(len(scores)), key=scores.__getitem__)
        values = {}
        if stage == "val":
            self.score_thresh.fill_(self.thresholds[best])
            values["val/rsna_map"], values["val/rsna_score_thresh"] = scores[best], self.thresholds[best]
        else:
            values["test/rsna_map_oracle"] = scores[best]
            if torch.isnan(self.score_thresh):
                log.warning(
                    "no validation-tuned score threshold (validation never ran); test/rsna_map "
                    "uses the best threshold on test itself, %.2f",
                    self.thresholds[best],
                )
                values["test/rsna_map"], values["test/rsna_score_thresh"] = (
                    scores[best],
                    self.thresholds[best],
                )
            else:
                values["test/rsna_map"] = float(metrics["rsna_tuned"].compute())
                values["test/rsna_score_thresh"] = float(self.score_thresh)
        coco = metrics["coco"].compute()
        values.update({f"{stage}/{k}": float(coco[k]) for k in ("map", "map_50", "map_75")})
        if "cls" in metrics:
            values.update({f"{stage}/{k}": float(v) for k, v in metrics["cls"].compute().items()})
        self.log_dict(values)
        for metric in metrics.modules():
            if isinstance(metric, Metric):
                metric.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        """Per image: ``{"patient_id", "index", "boxes" float (K, 4) x1y1x2y2 in ORIGINAL pixels,
        "scores" (K,), "global_probs" (global_classes,) or None}``; all detections above the
        model's ``score_thresh``, unfiltered by the tuned ``self.score_thresh``."""
        detections = self.model(batch["image"])
        size = batch["image"].shape[-1]  # square S x S network input
        results = []
        for i, det in enumerate(detections):
            results.append(
                {
                    "patient_id": batch["patient_id"][i],
                    "index": int(batch["index"][i]),
                    "boxes": to_original(det["boxes"], batch["orig_size"][i].tolist(), size),
                    "scores": det["scores"],
                    "global_probs": det["global_logits"].softmax(dim=0) if "global_logits" in det else None,
                }
            )
        return results

    def configure_optimizers(self):
        return configure_optimizers(
            self.parameters(),
            self.optimizer_factory,
            self.scheduler_factory,
            self.hparams.scheduler_monitor or self.hparams.monitor,
            self.hparams.scheduler_monitor_mode or self.hparams.monitor_mode,
        )
