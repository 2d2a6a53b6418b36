"""Timing primitives: timed runs, throughput, peak memory, the device settings a timed model runs
under (:class:`Placement`) and the machine description every figure carries."""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch


def time_runs(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> list[float]:
    """Seconds of each of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def throughput(images: int, times: Sequence[float]) -> dict:
    """``{"images_per_s": images / median(times), "median_s", "runs_s", "images"}``."""
    median = statistics.median(times)
    return {
        "images_per_s": images / median,
        "median_s": median,
        "runs_s": [round(t, 6) for t in times],
        "images": images,
    }


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where and how a benchmarked model runs: ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``), bf16
    autocast, channels_last memory format.

    :meth:`sync` is what :func:`time_runs` needs (CUDA queues kernels, so the clock is read only after
    they finish); :meth:`place` and :meth:`inputs` put a model and its batches on the device in the
    memory format; :meth:`autocast` is the precision to run them in.
    """

    device: str = "cpu"
    bf16: bool = False
    channels_last: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA); nothing on the CPU."""
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self) -> torch.autocast:
        """bf16 autocast on the device when ``bf16``, else a disabled one (fp32)."""
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device in the memory format (in place; returned for chaining). Also turns on
        cuDNN autotuning, as ``trainer=fast`` does: benchmarks use fixed input sizes."""
        torch.backends.cudnn.benchmark = True
        return model.to(self.torch_device).to(memory_format=self.memory_format)

    def inputs(self, images: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
        """A float32 (B, C, H, W) batch on the device in the memory format."""
        return images.to(self.torch_device, non_blocking=non_blocking).contiguous(
            memory_format=self.memory_format
        )


def machine_info() -> dict:
    """What the figures were measured on: CPU model and cores, threads, library versions, load, GPU."""
    import cv2

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# Where the kernel keeps a process's resident memory and high-water mark, and the file that resets
# the mark (module constants so that tests can take either away).
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakRSS:
    """Growth of this process's peak resident memory (MB) from construction to :meth:`growth`.

    ``method`` says how the peak is read:

    - ``"VmHWM reset"`` (Linux): the kernel's high-water mark is reset at construction
      (``/proc/self/clear_refs``), so an earlier peak (imports) cannot hide the measured one. Exact.
    - ``"VmHWM"`` (Linux where that reset is refused, as in some sandboxes): the high-water mark since
      the process started. Exact when the measured work sets a new high. When an earlier peak stays
      higher, the work's own is hidden and :meth:`growth` falls back to the resident memory now (a
      lower bound; ``exact`` is then False). In a fresh process, as the bench runs every model, only
      the import-time peak can hide anything.
    - ``"ru_maxrss"`` (no ``VmHWM`` in ``/proc``, or no ``/proc``): as ``"VmHWM"`` with the lifetime
      peak ``getrusage`` reports. On Linux ``ru_maxrss`` also carries the parent's peak into a child
      process, which is why ``VmHWM`` comes first.

    The resident memory itself is ``VmRSS`` where ``/proc`` has it, else ``ru_maxrss`` too.
    """

    def __init__(self) -> None:
        self.exact = True
        status = self._status()
        self.has_rss, self.has_hwm = "VmRSS" in status, "VmHWM" in status
        self.start_peak = self._peak(status)
        reset = False
        if self.has_hwm and self.has_rss:
            try:
                PROC_CLEAR_REFS.write_text("5")
                after = self._status()
                # a kernel that accepts the write but keeps the mark must not pass for one that reset it
                reset = after["VmHWM"] <= after["VmRSS"] + 4
            except (OSError, KeyError):
                pass
        self.method = "VmHWM reset" if reset else "VmHWM" if self.has_hwm else "ru_maxrss"
        self.start = self._rss_now(self._status())

    @staticmethod
    def _status() -> dict[str, float]:
        """The ``Vm*`` lines of ``/proc/self/status`` in MB; empty where there is no such file."""
        try:
            lines = PROC_STATUS.read_text().splitlines()
        except OSError:
            return {}
        return {
            key: int(value.split()[0]) / 1024  # kB
            for key, _, value in (line.partition(":") for line in lines)
            if key.startswith("Vm") and value.strip()
        }

    @staticmethod
    def _maxrss() -> float:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux

    def _peak(self, status: dict[str, float]) -> float:
        return status["VmHWM"] if self.has_hwm else self._maxrss()

    def _rss_now(self, status: dict[str, float]) -> float:
        return status["VmRSS"] if self.has_rss else self._maxrss()

    def growth(self) -> float:
        """MB above the resident memory at start; 0 when pages freed meanwhile kept the peak below it.

        Never below the growth of the resident memory now: the peak is at least that, whatever a
        kernel's counters say.
        """
        status = self._status()
        now, peak = self._rss_now(status), self._peak(status)
        if self.method != "VmHWM reset":
            self.exact = peak > self.start_peak
            if not self.exact:
                peak = now
        return max(0.0, max(peak, now) - self.start)
