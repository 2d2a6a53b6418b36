"""cxr-predict and cxr-tune: checkpoints built by hand (fast) and by cxr-train (the real path)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from cxr.cli.predict import main as predict
from cxr.inference.overlays import grad_cam, last_feature_conv
from cxr.inference.postprocess import PostprocessSettings
from cxr.inference.submission import read_submission
from cxr.models import create_model
from cxr.synth.phantom import chest_phantom
from cxr.tasks.checkpoint_format import FORMAT_VERSION

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*LeafSpec")

CLASSIFIER = {"widths": [8, 8, 8], "hidden": 8, "drop_rate": 0.0, "pool": "after", "head": "avgpool"}
DETECTOR = {
    "encoder": "test_resnet",
    "image_size": 64,
    "fpn_channels": 16,
    "small_anchors": False,
    "global_dropout": 0.0,
}


def save_checkpoint(path, model, name, kwargs, datamodule, task, hparams=None, extra_state=None, epoch=0):
    """A checkpoint as cxr-train writes it: weights under ``model.``, the ``cxr`` metadata, plain containers."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "state_dict": {**state, **(extra_state or {})},
            "epoch": epoch,
            "hyper_parameters": hparams or {},
            "cxr": {
                "format_version": FORMAT_VERSION,
                "model_name": name,
                "model_kwargs": kwargs,
                "datamodule": datamodule,
                "task": task,
            },
        },
        path,
    )
    return path


def classifier_checkpoint(path, threshold=0.5):
    torch.manual_seed(0)
    model = create_model("depthwise_cnn", **CLASSIFIER)
    return save_checkpoint(
        path,
        model,
        "depthwise_cnn",
        CLASSIFIER,
        {"image_size": 32, "mean": 0.449, "std": 0.226, "labels": "binary"},
        "ClassificationTask",
        hparams={"threshold": threshold},
    )


def detector_checkpoint(path, score_thresh=0.3):
    """An untrained RetinaNet whose box classifier says 0.5 everywhere, so it returns many boxes."""
    torch.manual_seed(0)
    model = create_model("retinanet", **DETECTOR)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.zero_()
    return save_checkpoint(
        path,
        model,
        "retinanet",
        {**DETECTOR, "score_thresh": 0.05, "nms_thresh": 0.5},
        {"image_size": 64, "mean": 0.449, "std": 0.226, "fold": 0},
        "DetectionTask",
        extra_state={"score_thresh": torch.tensor(score_thresh)},
    )


