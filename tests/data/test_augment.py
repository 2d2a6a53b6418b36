"""Augmentation sets (conf/augment) and the 8-point box rotation."""

import albumentations as A
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr.config.compose import CONFIG_DIR, build_augment, compose
from cxr.data.gaussian_affine import GaussianAffine
from cxr.data.intensity import CoarseSaltAndPepper, GaussianGamma
from cxr.data.resumable import seed_augmentation
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


PAPER_SETS = ("light", "heavy", "heavy_norot", "heavy_customrot")
# what the authors' code (tatigabru/kaggle-rsna) draws; anything else must be off in the paper sets
AUTHORS_TRANSFORMS = (GaussianAffine, GaussianGamma, CoarseSaltAndPepper, A.GaussianBlur, A.GaussNoise)


def _affine(name: str, *overrides: str) -> GaussianAffine:
    (affine,) = [t for t in _augment(name, *overrides) if isinstance(t, GaussianAffine)]
    return affine


def _draws(transform, n: int, shape=(512, 512), seed: int = 0) -> list[dict]:
    transform.set_random_seed(seed)
    return [transform.get_params_dependent_on_data({"shape": shape}, {}) for _ in range(n)]


@pytest.mark.parametrize(("name", "sigma"), [("light", 5.0), ("heavy", 6.0), ("heavy_customrot", 6.0)])
def test_paper_sets_rotate_with_the_authors_gaussian_spread(name, sigma):
    """The authors draw angle ~ N(0, σ) for every image: σ of many draws, and mean |angle| = σ·√(2/π)
    (4.8° for heavy; a uniform ±6° at p 0.5 averaged 1.5°)."""
    angles = np.array([d["angle"] for d in _draws(_affine(name), 4000)])
    assert abs(angles.std() / sigma - 1) < 0.05
    assert abs(np.abs(angles).mean() / (sigma * np.sqrt(2 / np.pi)) - 1) < 0.05
    assert abs(angles.mean()) < 0.1 * sigma


def test_no_rotation_set_never_rotates_but_still_zooms_and_shears():
    draws = _draws(_affine("heavy_norot"), 500)
    assert all(d["angle"] == 0.0 for d in draws)
    assert np.std([d["shear"] for d in draws]) > 3.0
    assert np.std([np.log2(d["scale"][0]) for d in draws]) > 0.1


@pytest.mark.parametrize(("name", "scale_sigma", "shear_sigma"), [("light", 0.1, 2.5), ("heavy", 0.15, 4.0)])
def test_zoom_and_shear_have_the_authors_spread(name, scale_sigma, shear_sigma):
    draws = _draws(_affine(name), 4000)
    log_scales = np.log2([d["scale"] for d in draws])  # (n, 2): x and y drawn independently
    assert np.allclose(log_scales.std(axis=0) / scale_sigma, 1, atol=0.05)
    assert abs(np.corrcoef(log_scales.T)[0, 1]) < 0.05
    assert abs(np.std([d["shear"] for d in draws]) / shear_sigma - 1) < 0.05


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_shift_is_32_source_pixels_scaled_to_the_image(size):
    shifts = np.array([d["shift"] for d in _draws(_affine("heavy"), 2000, shape=(size, size))])
    limit = 32 * size / 1024
    assert np.abs(shifts).max() <= limit and np.abs(shifts).max() > 0.95 * limit
    assert abs(shifts.std() / (limit / np.sqrt(3)) - 1) < 0.1  # uniform on ±limit


@pytest.mark.parametrize("name", PAPER_SETS)
def test_paper_sets_have_nothing_the_authors_code_lacks(name):
    """No perspective, brightness/contrast or uniform-range rotation; a horizontal flip only at p 0."""
    for t in _augment(name):
        if isinstance(t, A.HorizontalFlip):
            assert t.p == 0.0
        else:
            assert isinstance(t, AUTHORS_TRANSFORMS), type(t).__name__


