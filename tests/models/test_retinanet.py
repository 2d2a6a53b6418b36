import numpy as np
import pytest
import timm
import torch
from torchvision.models.detection.image_list import ImageList

from cxr.models.fpn import EncoderFPN
from cxr.models.retinanet import RetinaNet, default_anchor_sizes

S = 64


def _tiny(**kwargs) -> RetinaNet:
    args = dict(encoder="test_resnet", image_size=S, fpn_channels=16, global_dropout=0.0)
    return RetinaNet(**{**args, **kwargs})


def _anchors(model: RetinaNet, images: torch.Tensor) -> torch.Tensor:
    features = list(model.backbone(images).values())
    return model.anchor_generator(ImageList(images, [(S, S)] * len(images)), features)[0]


@pytest.mark.parametrize("encoder", ["seresnext50_32x4d", "resnet34", "resnet50", "mobilenetv3_large_100"])
def test_paper_and_alternative_encoders_build_and_detect(encoder):
    model = RetinaNet(encoder=encoder, image_size=S, fpn_channels=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, S, S))
    assert len(out) == 1 and out[0]["boxes"].shape[1] == 4 and out[0]["global_logits"].shape == (3,)


def test_seresnext101_builds():
    model = RetinaNet(encoder="seresnext101_32x4d", image_size=S)
    assert model.backbone.encoder_channels == 2048
    assert sum(p.numel() for p in model.backbone.encoder.parameters()) > 40e6


def test_encoder_without_the_needed_strides_is_refused():
    with pytest.raises(ValueError, match=r"test_vit.*strides"):
        EncoderFPN("test_vit")


@pytest.mark.parametrize("box_loss", ["l1", "smooth_l1"])
@pytest.mark.parametrize("training", [True, False])
def test_image_without_boxes_gives_focal_loss_and_zero_regression_loss(training, box_loss):
    model = _tiny(box_loss=box_loss).train(training)
    empty = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.zeros(0, 4)}]
    out, detections = model.losses_and_detections(torch.randn(2, 1, S, S), empty)
    assert torch.isfinite(out["loss_box_cls"]) and out["loss_box_cls"] > 0
    assert out["loss_box_reg"].item() == 0.0
    assert len(detections) == 2
    if training:
        out["loss_box_cls"].backward()
        assert model.head.classification_head.cls_logits.bias.grad.abs().sum() > 0


def test_train_mode_returns_a_loss_dict_and_eval_mode_a_list_of_detections():
    """torchvision's contract: losses in training, per-image {boxes, scores, labels} in eval."""
    model = _tiny()
    x = torch.randn(2, 1, S, S)
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "cls": 2},
        {"boxes": torch.zeros(0, 4), "cls": 0},
    ]
    losses = model.train()(x, targets)
    assert set(losses) == {"loss_box_cls", "loss_box_reg", "loss_global"}
    assert all(v.ndim == 0 and v.requires_grad for v in losses.values())
    with torch.no_grad():
        detections = model.eval()(x)
    assert isinstance(detections, list) and len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels", "global_logits"}
        assert det["boxes"].shape == (len(det["scores"]), 4) and det["global_logits"].shape == (3,)
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_losses_and_detections_agree_with_the_two_modes():
    model = _tiny(freeze_bn=True).eval()
    x = torch.randn(1, 1, S, S)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1])}]
    with torch.no_grad():
        losses, detections = model.losses_and_detections(x, targets)
        plain = model(x)
        trained = model.train()(x, targets)  # frozen BN and no dropout: the same numbers
    assert losses["loss_box_reg"] > 0  # the matched anchors' regression is not yet exact
    assert torch.equal(detections[0]["boxes"], plain[0]["boxes"])
    for name in ("loss_box_cls", "loss_box_reg"):
        assert torch.allclose(losses[name], trained[name]), name


