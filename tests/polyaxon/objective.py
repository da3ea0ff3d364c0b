"""A deterministic objective for every spec of the corpus (``hbd simulate``).

Any configuration maps to a loss in (0, 1) that falls with the resource, so
Hyperband has something to rank; strings and bools are hashed stably.
"""

from __future__ import annotations

import zlib
from typing import Any


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return (zlib.crc32(str(value).encode()) % 1000) / 1000.0


def loss(config: dict[str, Any], resource: float) -> float:
    spread = sum(abs(_number(v)) % 1.0 for v in config.values()) / max(1, len(config))
    return 0.05 + 0.5 * spread + 0.4 / (1.0 + float(resource))
