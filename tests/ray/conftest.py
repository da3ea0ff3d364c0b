"""A real one-node Ray cluster on 127.0.0.1 for the session, stopped even on failure.

``ray start --head --block`` runs in a process group of its own with a
temporary directory of its own and free ports for everything Ray would
otherwise take at a fixed number (so that two test runs on one machine do not
collide). At the end every process of the cluster is SIGKILLed: its group,
and every descendant found at that moment (Ray's job entrypoints and the
trials under them run in sessions of their own). Never ``ray stop``, which
would stop any other Ray of the machine too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

RAY = Path(sys.executable).with_name("ray")
# Starting a head on 2 loaded cores took up to ~40 s: generous, polled.
START_DEADLINE_SECONDS = 180.0


@dataclass(frozen=True)
class Cluster:
    pid: int  # `ray start --block`, leader of the cluster's process group
    dashboard: str  # http://127.0.0.1:PORT, the job server
    workdir: Path  # where trials run on the node

    @property
    def url(self) -> str:
        """The executor URL the daemon is given."""
        return f"ray://{self.dashboard.removeprefix('http://')}?python={sys.executable}&workdir={self.workdir}"


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_cluster(pid: int) -> None:
    for _ in range(3):  # again for what forked meanwhile
        tree = descendants(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        time.sleep(0.2)


# Ray gives its raylet a fixed 30 s to register (ray/_private/node.py); on two
# cores loaded by other test runs that was seen to pass: one more try.
START_ATTEMPTS = 2


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    if not RAY.exists():
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: .ci/run installs the '.[test,ray]' extras")
        pytest.skip("ray is not installed (pip install -e '.[test,ray]')")
    for attempt in range(START_ATTEMPTS):
        with started_cluster(last=attempt == START_ATTEMPTS - 1) as cluster:
            if cluster is not None:
                yield cluster
                return


@contextlib.contextmanager
def started_cluster(*, last: bool = True, cpus: int = 2) -> Iterator[Cluster | None]:
    """A cluster (``cpus`` logical CPUs), or None when `ray start` gave up and this
    is not the last try. Also used by bench/ray_vs_agent.py."""
    # Short: Ray's unix sockets live below it (108-byte path limit).
    temp = Path(tempfile.mkdtemp(prefix="hbdray"))
    workdir = temp / "node"
    (gcs, dash, client, node_mgr, obj_mgr, agent, agent_grpc, metrics, env_agent) = free_ports(9)
    argv = [
        str(RAY), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dash),
        "--ray-client-server-port", str(client),
        "--node-manager-port", str(node_mgr),
        "--object-manager-port", str(obj_mgr),
        "--dashboard-agent-listen-port", str(agent),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics),
        "--runtime-env-agent-port", str(env_agent),
        "--num-cpus", str(cpus),
        "--num-gpus", "0",
        "--temp-dir", str(temp),
        "--disable-usage-stats",
    ]  # fmt: skip
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    log = open(temp / "ray-start.log", "wb")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    cluster = Cluster(pid=proc.pid, dashboard=f"http://127.0.0.1:{dash}", workdir=workdir)
    try:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while True:
            if proc.poll() is not None:
                if not last:
                    yield None
                    return
                raise RuntimeError(
                    f"ray start exited {proc.returncode}: "
                    f"{(temp / 'ray-start.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{cluster.dashboard}/api/version", timeout=2).status_code == 200:
                    nodes = httpx.get(f"{cluster.dashboard}/api/v0/nodes", timeout=5)
                    if nodes.status_code == 200 and nodes.json()["data"]["result"]["result"]:
                        break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray cluster did not come up in time")
            time.sleep(0.5)
        yield cluster
    finally:
        kill_cluster(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
