"""Classifier contracts: registry, timm vocabulary, shapes, errors, local weights, configs, learning."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from cxr.models import CLASSIFIERS, MODELS, DepthwiseCNN, MobileNet, PlainCNN, create_model
from cxr.models.layers import ConvPoolClassifier, DepthwiseSeparableConv
from cxr.synth.phantom import chest_phantom, lung_boxes

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "model"
SMALL_VARIANT = "mobilenetv3_small_050"  # cheapest timm MobileNet; the wrapper does not depend on it


def test_registry_is_alphabetical_and_holds_the_classifiers():
    assert list(MODELS) == sorted(MODELS)
    assert set(CLASSIFIERS) <= set(MODELS)
    assert (MODELS["plain_cnn"], MODELS["depthwise_cnn"], MODELS["mobilenet"]) == (
        PlainCNN,
        DepthwiseCNN,
        MobileNet,
    )


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_backward(name, in_chans):
    torch.manual_seed(0)
    num_classes = 1 if in_chans == 1 else 3
    model = create_model(name, in_chans=in_chans, num_classes=num_classes)
    logits = model(torch.randn(2, in_chans, 64, 64))
    assert logits.shape == (2, num_classes) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_timm_vocabulary(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2).eval()
    x = torch.randn(2, 1, 64, 96)  # not square, not 200: pooling before the head makes any size work
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(features), model(x))
        assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("cls", [PlainCNN, DepthwiseCNN])
def test_input_smaller_than_the_pooling_stack_is_refused(cls):
    model = cls(widths=(8, 8, 8, 8, 8)).eval()
    assert model(torch.randn(1, 1, 32, 40)).shape == (1, 1)
    with pytest.raises(ValueError, match="H, W >= 32"):
        model(torch.randn(1, 1, 16, 64))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'depthwise_cnn', 'mobilenet', 'plain_cnn'"):
        create_model("resnet50")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_unknown_keyword_fails_naming_key_and_model(name):
    with pytest.raises(TypeError, match=rf"'{name}'.*{MODELS[name].__name__}.*\['in_chan'\]"):
        create_model(name, in_chan=1)


def test_import_loads_no_training_or_data_stack():
    code = "import sys, cxr.models; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            cwd=ROOT,
        ).stdout.split()
    )
    assert {"torch", "torchvision", "timm"} <= loaded
    heavy = {
        "pytorch_lightning",
        "lightning",
        "lightning_fabric",
        "hydra",
        "omegaconf",
        "pydicom",
        "pandas",
        "matplotlib",
        "albumentations",
        "cv2",
        "sklearn",
        "torchmetrics",
    }
    assert not loaded & heavy


def test_plain_cnn_counts_19_keras_layers():
    keras_layers = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear, nn.Dropout)

    def count(model):
        return sum(isinstance(m, keras_layers) for m in model.modules())

    assert count(PlainCNN()) == 19
    assert count(PlainCNN(batch_norm=False)) == 14
    first_conv = next(m for m in PlainCNN().modules() if isinstance(m, nn.Conv2d))
    assert first_conv.out_channels == 256


def test_conv_pool_classifier_chains_one_stage_per_width():
    calls = []

    def stage(index, in_chs, out_chs):
        calls.append((index, in_chs, out_chs))
        return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, padding=1), nn.MaxPool2d(2))

    model = ConvPoolClassifier(3, [8, 4, 6], stage, num_classes=2, hidden=5, pool_size=2, drop_rate=0.0)
    assert calls == [(0, 3, 8), (1, 8, 4), (2, 4, 6)]
    assert (model.num_features, model.min_size, model.head_hidden_size) == (6, 8, 5)
    assert model.forward_features(torch.randn(1, 3, 16, 24)).shape == (1, 6, 2, 3)
    assert model(torch.randn(1, 3, 16, 24)).shape == (1, 2)
    with pytest.raises(ValueError, match="widths must be a non-empty"):
        ConvPoolClassifier(3, [], stage, num_classes=2, hidden=5, pool_size=2, drop_rate=0.0)


def test_depthwise_separable_conv_params_and_shape():
    x = torch.randn(2, 4, 10, 12)
    for pool in ("before", "between"):
        block = DepthwiseSeparableConv(4, 8, pool=pool)
        # depthwise 4*9, BN(4) 2*4, pointwise 4*8, BN(8) 2*8
        assert sum(p.numel() for p in block.parameters()) == 36 + 8 + 32 + 16
        assert block(x).shape == (2, 8, 5, 6)
    assert DepthwiseSeparableConv(4, 8)(x).shape == (2, 8, 10, 12)
    with pytest.raises(ValueError, match="pool must be one of"):
        DepthwiseSeparableConv(4, 8, pool="after")


def test_depthwise_stage_pools_before_its_wide_layers():
    """Only the first stage's depthwise conv sees full resolution; later ones see the pooled map."""
    model = DepthwiseCNN(widths=(8, 8, 8))
    sizes = []
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
        conv.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].shape[-1]))
    model(torch.randn(1, 1, 64, 64))
    assert sizes == [64, 16, 8]


