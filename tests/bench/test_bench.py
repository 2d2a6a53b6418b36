"""The bench machinery on tiny sizes: timing, model runs in and out of process, ratios, targets, report.

No timing assertions: these tests check that figures are produced, counted and reported correctly.
"""

import json
from pathlib import Path

import pytest
import torch

from cxr.bench import fed, models, plot, report, targets, timing
from cxr.bench.run import run, write
from cxr.bench.settings import Settings
from cxr.models import create_model
from cxr.models.profile import count_flops, count_params

TINY = {"widths": [4, 4], "hidden": 4, "head": "avgpool"}  # any input size


def test_time_runs_warms_up_then_times_each_repeat():
    calls, syncs = [], []
    times = timing.time_runs(lambda: calls.append(1), repeats=3, warmup=2, sync=lambda: syncs.append(1))
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)
    assert len(syncs) == 4  # once after the warm-up, once per timed run
    with pytest.raises(ValueError, match="repeats"):
        timing.time_runs(lambda: None, repeats=0)


def test_throughput_uses_the_median_run():
    out = timing.throughput(10, [1.0, 4.0, 2.0])
    assert out["images_per_s"] == 5.0 and out["median_s"] == 2.0 and out["images"] == 10


# Each way PeakRSS can read the peak is forced by pointing its /proc paths at a missing file, and skipped
# where this machine cannot provide it (CI's sandbox refuses the reset): "VmHWM reset" (the kernel's
# high-water mark, reset), "VmHWM" (the mark since exec), "ru_maxrss" (getrusage's lifetime peak).
NO_SUCH_FILE = Path("/nonexistent/cxr-test")


def _force(method: str, setattr) -> None:
    if method != "VmHWM reset":  # as where /proc/self/clear_refs is refused
        setattr(timing, "PROC_CLEAR_REFS", NO_SUCH_FILE)
    if method == "ru_maxrss":  # as without /proc
        setattr(timing, "PROC_STATUS", NO_SUCH_FILE)


PEAK_PROBE = """
import sys

import torch

from cxr.bench import timing
from tests.bench.test_bench import _force

_force(sys.argv[1], setattr)
peak = timing.PeakRSS()
# 1 GiB, written, so resident: far above the import-time peak, so a new high and an exact reading
block = torch.ones(2**30 // 4)
status = timing.PeakRSS._status()
tracked = status.get("VmHWM", 0.0) + 1 >= status.get("VmRSS", 0.0)  # a mark that keeps up with the memory
print(peak.method, peak.growth(), peak.exact, tracked)
"""


@pytest.mark.parametrize("method", ["VmHWM reset", "VmHWM"])
def test_peak_rss_sees_a_new_allocation_in_a_fresh_process(method):
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, method], capture_output=True, text=True, check=True, cwd=root
    ).stdout.rsplit(maxsplit=3)
    if out[0] != method:
        pytest.skip(f"{method} is not available here (got {out[0]})")
    if out[3] != "True":
        pytest.skip("this kernel's VmHWM stays below the resident memory")
    assert out[2] == "True" and 1000 <= float(out[1]) < 1100


