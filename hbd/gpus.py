"""GPU devices of an executor: which exist, and which a trial gets.

An executor hands whole devices to trials: a trial asking for N
(``TrialResources.gpus``) gets N devices that no other running trial holds,
named in ``CUDA_VISIBLE_DEVICES`` and ``HBD_GPUS``. The devices are the ids
the operator names (``--gpus 0,1,2,3``; any id CUDA accepts, e.g. ``GPU-<uuid>``
or ``MIG-<uuid>``), ``none``, or by default those NVML reports (the optional
extra ``hbd[gpu]``, ``nvidia-ml-py``, imported only then: without it, or when
NVML fails, the host has no GPUs).

Everything here but :func:`detect` is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)

# Devices one executor hands out: more than any host carries (a DGX has 8,
# with MIG 56), and a bound on what a typo in --gpus can make the agent track.
MAX_HOST_GPUS = 256
# A device id as CUDA_VISIBLE_DEVICES takes it: an index or a (MIG) UUID; no
# comma (the separator) and no shell or path characters.
MAX_GPU_ID_LENGTH = 100
GPU_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:/-]*$")

AUTO = "auto"
NONE = "none"


def parse(text: str) -> tuple[str, ...] | None:
    """``--gpus``: ``auto`` (None: ask NVML), ``none`` (no devices) or ``0,1,...``.

    Raises ValueError naming what is wrong (a bad or repeated id, too many).
    """
    value = text.strip()
    if value.lower() == AUTO:
        return None
    if value.lower() in (NONE, ""):
        return ()
    ids = [part.strip() for part in value.split(",")]
    if len(ids) > MAX_HOST_GPUS:
        raise ValueError(f"{len(ids)} GPU devices, more than MAX_HOST_GPUS ({MAX_HOST_GPUS})")
    seen: set[str] = set()
    for gpu in ids:
        if len(gpu) > MAX_GPU_ID_LENGTH or not GPU_ID_PATTERN.match(gpu):
            raise ValueError(f"{gpu!r} is not a GPU device id (an index like 0, or a UUID)")
        if gpu in seen:
            raise ValueError(f"GPU device {gpu!r} is named twice")
        seen.add(gpu)
    return tuple(ids)


def detect() -> tuple[str, ...]:
    """The device indexes NVML reports; () without ``nvidia-ml-py`` or a working driver."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError and its many subclasses: no usable GPUs
        log.info("NVML reports no usable GPUs", error=str(exc))
        return ()
    return tuple(str(i) for i in range(min(count, MAX_HOST_GPUS)))


def resolve(text: str | None) -> tuple[str, ...]:
    """The devices for a ``--gpus`` value (None or ``auto``: NVML's)."""
    parsed = None if text is None else parse(text)
    return detect() if parsed is None else parsed


def free(devices: Iterable[str], held: Iterable[str]) -> list[str]:
    """``devices`` no trial holds, in the executor's order."""
    taken = set(held)
    return [d for d in devices if d not in taken]


def pick(devices: Iterable[str], held: Iterable[str], count: int) -> tuple[str, ...] | None:
    """``count`` free devices (the first ones, so that placement is predictable), or None."""
    available = free(devices, held)
    if count > len(available):
        return None
    return tuple(available[:count])


def visible(devices: tuple[str, ...]) -> str:
    """The value of ``CUDA_VISIBLE_DEVICES``/``HBD_GPUS`` (empty: no device at all)."""
    return ",".join(devices)


__all__ = [
    "MAX_GPU_ID_LENGTH",
    "MAX_HOST_GPUS",
    "detect",
    "free",
    "parse",
    "pick",
    "resolve",
    "visible",
]
