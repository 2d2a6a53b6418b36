"""cxr-train on the synthetic RSNA layout: the detection track end to end."""

import json

from cxr.cli.train import run
from cxr.config.compose import compose


def test_detection_run_trains_tests_and_writes_metrics(rsna_dir, tmp_path):
    cfg = compose(
        [
            "datamodule=rsna",
            "model=retinanet",
            "task=detection",
            f"datamodule.data_dir={rsna_dir}",
            "datamodule.image_size=64",
            "datamodule.batch_size=4",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'cache'}",
            "model.encoder=resnet18",
            "model.fpn_channels=32",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "trainer.enable_progress_bar=false",
        ],
        output_dir=tmp_path / "run",
    )
    metrics = run(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("test/rsna_map", "val/rsna_map", "test/map_50", "test/cls_auroc", "params", "flops"):
        assert key in written, key
    assert 0.0 <= written["test/rsna_map"] <= 1.0
    assert written["params"] == metrics["params"] > 0
    assert list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))
