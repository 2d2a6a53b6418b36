"""RetinaNet for lung opacities after Gabruseva et al. (RSNA Pneumonia Detection Challenge).

torchvision's RetinaNet (head, anchor generator, matcher, focal loss, box coder, NMS) over a timm
encoder + FPN (:class:`cxr.models.fpn.EncoderFPN`), with the paper's additions: an extra stride-4
pyramid level with small anchors, a global 3-class image head, dropout in the box classifier, and
the authors' training details as options (frozen BatchNorm, smooth-L1 on (0.1, 0.1, 0.2, 0.2)-scaled
box targets, no low-quality anchor matches).

The constructor's defaults are the model as it was first written (so checkpoints saved before these
options load unchanged); ``conf/model/retinanet.yaml`` holds the authors' values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead, RetinaNetRegressionHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from cxr.models.fpn import EncoderFPN
from cxr.models.global_head import PooledConvHead

# Three octave scales per level, as in the RetinaNet paper. At 512 px the smallest RSNA box is ~20 px
# (P2) and typical boxes are 75–150 px (P4/P5); P6/P7 cover the few boxes taller than 250 px.
_OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
_BASE_SIZES = {"p2": 16, "p3": 32, "p4": 64, "p5": 128, "p6": 256, "p7": 512}
BOX_LOSSES = ("l1", "smooth_l1")
GLOBAL_HEADS = ("linear", "pooled_conv")


def default_anchor_sizes(small_anchors: bool = True) -> tuple[tuple[int, ...], ...]:
    """Anchor side lengths (pixels of the network input) per level, smallest level first.

    ``small_anchors=True``: P2 (16, 20, 25), P3 (32, 40, 50), P4 (64, 80, 101), P5 (128, 161, 203),
    P6 (256, 322, 406), P7 (512, 645, 812); ``False`` drops P2.
    """
    levels = ["p2", "p3", "p4", "p5", "p6", "p7"][0 if small_anchors else 1 :]
    return tuple(tuple(int(_BASE_SIZES[lv] * o) for o in _OCTAVES) for lv in levels)


class BoxRegressionHead(RetinaNetRegressionHead):
    """torchvision's regression head with the loss chosen by name (same parameters, same keys).

    - ``"l1"``: torchvision's RetinaNet loss: per image the L1 distance of the encoded boxes summed
      over the 4 coordinates, divided by the number of positive anchors (≥ 1), averaged over images.
    - ``"smooth_l1"``: the authors' (yhenon/pytorch-retinanet): smooth-L1 with ``beta``, averaged
      over positive anchors × 4 coordinates; an image without positives counts 0 in the batch mean.

    Targets are encoded by ``box_coder`` (weights (10, 10, 5, 5) divide the (dx, dy, dw, dh)
    targets by (0.1, 0.1, 0.2, 0.2), the authors' scaling).
    """

    def __init__(self, in_channels: int, num_anchors: int, loss: str = "l1", beta: float = 1.0 / 9.0) -> None:
        super().__init__(in_channels, num_anchors)
        if loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {loss!r}")
        self.loss, self.beta = loss, float(beta)

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> Tensor:
        if self.loss == "l1":
            return super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        losses = []
        for target, regression, anchors_per_image, matched in zip(
            targets, head_outputs["bbox_regression"], anchors, matched_idxs, strict=True
        ):
            foreground = torch.where(matched >= 0)[0]
            if len(foreground) == 0:
                losses.append(regression.sum() * 0.0)  # keeps the graph; contributes 0
                continue
            encoded = self.box_coder.encode_single(
                target["boxes"][matched[foreground]], anchors_per_image[foreground]
            )
            losses.append(F.smooth_l1_loss(regression[foreground], encoded, beta=self.beta, reduction="mean"))
        return torch.stack(losses).mean()


class RetinaNet(TorchvisionRetinaNet):
    """One-class (opacity) RetinaNet with an optional global image-classification head.

    Forward contract (torchvision's)::

        train mode: forward(images, targets) -> dict of scalar losses
        eval mode:  forward(images) -> list of B dicts {"boxes", "scores", "labels"[, "global_logits"]}

    - ``images``: float32 (B, in_chans, image_size, image_size), already normalised by the
      datamodule; other sizes raise (torchvision would silently resize them).
    - ``targets``: list of B dicts ``{"boxes": float (N_i, 4)}``, x1 y1 x2 y2 in input pixels, N_i
      may be 0. ``"labels"`` may be omitted; if given they must all be 1 (opacity). ``"cls"``: the
      image's global class (int, -1 = unlabelled), needed for ``"loss_global"``.
    - losses: ``"loss_box_cls"`` (sigmoid focal loss, α 0.25, γ 2; an image without boxes has every
      anchor negative), ``"loss_box_reg"`` (see :class:`BoxRegressionHead`; 0 for an image without
      boxes) and, with a global head and ``"cls"`` in every target, ``"loss_global"`` (cross-entropy
      over the labelled images; 0 when none is labelled). Unweighted: the task weights them.
    - detections: ``"boxes"`` float (K, 4) x1 y1 x2 y2 in input pixels, ``"scores"`` (K,) in [0, 1]
      sorted descending, ``"labels"`` int64 (K,) all 1; K ≤ ``detections_per_img``; boxes scoring ≤
      ``score_thresh`` are dropped before NMS at IoU ``nms_thresh`` (1.0 keeps every box). With a
      global head each dict also has ``"global_logits"`` float (global_classes,) of that image.

    :meth:`losses_and_detections` returns both from one pass in either mode (validation).

    The box classifier has a single sigmoid column (index 0 internally): torchvision uses labels as
    column indices, and a second, never-positive column would only add loss terms.

    Args:
        encoder: timm encoder name (``seresnext50_32x4d``, the authors' ``legacy_seresnext101_32x4d``,
            ``resnet34``, ``resnet101``, ``dpn92``, ``inception_resnet_v2``, ...).
        in_chans: input channels.
        image_size: side S of the square network input.
        small_anchors: add the stride-4 level P2 for small boxes (the paper's extra output). Its
            box heads run on 16× more cells than P4: at 512 px with the default encoder the model
            costs ~280 GFLOPs per image with P2 and ~100 without.
        anchor_sizes: per level (P2 or P3 first, up to P7) a sequence of anchor sides in pixels;
            every level needs the same count. ``None`` → :func:`default_anchor_sizes`.
        aspect_ratios: height / width ratios used at every level.
        global_head: add the global classifier on the deepest encoder feature.
        global_head_type: ``"linear"`` (average pool → dropout → linear) or ``"pooled_conv"`` (the
            authors': :class:`~cxr.models.global_head.PooledConvHead`).
        global_classes: its number of classes (3: Normal / No Lung Opacity-Not Normal / Lung Opacity).
        global_dropout: its dropout probability.
        cls_dropout: dropout before the box classifier's output conv (the authors': same p as the
            global head); 0 = none. The regression branch has none.
        fpn_channels: channels of the pyramid and of the box heads.
        freeze_bn: keep every BatchNorm layer in eval mode (running statistics fixed, as loaded)
            also in training; their affine weights still learn (the authors' ``freeze_bn``).
        box_loss, box_loss_beta: see :class:`BoxRegressionHead`.
        box_coder_weights: (wx, wy, ww, wh) of the box encoding; (10, 10, 5, 5) = the authors'
            targets divided by (0.1, 0.1, 0.2, 0.2).
        low_quality_matches: also match each box to its best anchors below IoU 0.5 (torchvision's
            RetinaNet); the authors' code does not.
        score_thresh, nms_thresh, detections_per_img: post-processing of detections (the authors:
            prefilter 0.025, NMS IoU 0.05).
        pretrained_path: local timm weight file for the encoder (see :class:`EncoderFPN`).
    """

    def __init__(
        self,
        encoder: str = "seresnext50_32x4d",
        in_chans: int = 1,
        image_size: int = 512,
        small_anchors: bool = True,
        anchor_sizes: Sequence[Sequence[float]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        global_head: bool = True,
        global_head_type: str = "linear",
        global_classes: int = 3,
        global_dropout: float = 0.5,
        cls_dropout: float = 0.0,
        fpn_channels: int = 256,
        freeze_bn: bool = False,
        box_loss: str = "l1",
        box_loss_beta: float = 1.0 / 9.0,
        box_coder_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        low_quality_matches: bool = True,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 20,
        pretrained_path: str | None = None,
    ) -> None:
        num_levels = 6 if small_anchors else 5
        sizes = default_anchor_sizes(small_anchors) if anchor_sizes is None else anchor_sizes
        sizes = tuple(tuple(float(s) for s in level) for level in sizes)
        if len(sizes) != num_levels:
            raise ValueError(
                f"anchor_sizes needs one entry per pyramid level ({num_levels} with "
                f"small_anchors={small_anchors}), got {len(sizes)}"
            )
        if len({len(level) for level in sizes}) != 1:
            raise ValueError(f"every level needs the same number of anchor sizes, got {sizes}")
        if global_head_type not in GLOBAL_HEADS:
            raise ValueError(f"global_head_type must be one of {GLOBAL_HEADS}, got {global_head_type!r}")
        if not 0.0 <= cls_dropout < 1.0:
            raise ValueError(f"cls_dropout must be in [0, 1), got {cls_dropout}")
        weights = tuple(float(w) for w in box_coder_weights)
        if len(weights) != 4 or min(weights) <= 0:
            raise ValueError(f"box_coder_weights must be 4 positive numbers, got {box_coder_weights}")
        anchor_generator = AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * num_levels)
        backbone = EncoderFPN(
            encoder,
            in_chans=in_chans,
            fpn_channels=fpn_channels,
            with_p2=small_anchors,
            pretrained_path=pretrained_path,
        )
        num_anchors = anchor_generator.num_anchors_per_location()[0]
        head = RetinaNetHead(fpn_channels, num_anchors, num_classes=1)
        head.regression_head = BoxRegressionHead(fpn_channels, num_anchors, box_loss, box_loss_beta)
        if cls_dropout > 0:  # after the 4th conv+ReLU, before the output conv; adds no parameters
            head.classification_head.conv.append(nn.Dropout(cls_dropout))
        super().__init__(
            backbone,
            num_classes=1,
            anchor_generator=anchor_generator,
            head=head,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        self.box_coder = head.regression_head.box_coder = det_utils.BoxCoder(weights)
        self.proposal_matcher = det_utils.Matcher(0.5, 0.4, allow_low_quality_matches=low_quality_matches)
        # Inputs arrive normalised and already S×S: identity normalisation and no rescaling.
        self.transform = GeneralizedRCNNTransform(
            min_size=image_size, max_size=image_size, image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans
        )
        self.in_chans, self.image_size = in_chans, image_size
        self.num_levels = num_levels
        self.freeze_bn = bool(freeze_bn)
        self.num_global_classes = global_classes if global_head else 0
        channels = backbone.encoder_channels
        self.global_head = (
            None
            if not global_head
            else ClassifierHead(channels, global_classes, pool_type="avg", drop_rate=global_dropout)
            if global_head_type == "linear"
            else PooledConvHead(channels, global_classes, dropout=global_dropout)
        )
        self.train(self.training)  # applies freeze_bn

    def train(self, mode: bool = True) -> RetinaNet:
        """``nn.Module.train``; with ``freeze_bn`` every BatchNorm layer stays in eval mode."""
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _check_inputs(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None
    ) -> list[dict[str, Tensor]] | None:
        """Validate shapes and return torchvision targets (float boxes, label column 0)."""
        expected = (self.in_chans, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or not images.is_floating_point():
            raise ValueError(
                f"RetinaNet expects float images (B, {', '.join(map(str, expected))}), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if targets is None:
            return None
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        out = []
        for i, target in enumerate(targets):
            boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=images.device)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"target {i}: boxes must be (N, 4) x1y1x2y2, got {tuple(boxes.shape)}")
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1) | ~boxes.isfinite().all(dim=1)
            if bad.any():
                raise ValueError(
                    f"target {i}: box {boxes[bad][0].tolist()} is not finite with positive width and height"
                )
            if "labels" in target and (torch.as_tensor(target["labels"]) != 1).any():
                raise ValueError(f"target {i}: labels must all be 1 (opacity), got {target['labels']}")
            out.append(
                {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64, device=images.device)}
            )
        return out

    def _run(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None, detect: bool
    ) -> tuple[dict, list | None]:
        tv_targets = self._check_inputs(images, targets)
        image_list, tv_targets = self.transform(list(images), tv_targets)
        pyramid, deepest = self.backbone.features(image_list.tensors)
        features = list(pyramid.values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        losses: dict[str, Tensor] = {}
        if tv_targets is not None:
            raw = self.compute_loss(tv_targets, head_outputs, anchors)
            losses = {"loss_box_cls": raw["classification"], "loss_box_reg": raw["bbox_regression"]}
        global_logits = self.global_head(deepest) if self.global_head is not None else None
        if global_logits is not None and targets is not None and all("cls" in t for t in targets):
            cls = torch.as_tensor([int(t["cls"]) for t in targets], device=images.device)
            labelled = cls >= 0
            # sum / count rather than mean: a batch without labels gives 0, not nan
            losses["loss_global"] = F.cross_entropy(
                global_logits[labelled], cls[labelled], reduction="sum"
            ) / labelled.sum().clamp(min=1)
        detections = None
        if detect:
            detections = self._detect(head_outputs, anchors, features, image_list.image_sizes)
            if global_logits is not None:
                for det, logits in zip(detections, global_logits, strict=True):
                    det["global_logits"] = logits
        return losses, detections

    def forward(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet needs targets in training mode")
            return self._run(images, targets, detect=False)[0]
        return self._run(images, None, detect=True)[1]

    def losses_and_detections(
        self, images: Tensor, targets: list[dict[str, Tensor]]
    ) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
        """The training-mode loss dict and the eval-mode detections from one forward pass (in the
        current mode: call it in eval mode for validation losses without dropout)."""
        losses, detections = self._run(images, targets, detect=True)
        return losses, detections

    def _detect(
        self,
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        features: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Split the flat head outputs per level, decode, NMS; labels shifted to 1 = opacity."""
        per_location = self.anchor_generator.num_anchors_per_location()[0]
        counts = [f.shape[2] * f.shape[3] * per_location for f in features]
        split = {k: list(v.split(counts, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(counts)) for a in anchors]
        detections = self.postprocess_detections(split, split_anchors, image_sizes)
        for det in detections:
            det["labels"] = det["labels"] + 1
        return detections
