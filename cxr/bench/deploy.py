"""The deployable CPU paths side by side: how much of a model's FLOP saving each one turns into speed.

For each classifier and path, at ``deploy_batch`` images of ``cls_size`` px on ``deploy_threads``
threads (PyTorch and ONNX Runtime alike), fp32:

- ``eager``: the network as trained, PyTorch eager, contiguous (NCHW);
- ``folded + channels_last``: BatchNorm folded into the convs, NHWC
  (:func:`cxr.inference.optimise.optimise_for_inference`, what ``cxr-predict --backend pytorch`` runs);
- ``onnxruntime``: the file ``cxr-export`` writes (:func:`cxr.inference.export.export_model`: the exact
  rewrites of :mod:`cxr.inference.onnx_form`) on the session ``cxr-predict`` uses
  (:class:`cxr.inference.onnx_member.OnnxClassifier`: one image per call).

Figures per row: images/s (median of at least ``deploy_repeats`` timed runs, and of as many as fit in
``deploy_seconds``, after a warm-up; the paths of both
models are timed in turns, run by run, so that a change in the machine's load hits both), images per
CPU-second × threads (``cpu_images_per_s``: the process's CPU time, which other processes on the
cores barely change; the target is judged on it), the model's
GFLOPs per image (what the network computes) and the GFLOPs the path executes (the rewrites skip some),
achieved GFLOP/s (executed FLOPs × images per CPU-second) and that as a fraction of this CPU's peak,
measured in the same run, also per CPU-second, as the best of several large fp32 matmuls on the same
threads, at the start and at the end (:func:`matmul_peak`). The section runs in a fresh process with
passive OpenMP threads (:func:`bench_deploy`), so that CPU time counts work, not spin-waiting. Rows are in model order, then path order. Every
path's logits are compared with eager PyTorch's (``max_abs_diff``).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import inspect
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cxr.bench.settings import Settings

log = logging.getLogger(__name__)

PATHS = ("eager", "folded + channels_last", "onnxruntime")


def _best_gflops(fn: Callable[[], object], n: int, repeats: int, threads: int) -> tuple[float, float]:
    """Best GFLOP/s of ``fn`` (2n³ FLOPs) by the wall clock and per CPU-second × ``threads``."""
    for _ in range(2):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - start)
    flops = 2 * n**3 / 1e9
    return flops / min(wall), flops * threads / max(min(cpu), 1e-9)


def _onnx_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> Callable[[], object] | None:
    """``a @ b`` on ONNX Runtime (MLAS's GEMM), or None without onnx/onnxruntime."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        from cxr.inference.onnx_member import make_session
    except ImportError:
        return None
    n = len(a)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        "matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime >= 1.18 reads (a newer onnx writes a newer default)
    with tempfile.TemporaryDirectory(prefix="cxr-bench-matmul-") as work:
        path = Path(work) / "matmul.onnx"
        onnx.save(model, str(path))
        session = make_session(path, threads)
    return lambda: session.run(None, {"A": a})


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict:
    """This CPU's fp32 peak as measured: the best GFLOP/s (2n³ FLOPs per product) of an ``n``×``n``
    matmul on PyTorch's current threads, by PyTorch's BLAS and by ONNX Runtime's GEMM with as many
    threads (the better of the two; either may fall well short of the hardware on a given CPU), by
    the wall clock (``gflops_per_s``) and per CPU-second × threads (``cpu_gflops_per_s``)."""
    threads = torch.get_num_threads()
    gen = np.random.default_rng(0)
    a, b = gen.standard_normal((n, n), dtype=np.float32), gen.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    by = {"pytorch": _best_gflops(lambda: ta @ tb, n, repeats, threads)}
    onnx_run = _onnx_matmul(a, b, threads)
    if onnx_run is not None:
        by["onnxruntime"] = _best_gflops(onnx_run, n, repeats, threads)
    return {
        "n": n,
        "gflops_per_s": max(w for w, _ in by.values()),
        "cpu_gflops_per_s": max(c for _, c in by.values()),
        "by": {k: round(c, 1) for k, (_, c) in by.items()},  # per CPU-second
        "threads": threads,
    }


def _runner(model: torch.nn.Module, path: str, images: torch.Tensor, work: Path, name: str):
    """``(run, logits, executed_flops)`` for one path: ``run()`` infers the batch once."""
    from cxr.inference.export import export_model
    from cxr.inference.onnx_form import deploy_form
    from cxr.inference.onnx_member import OnnxClassifier
    from cxr.inference.optimise import optimise_for_inference
    from cxr.models.profile import count_flops

    shape = (1, *images.shape[1:])
    if path == "eager":
        net, x = model, images
    elif path == "folded + channels_last":
        net = optimise_for_inference(copy.deepcopy(model))
        x = images.contiguous(memory_format=torch.channels_last)
    else:
        file = export_model(model, work / f"{name}.onnx", images[:2])
        classifier = OnnxClassifier(file, torch.get_num_threads())
        flops = count_flops(deploy_form(model, images[:2])[0], shape)

        def run_onnx():
            return classifier(images)

        return run_onnx, run_onnx(), flops

    def run_torch():
        with torch.inference_mode():
            return net(x)

    return run_torch, run_torch(), count_flops(net, shape)


def _time_in_turns(
    runs: dict[str, Callable], repeats: int, min_seconds: float = 0.0
) -> dict[str, tuple[list[float], list[float]]]:
    """One warm-up each, then rounds timing every run once per round: at least ``repeats`` rounds,
    and more while the rounds so far took under ``min_seconds`` of wall time (fast paths get many
    rounds, which evens out bursts of other load). Per run, the wall seconds and the process CPU
    seconds (all threads) of each round."""
    for run in runs.values():
        run()
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in runs}
    started, rounds = time.perf_counter(), 0
    while rounds < repeats or time.perf_counter() - started < min_seconds:
        for key, run in runs.items():
            start, cpu = time.perf_counter(), time.process_time()
            run()
            times[key][1].append(time.process_time() - cpu)
            times[key][0].append(time.perf_counter() - start)
        rounds += 1
    return times