@pytest.mark.parametrize("kind", [A.GaussianBlur, A.GaussNoise])
def test_heavy_sets_blur_and_add_noise_to_half_of_the_images(kind):
    (transform,) = [t for t in _augment("heavy") if isinstance(t, kind)]
    single = RadiographTransform([transform])
    seed_augmentation(single, 1)
    stripes = np.tile(np.repeat(np.array([0, 255], np.uint8), 4), (16, 2))
    applied = sum(
        not np.allclose(single.denormalize(single(stripes)[0])[0].numpy() * 255, stripes, atol=0.6)
        for _ in range(400)
    )
    # p = 0.5; a few draws with a near-zero sigma change nothing
    assert 0.38 < applied / 400 < 0.56


def test_custom_rotation_gives_tighter_boxes_than_corners():
    image = np.zeros((256, 256), np.uint8)
    boxes = np.array([[80.0, 60.0, 160.0, 200.0]])
    widths = {}
    for rule in ("corners", "thirds"):
        transform = RadiographTransform([GaussianAffine(rotate_sigma=6.0, box_points=rule)])
        seed_augmentation(transform, 3)
        widths[rule] = np.mean([np.diff(transform(image, boxes)[1][0, ::2]) for _ in range(50)])
    assert widths["thirds"] < widths["corners"]


def test_image_and_boxes_move_together():
    """A bright rectangle's pixels and its box go through the same warp (no rotation or shear: the
    hull of the corners is exact)."""
    image = np.zeros((128, 160), np.uint8)
    image[30:70, 50:110] = 255
    box = np.array([[50.0, 30.0, 110.0, 70.0]])
    transform = RadiographTransform([GaussianAffine(scale_sigma=0.3, shift_px=400, interpolation=0)])
    seed_augmentation(transform, 5)
    for _ in range(10):
        tensor, out = transform(image, box)
        bright = np.argwhere(transform.denormalize(tensor)[0].numpy() > 0.5)
        (y1, x1), (y2, x2) = bright.min(0), bright.max(0) + 1
        np.testing.assert_allclose(out[0], [x1, y1, x2, y2], atol=1.0)


def test_rotation_moves_image_and_boxes_the_same_way():
    """A small bright square away from the centre, rotated: its pixels' centre and its box's centre agree."""
    image = np.zeros((200, 200), np.uint8)
    image[40:60, 130:150] = 255
    box = np.array([[130.0, 40.0, 150.0, 60.0]])
    transform = RadiographTransform([GaussianAffine(rotate_sigma=20.0, shear_sigma=5.0, box_points="thirds")])
    seed_augmentation(transform, 7)
    for _ in range(10):
        tensor, out = transform(image, box)
        weights = transform.denormalize(tensor)[0].numpy()
        ys, xs = np.indices(weights.shape) + 0.5
        centre = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
        np.testing.assert_allclose((out[0, :2] + out[0, 2:]) / 2, centre, atol=0.5)


def test_gaussian_gamma_exponent_is_log2_normal():
    gamma = GaussianGamma(sigma=0.25)
    draws = np.log2([d["gamma"] for d in _draws(gamma, 4000)])
    assert abs(draws.std() / 0.25 - 1) < 0.05
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = gamma.apply(ramp, gamma=2.0)
    np.testing.assert_allclose(out, np.round(255 * (ramp / 255.0) ** 2), atol=0)
    np.testing.assert_array_equal(GaussianGamma(sigma=0.0).apply(ramp, gamma=1.0), ramp)


def test_coarse_salt_and_pepper_replaces_blobs_of_about_the_amount():
    sp = CoarseSaltAndPepper(amount=0.05, size_range=(0.1, 0.1), p=1.0)
    draws = _draws(sp, 50, shape=(200, 200))
    for d in draws:  # a 20×20 grid enlarged to 200×200: whole 10×10 blobs or nothing
        cells = d["salt_mask"].reshape(20, 10, 20, 10)
        assert np.array_equal(cells.all(axis=(1, 3)), cells.any(axis=(1, 3)))
    assert abs(np.mean([d["salt_mask"].mean() for d in draws]) / 0.05 - 1) < 0.2
    values = np.concatenate([d["values"] for d in draws])
    assert (values < 64).mean() > 0.3 and (values > 191).mean() > 0.3  # mostly salt or pepper
    image = np.full((200, 200), 128, np.uint8)
    out = sp.apply(image, **draws[0])
    mask = draws[0]["salt_mask"]
    assert (out[~mask] == 128).all() and np.array_equal(out[mask], draws[0]["values"])


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
