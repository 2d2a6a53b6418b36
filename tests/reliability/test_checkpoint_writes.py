"""Checkpoint writes are atomic (issue 14, item 8): a failure mid-write leaves the previous file
complete and loadable and no temporary file behind; every checkpoint of a run goes through a
temporary file in its own folder, fsync and os.replace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import cxr.tasks.checkpoint_io as checkpoint_io
from cxr.inference.checkpoint import read_checkpoint
from cxr.tasks.callbacks.resume import ResumeCheckpoint
from cxr.tasks.checkpoint_io import AtomicCheckpointIO, save_atomic


def _half_then_fail(real_save):
    """A ``torch.save`` that writes half of the real bytes and then fails, as a full disk would."""

    def save(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(28, "No space left on device")

    return save


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_atomic({"state_dict": {"w": torch.arange(1000.0)}}, path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", _half_then_fail(torch.save))
    with pytest.raises(OSError, match="No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(5000)}}, path)
    assert path.read_bytes() == before
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.arange(1000.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)


def test_every_checkpoint_of_a_run_is_replaced_atomically_in_its_own_folder(tmp_path, monkeypatch):
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        checkpoint_io.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))
    )
    monkeypatch.setattr(checkpoint_io.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    folder = tmp_path / "checkpoints"
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            pl.callbacks.ModelCheckpoint(dirpath=folder, filename="{epoch:03d}", save_top_k=-1),
            ResumeCheckpoint(folder),
        ],
    )
    trainer.fit(_Tiny())
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["epoch=000.ckpt", "epoch=001.ckpt", "last.ckpt"]
    targets = {b.name for _, b in replaced}
    assert targets == set(written) and synced
    assert all(a.parent == b.parent == folder and a.name.startswith(f".{b.name}.") for a, b in replaced)
    # through the trainer, as the resume point is written: a failure keeps the previous last.ckpt
    before = (folder / "last.ckpt").read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", _half_then_fail(torch.save))
    with pytest.raises(OSError, match="No space left on device"):
        trainer.save_checkpoint(folder / "last.ckpt")
    assert (folder / "last.ckpt").read_bytes() == before and read_checkpoint(folder / "last.ckpt")[
        "epoch"
    ] == 1
    assert sorted(p.name for p in folder.iterdir()) == written