def bench_deploy(s: Settings, timeout: float = 1800) -> dict:
    """:func:`measure_deploy` in a fresh process whose OpenMP threads sleep while idle
    (``OMP_WAIT_POLICY=PASSIVE``, read only when the OpenMP runtime starts), so that PyTorch's CPU
    time, like ONNX Runtime's, counts work only; ``{"error": ...}`` where the process fails."""
    code = (
        "import json, logging, sys; from cxr.bench.deploy import measure_deploy; "
        "from cxr.bench.settings import Settings; "
        "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s'); "
        "print(json.dumps(measure_deploy(Settings(**json.loads(sys.argv[1])))))"
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-c", code, json.dumps(dataclasses.asdict(s))]
    try:
        # stdout carries the result; the child's log and errors go where this process's go
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode} (its error is in the log above)"}
    return json.loads(lines[-1])


def measure_deploy(s: Settings) -> dict:
    """``{"peak", "threads", "batch", "image_size", "repeats", "rows"}``: one row per (model, path) as
    described in the module docstring; a path that fails has ``error`` instead of figures."""
    from cxr.models import MODELS, create_model
    from cxr.models.profile import count_flops

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(s.deploy_threads)
    try:
        peak = matmul_peak()
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(s.deploy_batch, 1, s.cls_size, s.cls_size, generator=gen)
        models, model_flops, reference = {}, {}, {}
        for name in s.deploy_models:
            torch.manual_seed(0)
            # models whose head is sized by the input (a Flatten head) are built for this size
            sized = "image_size" in inspect.signature(MODELS[name]).parameters
            models[name] = create_model(
                name, in_chans=1, **({"image_size": s.cls_size} if sized else {})
            ).eval()
            model_flops[name] = count_flops(models[name], (1, 1, s.cls_size, s.cls_size))
        rows = []
        with tempfile.TemporaryDirectory(prefix="cxr-bench-deploy-") as work:
            for path in PATHS:
                runs, found = {}, {}
                for name, model in models.items():
                    log.info("deploy: %s, %s ...", name, path)
                    try:
                        run, logits, flops = _runner(model, path, images, Path(work), name)
                    except Exception as err:  # one path failing must not lose the others' figures
                        log.warning("deploy %s %s failed: %s", name, path, err)
                        rows.append({"model": name, "path": path, "error": f"{type(err).__name__}: {err}"})
                        continue
                    if path == "eager":
                        reference[name] = logits
                    runs[name] = run
                    found[name] = (flops, float((logits - reference[name]).abs().max()))
                times = _time_in_turns(runs, s.deploy_repeats, s.deploy_seconds)
                for name, (runs_s, cpu_s) in times.items():
                    rate = s.deploy_batch / statistics.median(runs_s)
                    cpu_rate = s.deploy_batch * s.deploy_threads / statistics.median(cpu_s)
                    flops, diff = found[name]
                    rows.append(
                        {
                            "model": name,
                            "path": path,
                            "images_per_s": rate,
                            "cpu_images_per_s": cpu_rate,
                            "runs_s": [round(t, 6) for t in runs_s],
                            "cpu_s": [round(t, 6) for t in cpu_s],
                            "gflops": model_flops[name] / 1e9,
                            "gflops_run": flops / 1e9,
                            "achieved_gflops_per_s": flops * cpu_rate / 1e9,
                            "max_abs_diff": diff,
                        }
                    )
                del runs
                gc.collect()
        end_peak = matmul_peak()  # the best of both ends of the run: a busy machine lowers either
        if end_peak["cpu_gflops_per_s"] > peak["cpu_gflops_per_s"]:
            peak = end_peak
        for row in rows:
            if "achieved_gflops_per_s" in row:
                row["peak_fraction"] = row["achieved_gflops_per_s"] / peak["cpu_gflops_per_s"]
    finally:
        torch.set_num_threads(saved_threads)
    rows.sort(key=lambda r: (list(s.deploy_models).index(r["model"]), PATHS.index(r["path"])))
    return {
        "peak": peak,
        "threads": s.deploy_threads,
        "batch": s.deploy_batch,
        "image_size": s.cls_size,
        "repeats": s.deploy_repeats,
        "seconds": s.deploy_seconds,
        "rows": rows,
    }


