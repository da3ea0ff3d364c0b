"""Trial processes: argv templating, environment, process groups, exit reasons.

A command is a list of templates; each ``{{ name }}`` is replaced by the
parameter's string form and each element stays exactly one argv element. No
shell is ever involved, so a value like ``; rm -rf /`` reaches the program
literally. Every trial runs in its own session (process group) so that a
cancel reaches the children it spawned.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio

from hbd.executor import trialfiles

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")

# How often an adopted process (not our child: no exit notification) is polled.
ADOPTED_POLL_INTERVAL = 0.2
# After SIGKILL a process dies at once unless stuck in the kernel (D state);
# do not wait for it forever.
KILL_WAIT_SECONDS = 5.0


class TemplateError(ValueError):
    """A command template names a placeholder that has no value."""


def format_value(value: Any) -> str:
    """The argv/environment string form of a parameter value.

    bool -> ``true``/``false``, None -> ``null``, float -> shortest repr
    (``0.001``, ``1e-05``), int and str as-is, lists and mappings as compact
    JSON.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


_MISSING = object()


def _lookup(params: Mapping[str, Any], name: str) -> Any:
    if name in params:
        return params[name]
    current: Any = params  # dotted names reach into nested mappings
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def render_argv(command: list[str], params: Mapping[str, Any]) -> list[str]:
    """Replace every ``{{ name }}`` in each element; one element in, one out."""
    missing = sorted(n for n in _names(command) if _lookup(params, n) is _MISSING)
    if missing:
        raise TemplateError(f"unknown placeholder(s) in command: {', '.join(missing)}")
    return [
        PLACEHOLDER.sub(lambda m: format_value(_lookup(params, m.group(1))), p) for p in command
    ]


def _names(command: list[str]) -> set[str]:
    return {m.group(1) for part in command for m in PLACEHOLDER.finditer(part)}


def build_env(
    base: Mapping[str, str],
    extra: Mapping[str, str],
    hbd_vars: Mapping[str, str],
) -> dict[str, str]:
    """Inherited environment, then the submission's, then hbd's (which win)."""
    env = dict(base)
    env.update(extra)
    env.update(hbd_vars)
    return env


class TrialProcess(Protocol):
    """A running trial's leader process, whether our child or adopted."""

    @property
    def pid(self) -> int: ...

    @property
    def exited(self) -> bool: ...

    @property
    def returncode(self) -> int | None:
        """Exit status (negative: signal), None while running or when unknown."""

    async def wait(self) -> None: ...

    def signal_group(self, sig: signal.Signals) -> bool:
        """Signal the trial's process group; False if nothing was signalled."""

    def leave_running(self) -> None:
        """The agent stops without stopping the trial (the next agent adopts it)."""


# How often a trial's exit is checked: it bounds how late its end is seen.
CHILD_POLL_INTERVAL = 0.05
# Trials an agent left running when it stopped, kept referenced so that
# Popen does not warn about them when collected.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


class ChildProcess:
    """A trial process this agent started (exit status known).

    A plain ``subprocess.Popen``, not an asyncio subprocess: asyncio kills its
    children when the loop closes, and an agent that stops must be able to
    leave its trials running for the next agent to adopt.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exited(self) -> bool:
        return self._process.poll() is not None  # reaps without blocking

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    async def wait(self) -> None:
        while not self.exited:  # noqa: ASYNC110 (no exit notification without a loop-owned child)
            await anyio.sleep(CHILD_POLL_INTERVAL)

    def leave_running(self) -> None:
        """This agent stops; the process goes on, to be adopted by the next one."""
        _LEFT_RUNNING.append(self._process)  # no "still running" warning at collection

    def signal_group(self, sig: signal.Signals) -> bool:
        # Until we reap the leader its pid cannot be reused, and afterwards a
        # pgid stays reserved while any member lives: the group is ours.
        return _killpg(self.pid, sig)


class AdoptedProcess:
    """A trial process started by a previous agent (exit status lost)."""

    def __init__(self, pid: int, start_time: str | None) -> None:
        self._pid = pid
        self._start_time = start_time
        self._exited = False

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def exited(self) -> bool:
        if not self._exited and not pid_alive(self._pid, self._start_time):
            self._exited = True
        return self._exited

    @property
    def returncode(self) -> int | None:
        return None

    async def wait(self) -> None:
        # Not our child, so no exit notification: polling /proc is the only way.
        while not self.exited:  # noqa: ASYNC110
            await anyio.sleep(ADOPTED_POLL_INTERVAL)

    def leave_running(self) -> None:
        pass  # not our child: nothing to keep

    def signal_group(self, sig: signal.Signals) -> bool:
        # Not our child: once it is gone its pid may belong to someone else.
        return not self.exited and _killpg(self.pid, sig)


def _popen(
    argv: list[str], cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path
) -> subprocess.Popen[bytes]:
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,  # a trial never reads the agent's stdin
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


async def spawn(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path
) -> ChildProcess:
    """Start ``argv`` (no shell) as the leader of a new session."""
    # fork+exec blocks for a moment: off the event loop. No pipes: the child
    # writes to files, so nothing here needs closing later.
    return ChildProcess(await anyio.to_thread.run_sync(_popen, argv, cwd, env, stdout, stderr))


def _killpg(pid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def terminate_group(process: TrialProcess, grace: float) -> None:
    """SIGTERM the trial's group, give the leader ``grace`` seconds, SIGKILL the group."""
    process.signal_group(signal.SIGTERM)
    with anyio.move_on_after(grace):
        await process.wait()
    process.signal_group(signal.SIGKILL)
    with anyio.move_on_after(KILL_WAIT_SECONDS):
        await process.wait()


def describe_exit(returncode: int) -> str:
    """``exit code N`` or ``killed by signal SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by signal {name}"
    return f"exit code {returncode}"


def read_tail(path: Path, limit: int) -> str | None:
    """The last ``limit`` bytes of a trial-written file (see hbd.executor.trialfiles)."""
    return trialfiles.read_tail(path, limit)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is parenthesised and may hold spaces.
    return raw.rsplit(")", 1)[1].split()


def process_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (Linux), to tell it from a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def find_by_env(marker: str) -> int | None:
    """The process-group leader whose environment holds ``marker`` (``NAME=value``), if any.

    Finds a trial whose pid was never recorded (the agent died between spawning
    it and writing its pid file): each trial has its own HBD_TRIAL_DIR, and
    the trial leads its own process group (its children share the variable).
    """
    needle = b"\0" + marker.encode() + b"\0"
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            environ = b"\0" + (entry / "environ").read_bytes() + b"\0"
            if needle not in environ or os.getpgid(pid) != pid:
                continue
        except (OSError, ProcessLookupError):
            continue  # gone, or not ours to read
        if pid_alive(pid, None):
            return pid
    return None


def pid_alive(pid: int, start_time: str | None) -> bool:
    """Is ``pid`` running (not a zombie) and, if known, the same process?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the start time below decides
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc").is_dir()  # no procfs: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or fields[19] == start_time
