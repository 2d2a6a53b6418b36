"""The depthwise ablation: how much of DepthwiseCNN's saving comes from separability, how much from pooling early.

The first DepthwiseCNN pooled before each separable stage, so its speed mixed two changes. The
variants here separate them: {standard conv, depthwise separable} x {pool after each conv block
(the paper), pool before it}, plus the paper's failed variant (only the first stage separable) and
MobileNetV2. Per variant, at ``image_size`` px on ``threads`` CPU threads, fp32, batch ``batch``:
parameters, GFLOPs per image (:func:`cxr.models.profile.count_flops`), the receptive field of the
convolutional stages, images/s in PyTorch eager (eval, no grad) and on ONNX Runtime (the model
exported with plain ``torch.onnx.export``; the optimised deploy path of :mod:`cxr.inference.export`
is measured by :mod:`cxr.bench.deploy`), and the largest difference between the two outputs.

    from cxr.bench.ablation import measure_variants, format_markdown
    print(format_markdown(measure_variants()))
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cxr.bench.timing import throughput, time_runs


@dataclass(frozen=True)
class Variant:
    """One network of the ablation: a registry name and its arguments, and what it varies."""

    label: str
    model: str
    kwargs: dict = field(default_factory=dict)
    conv: str = "standard"  # standard | separable | first separable | mobilenet
    pool: str = "after"  # after | before | n/a


# BN is on in every row that varies conv type or pool placement, so only those change between
# them; the first row is the paper's network (no BN), the BN cost is row 2 minus row 1.
VARIANTS: tuple[Variant, ...] = (
    Variant("plain CNN (paper: no BN)", "plain_cnn", {}, "standard", "after"),
    Variant("standard conv + BN, pool after", "plain_cnn", {"batch_norm": True}, "standard", "after"),
    Variant(
        "standard conv + BN, pool before",
        "plain_cnn",
        {"batch_norm": True, "pool": "before"},
        "standard",
        "before",
    ),
    Variant("depthwise separable, pool after (literal swap)", "depthwise_cnn", {}, "separable", "after"),
    Variant("depthwise separable, pool before", "depthwise_cnn", {"pool": "before"}, "separable", "before"),
    Variant(
        "first stage separable (paper's failed variant)",
        "depthwise_cnn",
        {"separable": "first", "batch_norm": False},
        "first separable",
        "after",
    ),
    Variant("MobileNetV2 (timm mobilenetv2_100)", "mobilenet", {}, "mobilenet", "n/a"),
)


def _onnx_session(model: torch.nn.Module, example: torch.Tensor, path: Path, threads: int):
    import onnxruntime as ort

    with warnings.catch_warnings():  # the input-size checks in forward are constants for the traced size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_variant(
    variant: Variant, image_size: int, batch: int, threads: int, repeats: int, onnx_path: Path
) -> dict:
    """One row of :func:`measure_variants` (the caller sets torch's thread count); the exported
    model is written to ``onnx_path``."""
    from cxr.models import create_model, input_size_kwargs
    from cxr.models.profile import count_flops, count_params, receptive_field

    torch.manual_seed(0)
    model = create_model(variant.model, **{**input_size_kwargs(variant.model, image_size), **variant.kwargs})
    model.eval()
    x = torch.randn(batch, 1, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager_out = model(x)
        eager = throughput(batch, time_runs(lambda: model(x), repeats))
    session = _onnx_session(model, x, onnx_path, threads)
    feed = {"image": x.numpy()}
    onnx_out = torch.from_numpy(session.run(None, feed)[0])
    onnx = throughput(batch, time_runs(lambda: session.run(None, feed), repeats))
    return {
        "variant": variant.label,
        "model": variant.model,
        "kwargs": dict(variant.kwargs),
        "conv": variant.conv,
        "pool": variant.pool,
        "params": count_params(model),
        "gflops": count_flops(model, (1, 1, image_size, image_size)) / 1e9,
        "receptive_field": receptive_field(model) if hasattr(model, "stages") else None,
        "eager_images_per_s": eager["images_per_s"],
        "onnx_images_per_s": onnx["images_per_s"],
        "onnx_max_abs_diff": float((onnx_out - eager_out).abs().max()),
        "image_size": image_size,
        "batch": batch,
        "threads": threads,
    }


def measure_variants(
    image_size: int = 200,
    batch: int = 16,
    threads: int = 2,
    repeats: int = 3,
    variants: Sequence[Variant] = VARIANTS,
) -> list[dict]:
    """Measure every variant (see the module docstring); one dict per variant, in order.

    Keys: ``variant``, ``model``, ``kwargs``, ``conv``, ``pool``, ``params``, ``gflops`` (per image),
    ``receptive_field`` (px; None for MobileNet), ``eager_images_per_s``, ``onnx_images_per_s``
    (median of ``repeats`` timed runs after one warm-up), ``onnx_max_abs_diff`` (ONNX Runtime vs
    eager logits), ``image_size``, ``batch``, ``threads``. Torch's thread count is restored afterwards.
    """
    if image_size < 32 or batch < 1 or threads < 1 or repeats < 1:
        raise ValueError(
            f"need image_size >= 32, batch, threads, repeats >= 1; got {image_size}, {batch}, {threads}, {repeats}"
        )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-ablation-") as tmp:
            return [
                measure_variant(v, image_size, batch, threads, repeats, Path(tmp) / f"variant{i}.onnx")
                for i, v in enumerate(variants)
            ]
    finally:
        torch.set_num_threads(before)


def format_markdown(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table, with FLOPs and speed relative to the first row."""
    if not rows:
        return ""
    first = rows[0]
    lines = [
        f"Inference at {first['image_size']} px, batch {first['batch']}, {first['threads']} CPU threads, fp32.",
        "",
        "| variant | conv | pool | params | GFLOPs | FLOPs vs first | receptive field (px) "
        "| eager img/s | ONNX Runtime img/s | eager speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rf = "" if r["receptive_field"] is None else str(r["receptive_field"])
        lines.append(
            f"| {r['variant']} | {r['conv']} | {r['pool']} | {r['params']:,} | {r['gflops']:.3f} "
            f"| 1/{first['gflops'] / r['gflops']:.1f} | {rf} | {r['eager_images_per_s']:.1f} "
            f"| {r['onnx_images_per_s']:.1f} | {r['eager_images_per_s'] / first['eager_images_per_s']:.2f}x |"
        )
    return "\n".join(lines)