def write_images(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        h, w = 60 + 8 * i, 72
        paths.append(folder / f"img{i}.{'png' if i % 2 else 'jpeg'}")
        Image.fromarray(chest_phantom(rng, h, w, opacities=[(10, 10, 30, 40)] if i else ())).save(paths[-1])
    return paths


def test_predict_on_a_folder_with_one_corrupt_file(tmp_path, caplog):
    ckpt = classifier_checkpoint(tmp_path / "clf.ckpt")
    images = write_images(tmp_path / "in")
    (tmp_path / "in" / "corrupt.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    predict(
        ["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--overlays"]
    )
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["file", "probability", "label", "class", "error"]
    assert len(table) == 4
    bad = table[table["file"].str.endswith("corrupt.jpeg")].iloc[0]
    assert "corrupt.jpeg" in bad["error"] and bad["probability"] == ""
    good = table[table["error"] == ""]
    assert sorted(good["file"]) == sorted(map(str, images))
    probs = good["probability"].astype(float)
    assert ((probs >= 0) & (probs <= 1)).all()
    assert (good["label"].astype(int) == (probs >= 0.5)).all()
    assert set(good["class"]) <= {"normal", "pneumonia"}
    assert "ignored 1 file(s)" in caplog.text and "1 of 4 file(s) could not be read" in caplog.text
    pngs = sorted((tmp_path / "out" / "overlays").glob("*.png"))
    assert [p.stem for p in pngs] == ["img0", "img1", "img2"]
    with Image.open(pngs[0]) as picture:
        assert picture.mode == "RGB" and picture.size == (72, 60)  # the radiograph's own size, in colour


def test_three_class_classifier_gives_class_probabilities(tmp_path):
    torch.manual_seed(0)
    kwargs = {**CLASSIFIER, "num_classes": 3}
    ckpt = save_checkpoint(
        tmp_path / "c3.ckpt",
        create_model("depthwise_cnn", **kwargs),
        "depthwise_cnn",
        kwargs,
        {"image_size": 32, "labels": "three_class"},
        "ClassificationTask",
        {"threshold": 0.5},
    )
    write_images(tmp_path / "in")
    predict(
        [
            "--ckpt",
            str(ckpt),
            "--input",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "out"),
            "--threshold",
            "0",
        ]
    )
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    probs = table[["prob_normal", "prob_bacterial", "prob_viral"]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.allclose(table["probability"], 1 - probs[:, 0], atol=1e-5)
    # every image is called pneumonia at threshold 0; its class is the likelier kind
    assert (table["class"] == np.where(probs[:, 1] >= probs[:, 2], "bacterial", "viral")).all()


def test_postprocess_json_beside_the_checkpoint_is_used_and_the_command_line_wins(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = classifier_checkpoint(run / "checkpoints" / "clf.ckpt", threshold=0.5)
    write_images(tmp_path / "in")
    PostprocessSettings("classification", decision_threshold=0.0).save(run, checkpoints=[ckpt])
    predict(["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "a")])
    assert (pd.read_csv(tmp_path / "a" / "predictions.csv")["label"] == 1).all()
    assert json.loads((tmp_path / "a" / "settings.json").read_text())["source"] == str(
        run / "postprocess.json"
    )
    predict(
        [
            "--ckpt",
            str(ckpt),
            "--input",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "b"),
            "--threshold",
            "1",
        ]
    )
    assert (pd.read_csv(tmp_path / "b" / "predictions.csv")["label"] == 0).all()
    predict(
        [
            "--ckpt",
            str(ckpt),
            "--input",
            str(tmp_path / "in"),
            "--out",
            str(tmp_path / "c"),
            "--postprocess",
            "none",
        ]
    )
    c = pd.read_csv(tmp_path / "c" / "predictions.csv")
    assert (c["label"] == (c["probability"] >= 0.5)).all()  # the checkpoint's own threshold


def test_postprocess_json_of_other_checkpoints_is_ignored_with_a_warning(tmp_path, caplog):
    """Issue 14 item 5: a postprocess.json in a common parent folder, tuned on another run, or on a
    checkpoint that has changed since, is not applied; settings.json says what was used and why."""
    for run in ("a", "b"):
        (tmp_path / "runs" / run).mkdir(parents=True)
    ckpt = classifier_checkpoint(tmp_path / "runs" / "b" / "clf.ckpt", threshold=0.5)
    other = classifier_checkpoint(tmp_path / "runs" / "a" / "clf.ckpt", threshold=0.5)
    write_images(tmp_path / "in")
    flip = PostprocessSettings("classification", decision_threshold=0.0)  # would call everything 1
    flip.save(tmp_path / "runs", checkpoints=[other])

    def labels(name, *extra):
        predict(["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--out", str(tmp_path / name), *extra])
        table = pd.read_csv(tmp_path / name / "predictions.csv")
        return table, json.loads((tmp_path / name / "settings.json").read_text())

    table, used = labels("other")
    assert (table["label"] == (table["probability"] >= 0.5)).all()  # the checkpoint's own threshold
    assert used["source"] == "checkpoints" and used["postprocess_file"]["used"] is False
    assert "tuned on other checkpoints (a/clf.ckpt)" in used["postprocess_file"]["reason"]
    assert "ignored, because it was tuned on other checkpoints" in caplog.text
    # tuned on this very file, which was then overwritten by another training: ignored too
    flip.save(tmp_path / "runs", checkpoints=[ckpt])
    classifier_checkpoint(ckpt, threshold=0.7)
    _, used = labels("changed")
    assert (
        used["postprocess_file"]["used"] is False
        and "b/clf.ckpt changed" in used["postprocess_file"]["reason"]
    )
    # a file without checkpoint names (hand-written, or from before they were recorded)
    flip.save(tmp_path / "runs")
    _, used = labels("unnamed")
    assert (
        used["postprocess_file"]["used"] is False
        and "names no checkpoints" in used["postprocess_file"]["reason"]
    )
    # named explicitly: used as asked, with a warning
    table, used = labels("explicit", "--postprocess", str(tmp_path / "runs" / "postprocess.json"))
    assert (table["label"] == 1).all() and used["postprocess_file"]["used"] is True
    assert "used as asked, although" in caplog.text


def _detect(tmp_path, name, ckpts, inputs, *extra):
    out = tmp_path / name
    predict(["--ckpt", *map(str, ckpts), "--input", *map(str, inputs), "--out", str(out), *extra])
    return pd.read_csv(out / "predictions.csv", keep_default_na=False), out


def test_detection_ensemble_of_two_identical_checkpoints_equals_one(tmp_path, rsna_dir):
    a = detector_checkpoint(tmp_path / "a.ckpt")
    b = shutil.copy(a, tmp_path / "b.ckpt")
    inputs = [rsna_dir / "stage_2_test_images", *write_images(tmp_path / "jpg", n=1)]
    one, _ = _detect(tmp_path, "one", [a], inputs, "--score", "0.45")
    two, out = _detect(tmp_path, "two", [a, b], inputs, "--score", "0.45")
    assert one["score"].astype(str).str.len().gt(0).sum() > 4  # boxes were found
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "one" / "submission.csv").read_text() == (out / "submission.csv").read_text()
    # members found everything at 0.5: the tuned threshold 0.3 of the checkpoint keeps it, score=0.6 none
    none, _ = _detect(tmp_path, "none", [a], inputs, "--score", "0.6")
    assert (none["score"] == "").all() and len(none) == 4


def test_submission_round_trips_the_predicted_boxes(tmp_path, rsna_dir):
    ckpt = detector_checkpoint(tmp_path / "a.ckpt")
    table, out = _detect(
        tmp_path, "out", [ckpt], [rsna_dir / "stage_2_test_images"], "--box-size", "percentile"
    )
    submission = read_submission(out / "submission.csv")
    assert sorted(submission) == sorted(p.stem for p in (rsna_dir / "stage_2_test_images").glob("*.dcm"))
    for file, rows in table.groupby("file"):
        rows = rows[rows["score"] != ""].astype({c: float for c in ("score", "x", "y", "width", "height")})
        got = submission[file.rsplit("/", 1)[-1].removesuffix(".dcm")]
        rows = rows.sort_values("score", ascending=False, kind="stable")
        assert np.allclose(got["scores"], rows["score"], atol=5e-5)
        xyxy = np.stack([rows.x, rows.y, rows.x + rows.width, rows.y + rows.height], 1)
        assert np.allclose(got["boxes"], xyxy, atol=0.11)
        assert ((xyxy >= 0) & (xyxy <= 256)).all()  # in the 256 px originals


def test_command_line_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        predict(["--help"])
    assert info.value.code == 0 and "usage: cxr-predict" in capsys.readouterr().out
    for argv, message in (
        (["--ckpt", "x"], "the following arguments are required: --input, --out"),
        (["--ckpt", "a", "--input", "b", "--out", "o", "--nsm", "0.5"], "unrecognized arguments: --nsm 0.5"),
        (["--ckpt", "a", "--input", "b", "--out", "o", "--box-size", "huge"], "invalid choice: 'huge'"),
    ):
        with pytest.raises(SystemExit) as info:
            predict(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit, match=r"no\.ckpt: no such checkpoint"):
        predict(["--ckpt", str(tmp_path / "no.ckpt"), "--input", ".", "--out", "o"])


class _BrightnessClassifier(nn.Module):
    """logit = mean(relu(conv(x))) with an identity conv; a head conv runs after pooling (as in MobileNetV3)."""

    num_classes = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.head_conv = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 1] = 1.0
            self.head_conv.weight.fill_(1.0)

    def forward_features(self, x):
        return torch.relu(self.conv(x))

    def forward(self, x):
        return self.head_conv(self.forward_features(x).mean(dim=(2, 3), keepdim=True)).flatten(1)


def test_grad_cam_points_at_the_evidence_and_uses_the_last_feature_conv():
    model = _BrightnessClassifier().eval()
    images = torch.zeros(2, 1, 32, 32)
    images[0, 0, 4:12, 4:12] = 1.0
    images[1, 0, 20:28, 16:30] = 1.0
    assert last_feature_conv(model, images[:1]) is model.conv
    cam = grad_cam(model, images, 0)
    assert cam.shape == (2, 32, 32) and cam.max() == pytest.approx(1.0)
    for heat, image in zip(cam, images[:, 0].numpy(), strict=True):
        assert heat[image > 0].min() > 0.99 and heat[image == 0].max() < 0.01


@pytest.mark.slow
def test_real_training_runs_tune_and_predict_as_an_ensemble(tmp_path, rsna_dir):
    from cxr.cli.train import run
    from cxr.cli.tune import main as tune
    from cxr.config.compose import compose

    for fold in (0, 1):
        run(
            compose(
                [
                    "datamodule=rsna",
                    "model=retinanet",
                    "task=detection",
                    f"datamodule.data_dir={rsna_dir}",
                    "datamodule.image_size=64",
                    "datamodule.batch_size=4",
                    "datamodule.num_workers=0",
                    f"datamodule.fold={fold}",
                    f"datamodule.cache_dir={tmp_path / 'cache'}",
                    "model.encoder=test_resnet",
                    "model.fpn_channels=16",
                    "trainer=cpu",
                    "trainer.max_epochs=1",
                    "+trainer.limit_train_batches=2",
                    "trainer.enable_progress_bar=false",
                    "test=false",
                ],
                output_dir=tmp_path / "sweep" / str(fold),
            )
        )
    ckpts = str(tmp_path / "sweep" / "*" / "checkpoints" / "epoch*.ckpt")
    tune(
        [
            *("--ckpt", ckpts),
            *("--data-dir", str(rsna_dir)),
            *("--cache-dir", str(tmp_path / "cache")),
            *("--nms", "0.3", "0.5"),
            *("--scores", "0.01", "0.05", "0.5"),
        ]
    )
    settings = PostprocessSettings.load(tmp_path / "sweep" / "postprocess.json")
    chosen = settings.chosen_on
    assert (
        chosen["images"] == 12 and len(chosen["checkpoints"]) == 2
    )  # two of the four folds' validation images
    sweep = pd.read_csv(tmp_path / "sweep" / "nms_sweep.csv")
    assert len(sweep) == 6 and sweep["rsna_map"].max() == pytest.approx(chosen["rsna_map"])
    assert (tmp_path / "sweep" / "nms_sweep.png").stat().st_size > 0
    predict(
        ["--ckpt", ckpts, "--input", str(rsna_dir / "stage_2_test_images"), "--out", str(tmp_path / "out")]
    )
    used = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert used["source"] == str(tmp_path / "sweep" / "postprocess.json")
    assert used["postprocess"]["nms_thresh"] == settings.nms_thresh
    assert len(read_submission(tmp_path / "out" / "submission.csv")) == 3
