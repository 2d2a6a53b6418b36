"""Advice for an out-of-memory error: which batch size and image size to try next."""

from __future__ import annotations


def out_of_memory_message(error: BaseException, batch_size: int | None, image_size: int | None) -> str:
    """One line for a device out-of-memory error: the settings that ran out and what to try instead."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if batch_size is not None and batch_size > 1:
        advice = f"retry with datamodule.batch_size={batch_size // 2}"
    else:
        advice = "retry with a smaller datamodule.image_size or model"
    return (
        f"out of device memory with datamodule.batch_size={batch_size}, datamodule.image_size={image_size}: "
        f"{advice} (or trainer.precision=bf16-mixed where supported) [{first}]"
    )
