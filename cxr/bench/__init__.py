"""``make bench`` / ``cxr-bench``: measured speed of the input pipeline, the models, their deployable CPU
paths (eager, folded + channels_last, ONNX Runtime) and the RSNA metric.

Writes ``<out>/bench-<device>.json`` (every figure, the machine, the settings), ``bench-<device>.md``
(tables and the issue's targets, met or not) and ``bench-<device>.png`` (the pipeline against each
model's training step, and every model's images/s); ``<device>`` is ``gpu`` when CUDA is present (CPU and GPU
figures then sit side by side, measured in one run) and ``cpu`` otherwise; ``--quick`` (a smoke run on
tiny sizes) writes ``bench-<device>-quick.*`` so it never overwrites real figures.

How a figure is taken: the work runs ``warmup`` times untimed, then ``repeats`` times timed (CUDA
synchronised); images/s = images per run / median run time. Synthetic data: phantom radiographs
written as Kermany-style JPEGs (1000–1600 px sides) and RSNA-style JPEG-Baseline DICOMs (1024 px).
Models run on random tensors in a fresh subprocess per model and phase, so that peak memory is the
model's own: on CPU the growth of the process's peak resident memory over its resident memory after
imports (weights, activations, gradients, optimiser state and allocator slack; see
:class:`~cxr.bench.timing.PeakRSS`), on CUDA ``torch.cuda.max_memory_allocated`` (tensors only, not
the caching allocator's reserve).

Modules: :mod:`~cxr.bench.settings` (what is run), :mod:`~cxr.bench.timing`, :mod:`~cxr.bench.pipeline`,
:mod:`~cxr.bench.models`, :mod:`~cxr.bench.deploy`, :mod:`~cxr.bench.fed` (sections), :mod:`~cxr.bench.targets` (ratios, targets),
:mod:`~cxr.bench.report` (Markdown), :mod:`~cxr.bench.plot` (the figure), :mod:`~cxr.bench.run`
(the command).
"""

from cxr.bench.run import run, write
from cxr.bench.settings import Settings
from cxr.cli.bench import main

__all__ = ["Settings", "main", "run", "write"]