def test_smooth_l1_on_scaled_targets_is_the_authors_regression_loss():
    """A 20-px anchor matched to a box 10 % wider (its centre 1 px right): the authors' targets are
    (dx/wa, dy/ha, log(w/wa), log(h/ha)) / (0.1, 0.1, 0.2, 0.2) = (0.5, 0, 5·log 1.1, 0), and the loss
    is smooth-L1 with β = 1/9 averaged over the 4 coordinates; torchvision's L1 on unit-weight
    targets is their plain sum (0.05 + log 1.1)."""
    anchors = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]])]
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 22.0, 20.0]])}]
    outputs = {"bbox_regression": torch.zeros(1, 2, 4)}
    matched = [torch.tensor([0, -1])]  # only the first anchor is positive
    authors = _tiny(box_loss="smooth_l1", box_coder_weights=(10, 10, 5, 5)).head.regression_head
    encoded = [0.5, 0.0, 5 * np.log(1.1), 0.0]
    expected = np.mean([abs(v) - 0.5 / 9 if abs(v) > 1 / 9 else 4.5 * v**2 for v in encoded])
    assert authors.compute_loss(targets, outputs, anchors, matched).item() == pytest.approx(
        expected, rel=1e-5
    )
    l1 = _tiny().head.regression_head
    assert l1.compute_loss(targets, outputs, anchors, matched).item() == pytest.approx(
        0.05 + np.log(1.1), rel=1e-5
    )


def test_detections_are_anchors_in_the_input_pixel_frame():
    """Zero box regression and a high constant score make anchors the detections: the output boxes
    must be the anchors themselves (clipped to S×S), i.e. no rescaling between input and output."""
    model = _tiny(small_anchors=True, nms_thresh=1.0, detections_per_img=5000, global_head=False).eval()
    for layer in (model.head.regression_head.bbox_reg, model.head.classification_head.cls_logits):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    model.head.classification_head.cls_logits.bias.data.fill_(5.0)
    images = torch.randn(1, 1, S, S)
    with torch.no_grad():
        det = model(images)[0]
        anchors = _anchors(model, images).clamp(0, S)
    assert set(det) == {"boxes", "scores", "labels"}
    assert (det["labels"] == 1).all()
    # torchvision keeps the 1000 best anchors of each level: all of P3–P7, 1000 of P2's 2304
    assert len(det["boxes"]) == 1000 + 9 * (64 + 16 + 4 + 1 + 1)
    assert torch.cdist(det["boxes"], anchors).min(dim=1).values.max() < 1e-4
    # P2's 16-px square anchor at cell (8, 8), stride 4, is centred on pixel (32, 32)
    assert (det["boxes"] == torch.tensor([24.0, 24.0, 40.0, 40.0])).all(dim=1).any()


def test_transform_leaves_pixel_values_size_and_boxes_alone():
    model = _tiny()
    images = torch.randn(2, 1, S, S) * 3
    boxes = torch.tensor([[1.5, 2.5, 40.0, 63.0]])
    for mode in (True, False):
        model.train(mode)
        image_list, targets = model.transform(
            list(images), [{"boxes": boxes.clone()}, {"boxes": boxes.clone()}]
        )
        assert image_list.image_sizes == [(S, S), (S, S)]
        assert torch.allclose(image_list.tensors, images, atol=1e-6)
        assert torch.equal(targets[0]["boxes"], boxes)


