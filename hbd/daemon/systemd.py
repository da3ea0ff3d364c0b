"""The sd_notify protocol, written out: readiness, watchdog pings, stopping.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace) to a ``Type=notify`` service; the service sends it datagrams of
newline-separated ``KEY=VALUE`` lines (sd_notify(3)). With ``WatchdogSec=``
set, systemd also passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) and kills
and restarts a service that has not sent ``WATCHDOG=1`` within that time.
Without ``NOTIFY_SOCKET`` every call here is a no-op, so the same code runs
under systemd, in a terminal and in tests.

The protocol is a dozen lines; a dependency (or libsystemd) is not needed.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping

import anyio
import structlog

log = structlog.get_logger(__name__)

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# systemd's recommendation (sd_watchdog_enabled(3)): ping at half the timeout,
# so one slow health check does not get the service killed.
WATCHDOG_FRACTION = 0.5


class Notifier:
    """Sends sd_notify messages to ``address``; does nothing when it is None."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._warned = False

    @classmethod
    def from_env(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """Read the systemd variables; with ``unset`` remove them so children do not inherit them."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if raw and raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        if unset:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings, or None when systemd wants none."""
        if self.address is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 1_000_000 * WATCHDOG_FRACTION

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``READY=1``, ``STATUS=...``) as one datagram; True if sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            if not self._warned:  # once: a broken socket would otherwise log every ping
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")


async def watchdog(notifier: Notifier, healthy: Callable[[], Awaitable[bool]]) -> None:
    """Ping systemd's watchdog while ``healthy()`` says so, until cancelled.

    ``healthy`` gets half an interval to answer; a check that fails or hangs
    skips the ping, and systemd restarts the service if that persists for
    ``WatchdogSec``. Returns at once when no watchdog is configured.
    """
    interval = notifier.watchdog_interval
    if interval is None:
        return
    log.info("systemd watchdog enabled", interval=interval)
    while True:
        ok = False
        with anyio.move_on_after(interval * WATCHDOG_FRACTION):
            try:
                ok = await healthy()
            except Exception as exc:  # any failure of the check means "not healthy"
                log.warning("health check failed", error=str(exc))
        if ok:
            notifier.notify("WATCHDOG=1")
        else:
            log.warning("unhealthy: watchdog not pinged this time")
        await anyio.sleep(interval)
