"""Heat maps of the detector's encoder, and boxes drawn over them."""

import numpy as np
import pytest
import torch
from torch import nn

from cxr.inference.overlays import detector_cam, draw_boxes, draw_heatmap
from cxr.models import create_model

pytest.importorskip("pytorch_grad_cam")


class _Encoder(nn.Module):
    """timm features_only style: a list of maps, the deepest last (here: brightness, pooled 4x)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)  # the identity, with a weight to take gradients
        nn.init.ones_(self.conv.weight)

    def forward(self, x):
        return [x, nn.functional.avg_pool2d(self.conv(x), 4)]


class _BrightnessDetector(nn.Module):
    """Global class 1 = 'something bright'; its logit is the mean of the deepest map."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.encoder = _Encoder()
        self.global_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(1, 2))
        with torch.no_grad():
            self.global_head[2].weight.copy_(torch.tensor([[0.0], [1.0]]))
            self.global_head[2].bias.zero_()


def test_grad_cam_of_the_global_class_points_at_the_evidence():
    images = torch.zeros(2, 1, 32, 32)
    images[0, 0, 4:12, 4:12] = 1.0
    images[1, 0, 20:28, 16:28] = 1.0
    cam = detector_cam(_BrightnessDetector(), images, class_index=1)
    assert cam.shape == (2, 32, 32) and cam.max() == pytest.approx(1.0)
    for heat, image in zip(cam, images[:, 0].numpy(), strict=True):
        assert heat[image > 0].mean() > 0.5 > heat[image == 0].mean() + 0.3


@pytest.mark.parametrize("global_head", [True, False])
def test_runs_on_a_retinanet_encoder_whatever_its_output_format(global_head):
    kwargs = {"encoder": "test_resnet", "image_size": 64, "fpn_channels": 16, "small_anchors": False}
    torch.manual_seed(0)
    model = create_model("retinanet", **kwargs, global_head=global_head).eval()
    images = torch.randn(2, 1, 64, 64)
    cam = detector_cam(model, images, class_index=2)  # EigenCAM without a global head
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert all(p.grad is None for p in model.parameters())  # the detector itself is left as it was


def test_boxes_are_drawn_over_the_heat_map():
    image = np.full((64, 64), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0
    plain, over = draw_boxes(image, [[8, 8, 40, 40]]), draw_boxes(image, [[8, 8, 40, 40]], heatmap=heat)
    assert over.shape == plain.shape == (64, 64, 3)
    assert np.array_equal(over[8, 20], plain[8, 20])  # the box outline is the same colour
    assert np.array_equal(over[50, 50], draw_heatmap(image, heat)[50, 50])  # elsewhere: the blend
    assert not np.array_equal(over[50, 50], plain[50, 50])


def test_cxr_predict_draws_detector_boxes_over_the_heat_map_and_fuses_with_wbf(tmp_path):
    import json

    from PIL import Image

    from cxr.cli.predict import main as predict
    from cxr.synth.phantom import chest_phantom
    from cxr.tasks.checkpoint_format import FORMAT_VERSION

    kwargs = {"encoder": "test_resnet", "image_size": 64, "fpn_channels": 16, "small_anchors": False}
    torch.manual_seed(0)
    model = create_model("retinanet", **kwargs)
    with torch.no_grad():  # the box classifier says 0.5 everywhere: many boxes
        model.head.classification_head.cls_logits.bias.zero_()
    ckpt = tmp_path / "det.ckpt"
    torch.save(
        {
            "state_dict": {
                **{f"model.{k}": v for k, v in model.state_dict().items()},
                "score_thresh": torch.tensor(0.3),
            },
            "epoch": 0,
            "hyper_parameters": {},
            "cxr": {
                "format_version": FORMAT_VERSION,
                "model_name": "retinanet",
                "model_kwargs": kwargs,
                "datamodule": {"image_size": 64, "mean": 0.449, "std": 0.226, "fold": 0},
                "task": "DetectionTask",
            },
        },
        ckpt,
    )
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(chest_phantom(rng, 60, 72, opacities=[(10, 10, 30, 40)])).save(
            tmp_path / "in" / f"img{i}.png"
        )
    out = tmp_path / "out"
    argv = ["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(out), "--overlays"]
    predict([*argv, "--ensemble", "wbf"])
    assert json.loads((out / "settings.json").read_text())["postprocess"]["ensemble"] == "wbf"
    pngs = sorted((out / "overlays").glob("*.png"))
    assert [p.stem for p in pngs] == ["img0", "img1"]
    with Image.open(pngs[0]) as picture:
        colours = np.asarray(picture)
    assert picture.mode == "RGB" and picture.size == (72, 60)
    spread = colours.astype(int).max(axis=2) - colours.astype(int).min(axis=2)
    assert spread.mean() > 20  # a colour map under the boxes, not a grey radiograph
