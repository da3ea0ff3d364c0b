"""The reference executor agent: runs trials as processes on this host.

``Agent`` (agent.py) holds trials and their background tasks; ``hbd.api.agent_routes``
puts the ``/v1`` protocol (``hbd.protocol``) over it; ``supervisor.py`` is
the small process that owns each trial and records how it ended;
``process.py`` templates argv and starts supervisors; ``results.py`` keeps
trial files durable; ``metrics.py`` tails what trials report;
``callbacks.py`` pushes updates to the daemon.

The names below are imported lazily: ``python -m hbd.executor.supervisor``
runs once per trial and must not pay for the agent's imports (anyio, httpx,
pydantic).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Agent": "hbd.executor.agent",
    "AgentError": "hbd.executor.agent",
    "AgentNotRunning": "hbd.executor.agent",
    "NoFreeSlot": "hbd.executor.agent",
    "TrialConflict": "hbd.executor.agent",
    "TemplateError": "hbd.executor.process",
    "render_argv": "hbd.executor.process",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hbd.executor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
