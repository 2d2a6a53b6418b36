"""Augmentation sets (conf/augment) and the 8-point box rotation."""

import albumentations as A
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr.config.compose import CONFIG_DIR, build_augment, compose
from cxr.data.rotation import RotateBoxes8, edge_points, rotate_boxes_8pt
from cxr.data.transforms import RadiographTransform

SETS = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))


def _augment(name: str, *overrides: str) -> list:
    return build_augment(compose([f"augment={name}", *overrides]).augment)


def test_all_sets_of_both_papers_are_there():
    assert {"none", "paper_da", "light", "heavy", "heavy_norot", "heavy_customrot"} <= set(SETS)


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("shape", [(37, 51), (101, 77)])
@pytest.mark.parametrize("n_boxes", [0, 1, 4])
def test_every_set_runs_on_odd_grey_images_and_keeps_boxes_inside(name, shape, n_boxes):
    rng = np.random.default_rng(0)
    transform = RadiographTransform(_augment(name))
    h, w = shape
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x1 = rng.uniform(0, w / 2, n_boxes)
    y1 = rng.uniform(0, h / 2, n_boxes)
    boxes = np.stack([x1, y1, x1 + rng.uniform(4, w / 2, n_boxes), y1 + rng.uniform(4, h / 2, n_boxes)], 1)
    for _ in range(5):
        tensor, out = transform(image, boxes)
        assert tensor.shape == (1, h, w) and tensor.dtype.is_floating_point
        assert out.shape[1] == 4 and len(out) <= n_boxes
        assert (out[:, 0] >= 0).all() and (out[:, 1] >= 0).all()
        assert (out[:, 2] <= w).all() and (out[:, 3] <= h).all()
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()


def test_rotation_free_sets_have_no_rotation():
    norot = _augment("heavy_norot")
    assert not any(isinstance(t, A.Rotate) for t in norot)
    assert any(isinstance(t, RotateBoxes8) for t in _augment("heavy_customrot"))
    assert sum(isinstance(t, A.Rotate) for t in _augment("heavy")) == 1


def test_configured_values_are_really_in_effect():
    noise = next(
        t for t in _augment("heavy", "augment.gauss_noise.std_range=[0.1,0.2]") if isinstance(t, A.GaussNoise)
    )
    assert tuple(noise.std_range) == (0.1, 0.2)
    rotate = next(t for t in _augment("light", "augment.rotate.limit=[-3,3]") if isinstance(t, A.Rotate))
    assert tuple(rotate.limit) == (-3, 3)
    affine = next(t for t in _augment("paper_da") if isinstance(t, A.Affine))
    assert affine.rotate == (-90.0, 90.0) and affine.scale == {"x": (0.8, 1.2), "y": (0.8, 1.2)}


def test_albumentations_1x_argument_names_are_an_error():
    with pytest.raises(ValueError, match="var_limit"):
        build_augment({"noise": {"_target_": "albumentations.GaussNoise", "var_limit": [10.0, 50.0]}})


def test_a_transform_can_be_dropped_from_the_command_line():
    assert not any(isinstance(t, A.HorizontalFlip) for t in _augment("heavy", "augment.hflip=null"))


def test_horizontal_flip_maps_coordinates_exactly():
    transform = RadiographTransform([A.HorizontalFlip(p=1.0)])
    image = np.zeros((30, 50), np.uint8)
    image[:, :5] = 200
    tensor, boxes = transform(image, np.array([[2.0, 3.0, 12.0, 20.0]]))
    np.testing.assert_allclose(boxes, [[50 - 12.0, 3.0, 50 - 2.0, 20.0]], atol=1e-4)
    assert tensor[0, 0, -1] > tensor[0, 0, 0]


def test_rotation_by_zero_is_the_identity():
    transform = RadiographTransform([RotateBoxes8(limit=(0, 0), p=1.0)])
    image = np.random.default_rng(1).integers(0, 256, (41, 63), dtype=np.uint8)
    boxes = np.array([[3.0, 4.0, 20.0, 30.0], [30.0, 10.0, 60.0, 40.0]])
    tensor, out = transform(image, boxes)
    np.testing.assert_allclose(out, boxes, atol=1e-4)
    np.testing.assert_allclose(transform.denormalize(tensor)[0].numpy() * 255, image, atol=1e-3)


def test_edge_points_are_at_thirds_of_each_edge():
    pts = edge_points(np.array([[0.0, 0.0, 3.0, 6.0]]))[0]
    assert {tuple(p) for p in pts.round(6).tolist()} == {
        (1, 0),
        (1, 6),
        (0, 2),
        (3, 2),
        (2, 0),
        (2, 6),
        (0, 4),
        (3, 4),
    }


def _rotation(angle: float, cx: float, cy: float) -> np.ndarray:
    a = np.deg2rad(angle)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]])


@settings(max_examples=300, deadline=None)
@given(
    x1=st.floats(0, 400),
    y1=st.floats(0, 400),
    w=st.floats(1, 300),
    h=st.floats(1, 300),
    angle=st.floats(-180, 180),
)
def test_eight_point_box_lies_inside_corner_box_and_keeps_the_centre(x1, y1, w, h, angle):
    box = np.array([[x1, y1, x1 + w, y1 + h]])
    m = _rotation(angle, 256.0, 256.0)
    ours = rotate_boxes_8pt(box, m)[0]
    corners = np.array([[x1, y1], [x1 + w, y1], [x1, y1 + h], [x1 + w, y1 + h]]) @ m[:, :2].T + m[:, 2]
    corner_box = np.concatenate([corners.min(0), corners.max(0)])
    eps = 1e-6 * (1 + abs(corner_box).max())
    assert (ours[:2] >= corner_box[:2] - eps).all() and (ours[2:] <= corner_box[2:] + eps).all()
    centre = m[:, :2] @ np.array([x1 + w / 2, y1 + h / 2]) + m[:, 2]
    assert (ours[:2] <= centre + eps).all() and (centre <= ours[2:] + eps).all()


def test_eight_point_rotation_is_tighter_than_corners_at_45_degrees():
    box = np.array([[100.0, 100.0, 200.0, 200.0]])
    ours = rotate_boxes_8pt(box, _rotation(45, 150, 150))[0]
    # corners give a side of 100·√2 ≈ 141; the 8 points span x − y ∈ [−2/3, 2/3]·100, rotated: 400 / (3√2)
    np.testing.assert_allclose(ours[2:] - ours[:2], [400 / (3 * np.sqrt(2))] * 2, rtol=1e-9)


def test_augmentation_never_reaches_val_or_test(ped_cxr_dir, rsna_dir, tmp_path):
    from cxr.data.ped_cxr import PedChestXrayDataModule
    from cxr.data.rsna import RSNADataModule

    heavy = _augment("heavy")
    for dm in (
        PedChestXrayDataModule(ped_cxr_dir, image_size=32, augment=heavy, cache_dir=tmp_path),
        RSNADataModule(rsna_dir, image_size=32, augment=heavy, cache_dir=tmp_path),
    ):
        dm.setup("fit")
        dm.setup("test")
        assert dm.train_dataloader().dataset.transform.augment == heavy
        assert dm.val_dataloader().dataset.transform.augment == []
        assert dm.test_dataloader().dataset.transform.augment == []


def test_throughput_benchmark_measures_each_set():
    from cxr.bench.augment import measure

    assert measure("heavy_customrot", size=64, n=4) > 0