def deploy_ratios(deploy: dict, key: str = "images_per_s") -> dict[str, float | None]:
    """depthwise_cnn ÷ plain_cnn images/s per path (None where either is missing); ``key``
    ``"cpu_images_per_s"`` gives the CPU-normalised ratio."""
    rate = {(r["model"], r["path"]): r.get(key) for r in deploy.get("rows", [])}
    out = {}
    for path in PATHS:
        dw, plain = rate.get(("depthwise_cnn", path)), rate.get(("plain_cnn", path))
        out[path] = dw / plain if dw and plain else None
    return out


# The target for the deployable path, and its stretch.
ONNX_SPEEDUP_TARGET = 4.0
ONNX_SPEEDUP_STRETCH = 6.0
ONNX_ATOL = 1e-4


def deploy_targets(deploy: dict) -> list[dict]:
    """The deploy target rows (same shape as :func:`cxr.bench.targets.targets`' rows). The speed target
    is judged on images per CPU-second (× threads): other processes on the cores lengthen the wall
    clock of either model's runs at random, not the CPU time of its work; the wall-clock ratio is
    shown beside it."""
    cpu = deploy_ratios(deploy, "cpu_images_per_s").get("onnxruntime")
    wall = deploy_ratios(deploy).get("onnxruntime")
    diffs = [r["max_abs_diff"] for r in deploy.get("rows", []) if "max_abs_diff" in r]
    setting = f"CPU fp32, {deploy.get('threads')} threads, batch {deploy.get('batch')}, {deploy.get('image_size')} px"
    measured = (
        "n/a"
        if cpu is None
        else f"{cpu:.2f}× per CPU-second ({'n/a' if wall is None else f'{wall:.2f}×'} wall clock)"
    )
    return [
        {
            "target": f"depthwise_cnn ≥ {ONNX_SPEEDUP_TARGET:.0f}× plain_cnn's images/s on ONNX Runtime "
            f"({setting}; stretch {ONNX_SPEEDUP_STRETCH:.0f}×)",
            "measured": measured,
            "met": None if cpu is None else cpu >= ONNX_SPEEDUP_TARGET,
        },
        {
            "target": f"every deployable path's logits equal eager PyTorch's within {ONNX_ATOL:g}",
            "measured": "n/a" if not diffs else f"largest difference {max(diffs):.1e}",
            "met": None if not diffs else max(diffs) <= ONNX_ATOL,
        },
    ]
