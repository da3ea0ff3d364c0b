"""hbd: a Hyperband sweep daemon.

``hbd.report`` is for trial processes (standard library only); ``hbd.Client``,
the synchronous client for notebooks and scripts, is imported on first use so
that ``import hbd`` in a trial stays light (no httpx).
"""

from typing import TYPE_CHECKING, Any

from hbd.report import report
from hbd.version import __version__

if TYPE_CHECKING:
    from hbd.sync_client import Client

__all__ = ["Client", "__version__", "report"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from hbd.sync_client import Client

        return Client
    raise AttributeError(f"module 'hbd' has no attribute {name!r}")