def test_inputs_of_another_size_or_bad_targets_are_refused():
    model = _tiny()
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\)"):
        model(torch.randn(1, 1, 32, 32), [{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match="targets in training mode"):
        model.train()(torch.randn(1, 1, S, S))
    for box in ([10.0, 10.0, 10.0, 20.0], [1.0, 1.0, float("nan"), 9.0]):
        with pytest.raises(ValueError, match="target 0: box"):
            model(torch.randn(1, 1, S, S), [{"boxes": torch.tensor([box])}])
    with pytest.raises(ValueError, match="labels must all be 1"):
        model(
            torch.randn(1, 1, S, S),
            [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([0])}],
        )


@pytest.mark.parametrize("head_type", ["linear", "pooled_conv"])
def test_global_head_can_be_switched_off(head_type):
    with_head, without = _tiny(global_classes=4, global_head_type=head_type), _tiny(global_head=False)
    x, targets = torch.randn(2, 1, S, S), [{"boxes": torch.zeros(0, 4), "cls": 1}] * 2
    assert with_head.eval()(x)[0]["global_logits"].shape == (4,)
    assert "global_logits" not in without.eval()(x)[0]
    assert "loss_global" in with_head.train()(x, targets) and "loss_global" not in without.train()(x, targets)
    assert (with_head.num_global_classes, without.num_global_classes) == (4, 0)
    assert not any(name.startswith("global_head") for name, _ in without.named_parameters())


@pytest.mark.parametrize("head_type", ["linear", "pooled_conv"])
def test_global_dropout_is_active_only_in_training(head_type):
    torch.manual_seed(0)
    model = _tiny(global_dropout=0.5, global_head_type=head_type, freeze_bn=True)
    x, targets = torch.randn(2, 1, S, S), [{"boxes": torch.zeros(0, 4), "cls": 1}] * 2
    assert not torch.equal(model(x, targets)["loss_global"], model(x, targets)["loss_global"])
    model.eval()
    assert torch.equal(model(x)[0]["global_logits"], model(x)[0]["global_logits"])


def test_box_classifier_dropout_sits_before_the_output_conv_and_only_trains():
    torch.manual_seed(0)  # inputs and weights fixed: the test must not depend on the suite's RNG state
    model = _tiny(cls_dropout=0.5, freeze_bn=True)
    x, targets = torch.randn(1, 1, S, S), [{"boxes": torch.zeros(0, 4)}]
    assert isinstance(model.head.classification_head.conv[-1], torch.nn.Dropout)
    # dropout draws a new mask per pass: the box classifier's logits differ (its loss barely moves:
    # the output conv starts at std 0.01, so two losses may round to the same float)
    features = list(model.backbone(x).values())
    head = model.head.classification_head
    assert not torch.equal(head(features), head(features))
    assert torch.isfinite(model(x, targets)["loss_box_cls"])
    reg = [model(x, [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]])}])["loss_box_reg"] for _ in range(2)]
    assert torch.equal(*reg)  # the regression branch has no dropout
    model.eval()
    assert torch.equal(model(x)[0]["scores"], model(x)[0]["scores"])


def test_authors_global_head_shapes_and_small_maps():
    from cxr.models.global_head import PooledConvHead

    head = PooledConvHead(64, 3, dropout=0.0)
    for side in (1, 2, 5, 16):  # C5 of 32 … 512 px inputs
        assert head(torch.randn(2, 64, side, side)).shape == (2, 3)
    assert head.conv.padding == (0, 0) and head.fc.in_features == 512


