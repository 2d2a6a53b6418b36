import numpy as np
from PIL import Image

from cxr.cli.augment_grid import CONFIG_NAME, render
from cxr.config.compose import compose


def main(overrides):
    return render(compose(overrides, config_name=CONFIG_NAME))


def test_grid_of_a_detection_set_draws_boxes(rsna_dir, tmp_path):
    out = tmp_path / "grid.png"
    main(
        [
            "augment=heavy_customrot",
            "datamodule=rsna",
            f"datamodule.data_dir={rsna_dir}",
            "datamodule.image_size=64",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'c'}",
            f"out={tmp_path / 'grid.png'}",
            "rows=2",
            "cols=3",
        ]
    )
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 50, "boxes are drawn in red"


def test_grid_of_a_classification_set(ped_cxr_dir, tmp_path):
    out = tmp_path / "g.png"
    main(
        [
            "augment=paper_da",
            f"datamodule.data_dir={ped_cxr_dir}",
            "datamodule.image_size=48",
            "datamodule.num_workers=0",
            f"datamodule.cache_dir={tmp_path / 'c'}",
            f"out={tmp_path / 'g.png'}",
            "rows=1",
            "cols=2",
        ]
    )
    width, height = Image.open(out).size
    assert width > 2 * height  # one row, three panels
