"""SpeedUp (channels_last, torch.compile) as a callback, and its wiring through ``callbacks=fast``."""

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader

from cxr.config.compose import compose
from cxr.tasks.callbacks.speed import SpeedUp, submodule, to_channels_last

CL = torch.channels_last


def test_to_channels_last_converts_only_4d_float_tensors_anywhere_in_a_batch():
    batch = {
        "image": torch.randn(2, 3, 4, 5),
        "label": torch.zeros(2, dtype=torch.int64),
        "boxes": [torch.zeros(1, 4)],
        "pair": (torch.randn(1, 2, 3, 3), "id"),
        "mask": torch.ones(2, 3, 4, 5).bool(),
    }
    out = to_channels_last(batch)
    assert out["image"].is_contiguous(memory_format=CL) and not batch["image"].is_contiguous(memory_format=CL)
    assert out["pair"][0].is_contiguous(memory_format=CL) and out["pair"][1] == "id"
    assert not out["mask"].is_contiguous(memory_format=CL)  # not floating point
    assert out["label"] is batch["label"] and out["boxes"][0] is batch["boxes"][0]
    torch.testing.assert_close(out["image"], batch["image"])  # same values, other layout


def test_submodule_names_the_missing_part():
    net = nn.Sequential()
    net.add_module("backbone", nn.Conv2d(1, 1, 1))
    assert submodule(net, "backbone") is net.backbone
    with pytest.raises(ValueError, match=r"no sub-module 'backbone.fpn' \(no nn.Module at 'fpn'\)"):
        submodule(net, "backbone.fpn")


class _Task(pl.LightningModule):
    """A 3-channel conv classifier that records the layout of what it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
        self.seen: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["image"].is_contiguous(memory_format=CL))
        return self.model(batch["image"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(task: _Task, callback: SpeedUp) -> None:
    data = [{"image": torch.randn(3, 8, 8)} for _ in range(4)]
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(task, DataLoader(data, batch_size=2))


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_weights_and_batches(channels_last):
    task = _Task()
    weight = task.model[0].weight
    _fit(task, SpeedUp(channels_last=channels_last))
    assert task.seen == [channels_last, channels_last]
    assert task.model[0].weight.is_contiguous(memory_format=CL) == channels_last
    assert task.model[0].weight is weight  # the same Parameter: optimisers and checkpoints unaffected


def test_compile_is_in_place_and_keeps_state_dict_keys():
    task = _Task()
    keys = list(task.state_dict())
    SpeedUp(compile=True, compile_module="model").setup(trainer=None, pl_module=task, stage="fit")
    assert task.model._compiled_call_impl is not None  # compiled lazily, on the first call
    assert list(task.state_dict()) == keys  # no "_orig_mod." prefix: checkpoints load without compile
    with pytest.raises(ValueError, match=r"no sub-module 'model\.backbone'"):
        SpeedUp(compile=True, compile_module="model.backbone").setup(
            trainer=None, pl_module=_Task(), stage="fit"
        )
    with pytest.raises(ValueError, match="compile_mode"):
        SpeedUp(compile=True, compile_mode="fastest")


def test_trainer_fast_selects_precision_and_callbacks_fast_channels_last_and_optional_compile():
    cfg = compose(["trainer=fast", "callbacks=fast"])
    assert cfg.trainer.precision == ("bf16-mixed" if torch.cuda.is_available() else "32-true")
    assert cfg.trainer.benchmark is True and {"model_checkpoint", "nonfinite", "speed"} <= set(cfg.callbacks)
    speed = instantiate(cfg.callbacks.speed)
    assert isinstance(speed, SpeedUp) and speed.channels_last and not speed.compile
    cfg = compose(
        ["trainer=fast", "callbacks=fast", "callbacks.speed.compile=true", "trainer.precision=16-mixed"]
    )
    assert instantiate(cfg.callbacks.speed).compile and cfg.trainer.precision == "16-mixed"
    assert "speed" not in compose(["trainer=fast"]).callbacks  # a trainer setting touches no callback
    assert "speed" not in compose(["trainer=cpu"]).callbacks  # off unless asked for


@pytest.mark.slow  # a fast_dev_run fit and test: ~15 s on a busy 2-core machine
def test_cxr_train_with_trainer_fast_runs_channels_last(ped_cxr_dir, tmp_path):
    from cxr.cli.train import run

    cfg = compose(
        [
            f"datamodule.data_dir={ped_cxr_dir}",
            "datamodule.image_size=48",
            "datamodule.batch_size=8",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "model=depthwise_cnn",
            "trainer=fast",
            "callbacks=fast",
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "+trainer.fast_dev_run=true",
            "trainer.enable_progress_bar=false",
        ],
        output_dir=tmp_path / "run",
    )
    metrics = run(cfg)
    assert "test/accuracy" in metrics and metrics["params"] > 0


@pytest.mark.parametrize("name", ["plain_cnn", "depthwise_cnn"])
def test_fold_batch_norm_keeps_outputs_and_removes_every_bn(name):
    from cxr.inference.optimise import fold_batch_norm
    from cxr.models import create_model

    torch.manual_seed(0)
    model = create_model(name, widths=[6, 5], hidden=4, batch_norm=True, head="avgpool")
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norm(model)
    x = torch.randn(2, 1, 16, 16)
    expected = model.eval()(x)
    assert fold_batch_norm(model) is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_trainer_fast_on_a_gpu_trains_in_bf16_with_channels_last(ped_cxr_dir, tmp_path):
    """The GPU path end to end: bf16 autocast, channels_last and a finite test loss."""
    from cxr.cli.train import run

    cfg = compose(
        [
            f"datamodule.data_dir={ped_cxr_dir}",
            "datamodule.image_size=64",
            "datamodule.batch_size=8",
            "datamodule.num_workers=2",
            "datamodule.pin_memory=true",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "model=depthwise_cnn",
            "trainer=fast",
            "callbacks=fast",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
        ],
        output_dir=tmp_path / "run",
    )
    assert cfg.trainer.precision == "bf16-mixed"
    metrics = run(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"])) and metrics["epochs"] == 2


@needs_cuda
def test_bf16_autocast_keeps_a_classifier_close_to_fp32_on_a_gpu():
    from cxr.models import create_model

    torch.manual_seed(0)
    model = create_model("depthwise_cnn", widths=[16, 16, 16], hidden=16, image_size=64).cuda().eval()
    x = torch.randn(4, 1, 64, 64, device="cuda")
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model.to(memory_format=CL)(x.contiguous(memory_format=CL))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.05, rtol=0.05)
