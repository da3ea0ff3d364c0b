"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from hbd.daemon.systemd import Notifier, watchdog


class FakeSystemd:
    """A bound datagram socket: what systemd listens on as NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(5.0)

    def receive(self, timeout: float = 5.0) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest) -> Iterator[FakeSystemd]:
    if request.param == "path":
        # AF_UNIX paths are limited to ~108 bytes: pytest's tmp_path may be longer.
        directory = tempfile.mkdtemp(prefix="hbd-notify-", dir="/tmp")
        fake = FakeSystemd(os.path.join(directory, "notify"))
    else:
        directory = None
        fake = FakeSystemd(f"@hbd-test-{secrets.token_hex(8)}")
    try:
        yield fake
    finally:
        fake.close()
        if directory:
            Path(fake.address).unlink(missing_ok=True)
            os.rmdir(directory)


def test_ready_status_and_stopping_reach_the_socket(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.address)
    assert notifier.ready("serving on http://127.0.0.1:1")
    assert systemd.receive() == ["READY=1", "STATUS=serving on http://127.0.0.1:1"]
    assert notifier.stopping()
    assert systemd.receive() == ["STOPPING=1", "STATUS=stopping"]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog_interval is None


def test_from_env_reads_and_unsets_the_variables(systemd: FakeSystemd) -> None:
    env = {
        "NOTIFY_SOCKET": systemd.address,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/bin",
    }
    notifier = Notifier.from_env(env)
    assert notifier.address == systemd.address
    assert notifier.watchdog_interval == 15.0  # half of WatchdogSec
    assert env == {"PATH": "/bin"}  # children (trials) do not inherit them


def test_watchdog_meant_for_another_process_is_ignored(systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(env).watchdog_interval is None


def test_a_vanished_socket_does_not_break_the_service(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    assert notifier.notify("READY=1") is False
    assert notifier.notify("WATCHDOG=1") is False


@pytest.mark.anyio
async def test_watchdog_pings_while_healthy_and_stops_when_not(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.address, watchdog_usec=100_000)  # ping every 0.05 s
    state = {"healthy": True}

    async def healthy() -> bool:
        return state["healthy"]

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog, notifier, healthy)
        await anyio.sleep(0.3)
        pings = systemd.pending()
        assert len(pings) >= 3 and all(p == ["WATCHDOG=1"] for p in pings)
        state["healthy"] = False
        await anyio.sleep(0.1)  # a ping already under way may still land
        systemd.pending()
        await anyio.sleep(0.3)
        assert systemd.pending() == []
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_hanging_health_check_skips_the_ping(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.address, watchdog_usec=100_000)

    async def hangs() -> bool:
        await anyio.sleep_forever()
        return True

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog, notifier, hangs)
        await anyio.sleep(0.3)
        assert systemd.pending() == []
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_no_watchdog_configured_returns_at_once(systemd: FakeSystemd) -> None:
    async def healthy() -> bool:
        raise AssertionError("never asked")

    with anyio.fail_after(1):
        await watchdog(Notifier(systemd.address), healthy)
