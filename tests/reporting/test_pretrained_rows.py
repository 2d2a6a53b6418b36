"""Rows that start from the encoder's ImageNet weights (``pretrained_encoder: true``, the resolution
table's third row): planned with the local file the user names, or not run (a gap whose caption says
how to run it) when none is given; never trained from scratch under a pretrained label."""

from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate

from cxr.config.compose import compose
from cxr.reporting.reproduce.outputs import write_outputs
from cxr.reporting.reproduce.plan import ENCODER_WEIGHTS_ENV, plan, sweep_commands
from cxr.reporting.reproduce.profiles import PROFILES
from cxr.reporting.tables import load_table, table_by_name

TABLE = table_by_name("gabruseva2020_resolution")
SCRATCH, SCRATCH_256, PRETRAINED = (r.label for r in TABLE.rows)
SMOKE = PROFILES["smoke"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A state dict of the smoke profile's stand-in encoder, timm's ``test_resnet``, with RGB input."""
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    path = tmp_path_factory.mktemp("weights") / "test resnet,imagenet.pth"  # a space and a comma
    torch.save(state, path)
    return path, state


def _by_row(jobs):
    return {row: [j for j in jobs if j.row == row] for row in (SCRATCH, SCRATCH_256, PRETRAINED)}


def test_the_table_has_from_scratch_rows_and_one_pretrained_row():
    assert [r.pretrained_encoder for r in TABLE.rows] == [False, False, True]
    for row in TABLE.rows[:2]:
        assert "model.pretrained_path=null" in row.overrides


def test_without_weights_the_pretrained_row_is_planned_but_not_run(tmp_path):
    rows = _by_row(plan([TABLE], SMOKE, tmp_path, None))
    assert all(j.run_id and not j.skip for j in rows[SCRATCH] + rows[SCRATCH_256])
    assert len(rows[PRETRAINED]) == len(SMOKE.folds)
    for job in rows[PRETRAINED]:
        assert job.run_id == ""
        assert (
            "test_resnet" in job.skip and ENCODER_WEIGHTS_ENV in job.skip and "--encoder-weights" in job.skip
        )
    commands = sweep_commands(TABLE, [j for r in rows.values() for j in r])
    assert len(commands) == 2 and all("model.pretrained_path=null" in c for c in commands)


def test_a_pretrained_path_for_every_job_does_not_reach_the_from_scratch_rows(tmp_path, weights):
    path, _ = weights
    extra = [f"model.pretrained_path='{path}'"]
    rows = _by_row(plan([TABLE], SMOKE, tmp_path, None, extra))
    plain = _by_row(plan([TABLE], SMOKE, tmp_path, None))
    assert [j.run_id for j in rows[SCRATCH]] == [j.run_id for j in plain[SCRATCH]]
    cfg = compose(rows[PRETRAINED][0].overrides(TABLE.replicate_key))
    assert cfg.model.pretrained_path == str(path)  # the extra override serves as the row's weights


def test_with_weights_the_row_runs_from_them_under_its_own_run_id(tmp_path, weights):
    path, state = weights
    rows = _by_row(plan([TABLE], SMOKE, tmp_path, None, encoder_weights=path))
    pretrained, scratch = rows[PRETRAINED], rows[SCRATCH]
    assert all(j.run_id and not j.skip for j in pretrained)
    # the rows differ only in pretrained_path: different runs, fold by fold
    assert {j.run_id for j in pretrained}.isdisjoint(j.run_id for j in scratch)
    assert len({j.run_id for j in pretrained}) == len(SMOKE.folds)
    # the multirun that trains the row carries the resolved path, quoted for Hydra
    commands = sweep_commands(TABLE, [j for r in rows.values() for j in r])
    with_path = [c for c in commands if f"model.pretrained_path='{path.resolve()}'" in c]
    assert len(with_path) == 1 and "augment=heavy_customrot" in with_path[0]
    # and the model that job builds starts from the file's weights (the stem summed to one channel)
    cfg = compose(pretrained[0].overrides(TABLE.replicate_key))
    assert cfg.model.encoder == "test_resnet" and cfg.model.pretrained_path == str(path.resolve())
    loaded = instantiate(cfg.model, _convert_="all").backbone.encoder.state_dict()
    stem = "conv1.0.weight"  # test_resnet's first conv (pretrained_cfg["first_conv"]), RGB -> 1 channel
    assert torch.allclose(loaded.pop(stem), state[stem].sum(dim=1, keepdim=True))
    assert len(loaded) > 80
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_two_weight_files_give_two_run_ids(tmp_path, weights):
    path, state = weights
    other = tmp_path / "other.pth"
    torch.save(state, other)
    first = {
        j.run_id for j in plan([TABLE], SMOKE, tmp_path, None, encoder_weights=path) if j.row == PRETRAINED
    }
    second = {
        j.run_id for j in plan([TABLE], SMOKE, tmp_path, None, encoder_weights=other) if j.row == PRETRAINED
    }
    assert first.isdisjoint(second)


def test_weights_of_another_encoder_or_a_missing_file_fail_before_training(tmp_path):
    wrong = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"for test_resnet .*resnet18\.pth: .*unknown to the model"):
        plan([TABLE], SMOKE, tmp_path, None, encoder_weights=wrong)
    with pytest.raises(ValueError, match=r"for test_resnet .*nowhere\.pth"):
        plan([TABLE], SMOKE, tmp_path, None, encoder_weights=tmp_path / "nowhere.pth")


def test_the_table_shows_the_missing_row_as_a_gap_and_says_how_to_run_it(tmp_path):
    jobs = plan([TABLE], SMOKE, tmp_path / "data", None)
    write_outputs([TABLE], jobs, SMOKE, tmp_path / "out", tmp_path / "data", "make reproduce-tables", None)
    text = (tmp_path / "out" / f"{TABLE.name}.md").read_text()
    caption, table = text.split("\n\n", 1)
    assert f"| {PRETRAINED} | 0/{len(SMOKE.folds)} | — |" in table
    assert f"| {SCRATCH} | 0/{len(SMOKE.folds)} | — |" in table  # nothing ran at all here
    assert f"Row “{PRETRAINED}”: not run" in caption and f"{ENCODER_WEIGHTS_ENV}=FILE" in caption
    assert "timm state dict of test_resnet" in caption
    index = (tmp_path / "out" / "index.csv").read_text()
    assert index.count(",not run") == len(SMOKE.folds)


def test_the_caption_names_the_weight_file_and_its_hash(tmp_path, weights):
    import hashlib

    path, _ = weights
    jobs = plan([TABLE], SMOKE, tmp_path / "data", None, encoder_weights=path)
    write_outputs([TABLE], jobs, SMOKE, tmp_path / "out", tmp_path / "data", "make reproduce-tables", None)
    caption = (tmp_path / "out" / f"{TABLE.name}.md").read_text().split("\n\n", 1)[0]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert f"Row “{PRETRAINED}”: encoder weights `{path.resolve()}` (SHA-256 {digest}…)" in caption
    assert "not run" not in caption


def test_cli_takes_the_weights_from_the_environment(tmp_path, weights, monkeypatch, capsys):
    from cxr.cli.reproduce import main

    path, _ = weights
    args = ["--dry-run", "--tables", TABLE.name, "--data-root", str(tmp_path), "--out", str(tmp_path / "out")]
    main(args)
    assert f"{PRETRAINED}: not run" in capsys.readouterr().out
    monkeypatch.setenv(ENCODER_WEIGHTS_ENV, str(path))
    main(args)
    out = capsys.readouterr().out
    assert "not run" not in out and f"model.pretrained_path='{path.resolve()}'" in out


def test_a_row_key_with_a_typo_is_one_error_naming_the_file(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(
        "title: T\nexperiment: gabruseva2020\ntask: detection\nmetrics: [best_rsna_map]\n"
        "rows:\n  - {label: a, overrides: [], pretrained_encodr: true}\n"
    )
    with pytest.raises(ValueError, match=r"t\.yaml: row 'a' has unknown keys \['pretrained_encodr'\]"):
        load_table(bad)


def test_smoke_runs_the_256_px_row_at_half_its_own_size(tmp_path):
    """The paper halves 512 px; the smoke profile runs 96 px, so its 256 px row runs 48 px, not 256."""
    sizes = {}
    for job in plan([TABLE], SMOKE, tmp_path, None):
        if job.replicate == "0":
            sizes[job.row] = compose(job.overrides(TABLE.replicate_key)).datamodule.image_size
    assert sizes == {SCRATCH: 96, SCRATCH_256: 48, PRETRAINED: 96}
    paper = {j.row: j for j in plan([TABLE], PROFILES["paper"], tmp_path, None)}
    assert compose(paper[SCRATCH_256].overrides(TABLE.replicate_key)).datamodule.image_size == 256
