"""The reference executor agent: runs trials as processes on this host.

``Agent`` (agent.py) holds trials and their background tasks; ``hbd.api.agent_routes``
puts the ``/v1`` protocol (``hbd.protocol``) over it; ``process.py``
templates argv and manages process groups; ``results.py`` keeps trial files
durable; ``metrics.py`` tails what trials report; ``callbacks.py`` pushes
updates to the daemon.
"""

from hbd.executor.agent import Agent, AgentError, AgentNotRunning, NoFreeSlot, TrialConflict
from hbd.executor.process import TemplateError, render_argv

__all__ = [
    "Agent",
    "AgentError",
    "AgentNotRunning",
    "NoFreeSlot",
    "TemplateError",
    "TrialConflict",
    "render_argv",
]
