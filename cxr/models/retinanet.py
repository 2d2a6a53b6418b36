"""RetinaNet for lung opacities after Gabruseva et al. (RSNA Pneumonia Detection Challenge).

torchvision's RetinaNet (head, anchor generator, matcher, focal loss, box coder, NMS) over a timm
encoder + FPN (:class:`cxr.models.fpn.EncoderFPN`), with the paper's two additions: an extra
stride-4 pyramid level with small anchors, and a global 3-class image head with dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import ClassifierHead
from torch import Tensor
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from cxr.models.fpn import EncoderFPN

# Three octave scales per level, as in the RetinaNet paper. At 512 px the smallest RSNA box is ~20 px
# (P2) and typical boxes are 75–150 px (P4/P5); P6/P7 cover the few boxes taller than 250 px.
_OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
_BASE_SIZES = {"p2": 16, "p3": 32, "p4": 64, "p5": 128, "p6": 256, "p7": 512}


def default_anchor_sizes(small_anchors: bool = True) -> tuple[tuple[int, ...], ...]:
    """Anchor side lengths (pixels of the network input) per level, smallest level first.

    ``small_anchors=True``: P2 (16, 20, 25), P3 (32, 40, 50), P4 (64, 80, 101), P5 (128, 161, 203),
    P6 (256, 322, 406), P7 (512, 645, 812); ``False`` drops P2.
    """
    levels = ["p2", "p3", "p4", "p5", "p6", "p7"][0 if small_anchors else 1 :]
    return tuple(tuple(int(_BASE_SIZES[lv] * o) for o in _OCTAVES) for lv in levels)


class RetinaNet(TorchvisionRetinaNet):
    """One-class (opacity) RetinaNet with an optional global image-classification head.

    Forward contract::

        forward(images, targets=None) -> dict

    - ``images``: float32 (B, in_chans, image_size, image_size), already normalised by the
      datamodule; other sizes raise (torchvision would silently resize them).
    - ``targets``: optional list of B dicts ``{"boxes": float (N_i, 4)}``, x1 y1 x2 y2 in input
      pixels, N_i may be 0. ``"labels"`` may be omitted; if given they must all be 1 (opacity).
      Required in training mode.
    - returns ``"loss_box_cls"`` (sigmoid focal loss) and ``"loss_box_reg"`` (L1 on encoded boxes)
      whenever targets are given, in train *and* eval mode; an image without boxes contributes a
      focal loss on all its anchors and no regression loss. ``"global_logits"`` float (B,
      global_classes) when ``global_head``. In eval mode also ``"detections"``: B dicts with
      ``"boxes"`` float (K, 4) x1 y1 x2 y2 in input pixels, ``"scores"`` (K,) in [0, 1] sorted
      descending, ``"labels"`` int64 (K,) all 1; K ≤ ``detections_per_img``.

    The box classifier has a single sigmoid column (index 0 internally): torchvision uses labels as
    column indices, and a second, never-positive column would only add loss terms.

    Args:
        encoder: timm encoder name (``seresnext50_32x4d``, the paper's ``seresnext101_32x4d``,
            ``resnet34``, ``resnet50``, ``mobilenetv3_large_100``, ...).
        in_chans: input channels.
        image_size: side S of the square network input.
        small_anchors: add the stride-4 level P2 for small boxes (the paper's extra output). Its
            box heads run on 16× more cells than P4: at 512 px with the default encoder the model
            costs ~280 GFLOPs per image with P2 and ~100 without.
        anchor_sizes: per level (P2 or P3 first, up to P7) a sequence of anchor sides in pixels;
            every level needs the same count. ``None`` → :func:`default_anchor_sizes`.
        aspect_ratios: height / width ratios used at every level.
        global_head: add the global classifier (avg pool of the deepest encoder feature → dropout
            → linear).
        global_classes: its number of classes (3: Normal / No Lung Opacity-Not Normal / Lung Opacity).
        global_dropout: its dropout probability.
        fpn_channels: channels of the pyramid and of the box heads.
        score_thresh, nms_thresh, detections_per_img: post-processing of detections.
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
        global_classes: int = 3,
        global_dropout: float = 0.5,
        fpn_channels: int = 256,
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
        anchor_generator = AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * num_levels)
        backbone = EncoderFPN(
            encoder,
            in_chans=in_chans,
            fpn_channels=fpn_channels,
            with_p2=small_anchors,
            pretrained_path=pretrained_path,
        )
        super().__init__(
            backbone,
            num_classes=1,
            anchor_generator=anchor_generator,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
        # Inputs arrive normalised and already S×S: identity normalisation and no rescaling.
        self.transform = GeneralizedRCNNTransform(
            min_size=image_size, max_size=image_size, image_mean=[0.0] * in_chans, image_std=[1.0] * in_chans
        )
        self.in_chans, self.image_size = in_chans, image_size
        self.num_levels = num_levels
        self.num_global_classes = global_classes if global_head else 0
        self.global_head = (
            ClassifierHead(
                backbone.encoder_channels, global_classes, pool_type="avg", drop_rate=global_dropout
            )
            if global_head
            else None
        )

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
            if self.training:
                raise ValueError("RetinaNet needs targets in training mode")
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

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> dict:
        tv_targets = self._check_inputs(images, targets)
        image_list, tv_targets = self.transform(list(images), tv_targets)
        pyramid, deepest = self.backbone.features(image_list.tensors)
        features = list(pyramid.values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        out: dict = {}
        if tv_targets is not None:
            losses = self.compute_loss(tv_targets, head_outputs, anchors)
            out["loss_box_cls"] = losses["classification"]
            out["loss_box_reg"] = losses["bbox_regression"]
        if self.global_head is not None:
            out["global_logits"] = self.global_head(deepest)
        if not self.training:
            out["detections"] = self._detect(head_outputs, anchors, features, image_list.image_sizes)
        return out

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