def test_freeze_bn_keeps_batchnorm_in_eval_mode_in_training():
    model = _tiny(freeze_bn=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert model.training and model.head.training
    assert all(p.requires_grad for m in bns for p in m.parameters())


def test_new_options_keep_the_state_dict_keys():
    """Checkpoints load by keys: dropout, frozen BN and the loss options add none; the default model
    (the one older checkpoints were saved from) keeps the linear global head's keys."""
    default = set(_tiny().state_dict())
    options = dict(cls_dropout=0.5, freeze_bn=True, box_loss="smooth_l1", box_coder_weights=(10, 10, 5, 5))
    assert set(_tiny(**options, low_quality_matches=False).state_dict()) == default
    assert {k for k in default if k.startswith("global_head")} == {
        "global_head.fc.weight",
        "global_head.fc.bias",
    }
    assert (
        "head.classification_head.cls_logits.weight" in default
        and "head.regression_head.bbox_reg.bias" in default
    )


def test_small_anchors_add_the_stride_4_level():
    """At 64 px the levels have 16², 8², 4², 2², 1², 1² cells (strides 4 … 128), 9 anchors each."""
    x = torch.randn(1, 1, S, S)
    with_p2, without = _tiny(small_anchors=True), _tiny(small_anchors=False)
    assert list(with_p2.backbone(x)) == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert list(without.backbone(x)) == ["p3", "p4", "p5", "p6", "p7"]
    assert len(_anchors(with_p2, x)) == 9 * (256 + 64 + 16 + 4 + 1 + 1)
    assert len(_anchors(without, x)) == 9 * (64 + 16 + 4 + 1 + 1)
    assert default_anchor_sizes(True)[0] == (16, 20, 25)
    assert default_anchor_sizes(False) == default_anchor_sizes(True)[1:]


def test_anchor_sizes_are_configurable_and_checked():
    model = _tiny(small_anchors=False, anchor_sizes=[[8], [16], [24], [32], [40]], aspect_ratios=[1.0])
    anchors = _anchors(model, torch.randn(1, 1, S, S))
    sides = (anchors[:, 2] - anchors[:, 0]).unique()
    assert sides.tolist() == [8.0, 16.0, 24.0, 32.0, 40.0]
    assert model.head.classification_head.num_anchors == 1
    with pytest.raises(ValueError, match="one entry per pyramid level"):
        _tiny(small_anchors=True, anchor_sizes=[[8], [16], [24], [32], [40]])
    with pytest.raises(ValueError, match="same number"):
        _tiny(small_anchors=False, anchor_sizes=[[8], [16, 20], [24], [32], [40]])


def test_local_pretrained_weights_load_with_adapted_stem(tmp_path):
    classifier = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    encoder = RetinaNet(
        encoder="resnet18", image_size=S, fpn_channels=16, pretrained_path=str(path)
    ).backbone.encoder
    assert torch.allclose(encoder.conv1.weight, classifier.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(encoder.layer4[1].conv2.weight, classifier.layer4[1].conv2.weight)
    assert torch.equal(encoder.layer2[0].bn1.running_var, classifier.layer2[0].bn1.running_var)


def test_pretrained_weights_of_another_architecture_or_missing_file_raise(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet34\.pth.*unknown to the model"):
        RetinaNet(encoder="resnet18", image_size=S, pretrained_path=str(path))
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        RetinaNet(encoder="resnet18", image_size=S, pretrained_path=str(missing))


# Gabruseva et al.'s encoders that timm has (NASNet-A-Mobile is not in timm), by their timm names
PAPER_ENCODERS = [
    "legacy_seresnext50_32x4d",
    "legacy_seresnext101_32x4d",
    "resnet101",
    "legacy_xception",
    "dpn92",
    "inception_resnet_v2",
    "pnasnet5large",
]


@pytest.mark.parametrize("size", [256, 512])
@pytest.mark.parametrize("encoder", PAPER_ENCODERS)
def test_paper_encoders_give_aligned_pyramids_and_all_anchors(encoder, size):
    """Built on the meta device (shapes only): every level is exactly S / stride cells, also for
    encoders with unpadded convolutions (inception_resnet_v2: 124/61/30/14 at 512 px before resizing),
    so the heads cover the authors' anchor count (196,560 at 512 px)."""
    with torch.device("meta"):
        model = RetinaNet(encoder=encoder, image_size=size, global_head_type="pooled_conv", cls_dropout=0.5)
        pyramid, deepest = model.backbone.features(torch.zeros(1, 1, size, size))
        logits = model.global_head(deepest)
        outputs = model.head(list(pyramid.values()))
    assert [p.shape[-1] for p in pyramid.values()] == [size // s for s in (4, 8, 16, 32, 64, 128)]
    assert logits.shape == (1, 3)
    cells = sum((size // s) ** 2 for s in (4, 8, 16, 32, 64, 128))
    assert outputs["cls_logits"].shape == (1, 9 * cells, 1) and (size != 512 or 9 * cells == 196_560)