@pytest.mark.parametrize("method", ["VmHWM reset", "VmHWM", "ru_maxrss"])
def test_peak_rss_sees_an_allocation_under_an_earlier_higher_peak(method, monkeypatch):
    earlier = torch.ones(512 * 2**20 // 4)  # 512 MiB: a high above what follows
    del earlier
    status = timing.PeakRSS._status()
    if "VmRSS" not in status:
        pytest.skip("needs VmRSS in /proc/self/status")
    kept = {"VmHWM": status.get("VmHWM", 0.0), "ru_maxrss": timing.PeakRSS._maxrss()}.get(method)
    if kept is not None and kept < status["VmRSS"] + 400:
        pytest.skip(f"{method} does not keep the earlier peak here")
    _force(method, monkeypatch.setattr)
    peak = timing.PeakRSS()
    if peak.method != method:
        pytest.skip(f"{method} is not available here (got {peak.method})")
    block = torch.ones(128 * 2**20 // 4)
    growth = peak.growth()
    if method == "VmHWM reset":
        assert peak.exact and 120 <= growth < 200
    elif method == "VmHWM":  # hidden: the resident memory now is the lower bound
        assert not peak.exact and 120 <= growth < 200
    else:  # getrusage alone cannot see below an earlier peak: no growth, flagged
        assert not peak.exact and growth == 0
    del block


def test_peak_rss_without_a_high_water_mark_uses_getrusage_and_the_resident_memory(tmp_path, monkeypatch):
    status = tmp_path / "status"  # as some sandboxes write it: the resident memory, no high-water mark
    status.write_text("Name:\tpython\nVmSize:\t 4096000 kB\nVmRSS:\t  512000 kB\n")
    monkeypatch.setattr(timing, "PROC_STATUS", status)
    monkeypatch.setattr(timing.PeakRSS, "_maxrss", staticmethod(lambda: 2000.0))  # an earlier 2 GB peak
    peak = timing.PeakRSS()
    assert (peak.method, peak.has_rss, peak.has_hwm, peak.start) == ("ru_maxrss", True, False, 500.0)
    status.write_text("VmRSS:\t  614400 kB\n")  # 100 MB more resident, still under the earlier peak
    assert peak.growth() == 100.0 and not peak.exact


def test_placement_puts_model_and_batches_in_its_format_and_precision():
    cpu = timing.Placement()
    assert (cpu.device, cpu.bf16, cpu.channels_last, cpu.cuda) == ("cpu", False, False, False)
    cpu.sync()  # nothing to wait for on the CPU
    on = timing.Placement("cpu", bf16=True, channels_last=True)
    model = on.place(create_model("plain_cnn", **TINY))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = on.inputs(torch.randn(2, 1, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.float32
    linear = torch.nn.Linear(3, 2)
    with on.autocast():
        assert linear(torch.randn(1, 3)).dtype == torch.bfloat16
    with cpu.autocast():
        assert linear(torch.randn(1, 3)).dtype == torch.float32


def test_train_step_takes_one_optimiser_step_on_the_training_loss():
    torch.manual_seed(0)
    model = create_model("plain_cnn", **TINY).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, batch = torch.randn(4, 1, 16, 16), {"label": torch.tensor([0, 1, 0, 1])}
    before = [p.detach().clone() for p in model.parameters()]
    models.train_step(model, optimizer, x, batch, timing.Placement())
    grads = [p.grad.clone() for p in model.parameters()]
    for b, p, g in zip(before, model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)  # plain SGD: w <- w - lr * d(loss)/dw
    assert any(g.abs().sum() > 0 for g in grads)


def test_bench_fed_trains_from_a_loader_and_reports_its_placement():
    dataset = [{"image": torch.randn(1, 16, 16), "label": i % 2} for i in range(4)]
    on = timing.Placement("cpu", channels_last=True)
    row = fed.bench_fed("plain_cnn", TINY, dataset, None, workers=0, batch_size=2, steps=3, on=on)
    assert (row["device"], row["bf16"], row["channels_last"]) == ("cpu", False, True)
    assert (row["steps"], row["batch_size"], row["gpu_util"]) == (3, 2, None)
    assert row["images_per_s"] > 0 and 0 < row["busy"] <= 1
    assert row["busy"] == pytest.approx(row["busy_s"] / (row["busy_s"] + row["wait_s"]))


@pytest.mark.parametrize("name", ["depthwise_cnn", "plain_cnn"])
def test_bench_model_counts_and_times_both_phases(name):
    infer = models.bench_model(name, TINY, image_size=16, phase="infer", batches=(1, 3), repeats=2)
    model = create_model(name, **TINY)
    assert infer["params"] == count_params(model)
    assert infer["flops"] == count_flops(model, (1, 1, 16, 16)) > 0
    assert set(infer["infer"]) == {"1", "3"} and infer["infer"]["3"]["images"] == 3
    assert all(r["images_per_s"] > 0 for r in infer["infer"].values())
    assert [len(infer["infer"][b]["runs_s"]) for b in ("1", "3")] == [6, 2]  # single images: 3× the repeats
    train = models.bench_model(name, TINY, image_size=16, phase="train", batches=(4,), repeats=1)
    assert train["train"]["batch_size"] == 4 and train["train"]["images_per_s"] > 0
    assert train["peak_mem_mb"] >= 0 and isinstance(train["peak_mem_exact"], bool)
    with pytest.raises(ValueError, match="phase"):
        models.bench_model(name, TINY, image_size=16, phase="fit")


@pytest.mark.slow  # builds and back-propagates a RetinaNet: ~10 s on a busy 2-core machine
def test_detection_training_loss_has_gradients_for_empty_and_boxed_images():
    model = create_model("retinanet", encoder="resnet18", image_size=64).train()
    batch = models.fake_targets("detection", 2, 64, torch.Generator().manual_seed(0))
    assert [len(b) for b in batch["boxes"]] == [1, 0]  # a negative image too, as in RSNA
    loss = models.training_loss(model, torch.randn(2, 1, 64, 64), batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.ndim == 0
    assert model.backbone.fpn.layer_blocks[0][0].weight.grad is not None


@pytest.mark.slow  # two fresh Python processes importing torch
def test_run_child_returns_figures_or_the_error():
    spec = {
        "name": "depthwise_cnn",
        "kwargs": TINY,
        "image_size": 16,
        "phase": "infer",
        "batches": [2],
        "repeats": 1,
    }
    res = models.run_child(spec, timeout=120)
    assert res["params"] == count_params(create_model("depthwise_cnn", **TINY)) and "2" in res["infer"]
    bad = models.run_child({**spec, "name": "no_such_model"}, timeout=120)
    assert "unknown model 'no_such_model'" in bad["error"]


def _result(cached=1000.0, jpeg=100.0, dicom=250.0, loader2=300.0, plain_b32=10.0, dw_b32=25.0) -> dict:
    """A hand-made bench result: the ratios and targets below are computed from these numbers by hand."""
    pipe = [
        {"stage": "jpeg_decode", "size": 200, "images_per_s": jpeg},
        {"stage": "dicom_decode", "size": 200, "images_per_s": dicom},
        {"stage": "cached", "size": 200, "images_per_s": cached},
        {"stage": "loader", "size": 200, "workers": 2, "images_per_s": loader2},
    ]

    def row(model, flops, train, b32, optimised=False):
        out = {
            "model": model,
            "label": model,
            "device": "cpu",
            "bf16": False,
            "channels_last": optimised,
            "fold_bn": optimised,
            "compile": False,
            "image_size": 200,
            "params": 1000,
            "flops": flops,
            "train": {"batch_size": 16, "images_per_s": train},
            "infer": {"32": {"images_per_s": b32}},
            "peak_mem_mb": {"train": 100.0, "infer": 50.0},
        }
        if optimised:  # inference only
            del out["train"], out["peak_mem_mb"]["train"]
        return out

    return {
        "settings": {**vars(Settings()), "cls_size": 200, "det_size": 512},
        "machine": {
            "cpu": "Test CPU",
            "cpu_cores": 2,
            "usable_cores": 2,
            "torch": "2.x",
            "torch_threads": 2,
            "python": "3.11",
            "load_average_start": [1.0],
            "load_average_end": [1.5],
            "date": "today",
        },
        "elapsed_s": 1.0,
        "pipeline": pipe,
        "models": [
            row("plain_cnn", 600.0, 5.0, plain_b32),
            row("depthwise_cnn", 50.0, 15.0, dw_b32),
            row("plain_cnn", 600.0, None, 20.0, True),
            row("depthwise_cnn", 50.0, None, 70.0, True),
        ],
    }


def test_ratios_and_targets_are_computed_side_by_side():
    result = _result()
    result["ratios"] = targets.ratios(result)
    dvp = result["ratios"]["depthwise_vs_plain"]["cpu fp32"]
    assert dvp["flops_fraction"] == pytest.approx(1 / 12) and dvp["train_speedup"] == pytest.approx(3.0)
    assert dvp["infer_b32_speedup"] == pytest.approx(2.5)
    assert result["ratios"]["cached_vs_decode"]["200"]["dicom_decode"] == pytest.approx(4.0)
    assert result["ratios"]["loader2_vs_train_cpu"] == {"plain_cnn": 60.0, "depthwise_cnn": 20.0}
    met = [t["met"] for t in targets.targets(result)]
    # cached ≥ 5× decoding: no (DICOM only 4×, JPEG 10×); loader outpaces training: yes; depthwise FLOPs ≤ 1/6:
    # yes; depthwise ≥ 3× inference: no in eager mode (2.5×), yes with channels_last + folded BN (3.5×);
    # GPU busy: not measured without a GPU
    assert met == [False, True, True, False, True, None]
    assert (
        result["ratios"]["depthwise_vs_plain"]["cpu fp32 + channels_last + BN folded"]["infer_b32_speedup"]
        == 3.5
    )


def test_markdown_report_states_machine_targets_and_misses():
    result = _result(dw_b32=40.0)
    result["ratios"] = targets.ratios(result)
    result["targets"] = targets.targets(result)
    text = report.markdown(result)
    assert "Test CPU" in text and "none found" in text  # machine and the missing GPU are stated
    assert "| depthwise_cnn ≥ 3× plain_cnn's CPU inference throughput" in text and "batch 32: 4.00×" in text
    assert "**no**" in text  # the cached-vs-DICOM target is missed
    assert "| plain_cnn | cpu fp32 (Test CPU) | 200 | 0.00 | 0.00 | 5 (b16) | 10 | 100 | 50 |" in text
    result["models"][0]["peak_mem_lower_bound"] = ["infer"]  # hidden under the import-time peak
    text = report.markdown(result)
    assert "| plain_cnn | cpu fp32 (Test CPU) | 200 | 0.00 | 0.00 | 5 (b16) | 10 | 100 | ≥ 50 |" in text


def _gpu_result() -> dict:
    """:func:`_result` as a CUDA machine's run would extend it: fp32 and bf16 + channels_last CUDA rows
    beside the CPU ones, and fed runs on the GPU with NVML utilisation."""
    result = _result()
    result["settings"]["gpu"] = True
    result["machine"] |= {"gpu": "Test GPU", "cuda": "13.0"}
    for bf16 in (False, True):
        for model, plain in (("plain_cnn", True), ("depthwise_cnn", False)):
            speed = (2.0 if bf16 else 1.0) * (1000.0 if plain else 1500.0)
            result["models"].append(
                {
                    "model": model,
                    "label": model,
                    "device": "cuda",
                    "bf16": bf16,
                    "channels_last": bf16,
                    "fold_bn": False,
                    "compile": False,
                    "image_size": 200,
                    "params": 1000,
                    "flops": 600.0 if plain else 50.0,
                    "train": {"batch_size": 64, "images_per_s": speed},
                    "infer": {"32": {"images_per_s": 4 * speed}},
                    "peak_mem_mb": {"train": 900.0, "infer": 300.0},
                    "memory": "cuda_max_allocated",
                }
            )
    result["fed"] = [
        {
            "model": m,
            "label": m,
            "device": "cuda",
            "bf16": True,
            "channels_last": True,
            "compile": False,
            "workers": 2,
            "batch_size": 64,
            "steps": 20,
            "images_per_s": 1800.0,
            "busy": busy,
            "wait_s": 0.1,
            "busy_s": 1.0,
            "gpu_util": util,
        }
        for m, busy, util in (("plain_cnn", 0.95, 97.0), ("depthwise_cnn", 0.8, None))
    ]
    return result


def test_model_settings_add_cuda_rows_only_with_a_gpu():
    from cxr.bench.targets import config_label

    def labels(settings: Settings) -> list[str]:
        return [config_label(c) for c in models.model_configs(settings)]

    cpu = ["cpu fp32", "cpu fp32 + channels_last + BN folded"]
    assert labels(Settings()) == labels(Settings(compile=True)) == cpu  # compile is for CUDA only
    assert labels(Settings(gpu=True)) == [*cpu, "cuda fp32", "cuda bf16 + channels_last"]
    assert labels(Settings(gpu=True, compile=True))[-1] == "cuda bf16 + channels_last + compile"


def test_gpu_result_is_reported_with_its_rows_ratios_and_busy_target():
    result = _gpu_result()
    result["ratios"] = targets.ratios(result)
    dvp = result["ratios"]["depthwise_vs_plain"]
    assert list(dvp) == [
        "cpu fp32",
        "cpu fp32 + channels_last + BN folded",
        "cuda fp32",
        "cuda bf16 + channels_last",
    ]
    assert dvp["cuda bf16 + channels_last"]["infer_b32_speedup"] == pytest.approx(1.5)
    result["targets"] = targets.targets(result)
    gpu_target = result["targets"][-1]
    # depthwise_cnn is busy 80% only: the GPU target is missed, and both runs are named
    assert gpu_target["met"] is False
    assert "plain_cnn (2 workers) busy 95%, NVML 97%" in gpu_target["measured"]
    assert "depthwise_cnn (2 workers) busy 80%" in gpu_target["measured"]
    text = report.markdown(result, figure="bench-gpu.png")
    assert "# cxr benchmark: gpu" in text and "GPU Test GPU (CUDA 13.0)" in text
    assert (
        "| plain_cnn | cuda bf16 + channels_last (Test GPU) | 200 | 0.00 | 0.00 | 2000 (b64) | 8000 | 900 | 300 |"
        in text
    )
    assert "| plain_cnn | cuda bf16 + channels_last | 2 | 64 | 1800 | 2000 | 95% | 97% |" in text
    assert "(bench-gpu.png)" in text
    fig = plot.draw(result)
    assert len(fig.axes[1].get_yticklabels()) == len(result["models"])
    # the CPU training steps are the loader's yardsticks; GPU rows are not drawn as lines
    assert sorted(line.get_xdata()[0] for line in fig.axes[0].get_lines()) == [5.0, 15.0]


def test_figure_draws_pipeline_against_training_steps_and_every_model_row():
    result = _result()
    fig = plot.draw(result)
    pipe_ax, model_ax = fig.axes
    assert pipe_ax.get_xscale() == model_ax.get_xscale() == "log"
    # one vertical line per CPU fp32 training step (not the folded, inference-only rows)
    assert sorted(line.get_xdata()[0] for line in pipe_ax.get_lines()) == [5.0, 15.0]
    # every measured pipeline stage is a bar of its images/s, per size
    widths = sorted(bar.get_width() for bar in pipe_ax.patches)
    assert widths == sorted(r["images_per_s"] for r in result["pipeline"])
    # models: a training bar per row that trained, an inference bar per row and batch
    labels = [t.get_text() for t in model_ax.get_yticklabels()]
    assert (
        labels[0] == "plain_cnn\ncpu fp32"
        and labels[-1] == "depthwise_cnn\ncpu fp32 + channels_last + BN folded"
    )
    assert len(model_ax.patches) == 2 + 4
    assert plot.draw({**result, "pipeline": [], "models": []}) is None


def test_quick_pipeline_and_metric_sections_write_json_and_markdown(tmp_path: Path):
    settings = Settings.quick_run(n_files=20, loader_images=(8, 8), workers=(0, 1), metric_images=50)
    result = run(settings, sections=["pipeline", "metric"])
    json_path, md_path, png_path = write(result, tmp_path)
    assert json_path.name == "bench-cpu-quick.json" and md_path.name == "bench-cpu-quick.md"
    assert (
        png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(bench-cpu-quick.png)" in md_path.read_text()
    )
    saved = json.loads(json_path.read_text())
    stages = {(r["stage"], r["size"], r.get("workers")) for r in saved["pipeline"]}
    for size in (64, 128):
        assert {
            ("jpeg_decode", size, None),
            ("dicom_decode", size, None),
            ("cached", size, None),
            ("loader", size, 0),
            ("loader", size, 1),
        } <= stages
    assert all(r["images_per_s"] > 0 for r in saved["pipeline"])
    assert saved["metric"]["n_images"] == 50 and saved["metric"]["abs_diff"] < 1e-9
    assert saved["machine"]["usable_cores"] >= 1 and "Input pipeline" in md_path.read_text()