def test_depthwise_cnn_separable_choices():
    widths = (8, 8, 8)
    assert DepthwiseCNN(widths=widths).separable == (True, True, True)
    assert DepthwiseCNN(widths=widths, separable="first").separable == (True, False, False)
    assert DepthwiseCNN(widths=widths, separable=[False, True, True]).separable == (False, True, True)

    def n_params(m):
        return sum(p.numel() for p in m.parameters())

    # "none" is exactly PlainCNN with BN: same skeleton, same widths
    assert n_params(DepthwiseCNN(widths=widths, separable="none")) == n_params(PlainCNN(widths=widths))
    assert n_params(DepthwiseCNN(widths=widths)) < n_params(PlainCNN(widths=widths))
    with pytest.raises(ValueError, match="one bool per stage"):
        DepthwiseCNN(widths=widths, separable=[True, False])
    with pytest.raises(ValueError, match="separable must be one of"):
        DepthwiseCNN(widths=widths, separable="last")


def test_mobilenet_rejects_unknown_variant():
    with pytest.raises(ValueError, match="mobilenetv2_100"):
        MobileNet(variant="mobilenetv9")


def _save_imagenet_like(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model(SMALL_VARIANT, pretrained=False, in_chans=3, num_classes=1000).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    return source, path


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_mobilenet_loads_local_weights_exactly(tmp_path, suffix):
    source, path = _save_imagenet_like(tmp_path, suffix)
    model = MobileNet(in_chans=3, num_classes=1000, variant=SMALL_VARIANT, pretrained_path=str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_mobilenet_adapts_rgb_stem_and_skips_imagenet_head(tmp_path, caplog):
    source, path = _save_imagenet_like(tmp_path, ".pth")
    with caplog.at_level(logging.INFO, logger="cxr.models.weights"):
        model = MobileNet(in_chans=1, num_classes=1, variant=SMALL_VARIANT, pretrained_path=str(path)).eval()
    assert "classifier.weight" in caplog.text and "classifier.bias" in caplog.text
    grey = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        # the adapted stem sums the RGB kernels, so grey input == the same grey on all three channels
        torch.testing.assert_close(
            model.forward_features(grey), source.forward_features(grey.expand(-1, 3, -1, -1))
        )
        assert model(grey).shape == (2, 1)


def test_mobilenet_weight_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        MobileNet(variant=SMALL_VARIANT, pretrained_path=str(tmp_path / "missing.pth"))
    torch.save({"encoder.foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth: none of its 1 keys match"):
        MobileNet(variant=SMALL_VARIANT, pretrained_path=str(tmp_path / "other.pth"))
    v2 = timm.create_model("mobilenetv2_050", pretrained=False)
    torch.save(v2.state_dict(), tmp_path / "v2.pt")
    with pytest.raises(ValueError, match=r"v2\.pt: \d+ keys unknown to the model"):
        MobileNet(variant=SMALL_VARIANT, pretrained_path=str(tmp_path / "v2.pt"))
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.bin: expected a \.safetensors"):
        MobileNet(variant=SMALL_VARIANT, pretrained_path=str(tmp_path / "w.bin"))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_config_instantiates_with_every_default_explicit(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cls = MODELS[name]
    assert cfg._target_ == f"cxr.models.{cls.__name__}"
    params = inspect.signature(cls).parameters
    values = OmegaConf.to_container(cfg)
    del values["_target_"]
    assert list(values) == list(params)
    for key, value in values.items():
        default = params[key].default
        assert (tuple(value) if isinstance(value, list) else value) == default, key
    assert type(instantiate(cfg)) is cls


def _phantom_batch(rng, n, size):
    """Half the phantoms carry one opacity in a random lung; labels 1/0."""
    images, labels = [], []
    for i in range(n):
        opacities = []
        if i % 2:
            x1, y1, x2, y2 = lung_boxes(size, size)[rng.integers(2)]
            cx, cy = rng.uniform(x1 + 6, x2 - 6), rng.uniform(y1 + 8, y2 - 8)
            opacities = [(cx - 7, cy - 9, cx + 7, cy + 9)]
        images.append(chest_phantom(rng, size, size, opacities))
        labels.append(i % 2)
    x = torch.from_numpy(np.stack(images)).float().unsqueeze(1) / 255
    return (x - 0.449) / 0.226, torch.tensor(labels, dtype=torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain_cnn", "depthwise_cnn"])
def test_learns_to_see_opacities(name):
    steps, batch = 40, 16
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # fresh phantoms for every step, so held-out accuracy measures learning, not memorising
    x_train, y_train = _phantom_batch(rng, steps * batch, 64)
    x_test, y_test = _phantom_batch(rng, 64, 64)
    model = create_model(name, widths=(16, 16, 16, 16, 16), hidden=32, drop_rate=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        x, y = x_train[step * batch : (step + 1) * batch], y_train[step * batch : (step + 1) * batch]
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # 40 steps are too few for BN running averages to settle; re-estimate them as after a long run
    torch.optim.swa_utils.update_bn([(x_train[-256:],)], model)
    model.eval()
    with torch.no_grad():
        accuracy = ((model(x_test).squeeze(1) > 0).float() == y_test).float().mean().item()
    assert accuracy >= 0.85
