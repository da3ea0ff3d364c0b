"""Trial processes: argv templating, environment, supervisors, exit reasons.

A command is a list of templates; each ``{{ name }}`` is replaced by the
parameter's string form and each element stays exactly one argv element. No
shell is ever involved, so a value like ``; rm -rf /`` reaches the program
literally. The agent never starts a trial itself: it starts the trial's
supervisor (``hbd.executor.supervisor``) in a session of its own and hands
it the trial's lock; the supervisor starts the trial in a process group of
its own and stops its whole tree.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import anyio

# Templating lives with the spec grammar; re-exported for the agent and its tests.
from hbd.core.templating import PLACEHOLDER as PLACEHOLDER
from hbd.core.templating import TemplateError as TemplateError
from hbd.core.templating import format_value as format_value
from hbd.core.templating import render_argv as render_argv
from hbd.executor.supervisor import LOCK_FILE, exit_notifier


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


# Where the supervisor's own diagnostics go (a traceback if it cannot run).
SUPERVISOR_LOG = "supervisor.log"
_HBD_ROOT = str(Path(__file__).resolve().parent.parent.parent)


def try_lock(state: Path) -> int | None:
    """The trial's lock, taken (an open descriptor), or None if a supervisor holds it.

    An ``flock`` belongs to the open file, so a supervisor that inherited a
    locked descriptor holds it until it exits, however it exits.
    """
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def supervisor_alive(state: Path) -> bool:
    fd = try_lock(state)
    if fd is None:
        return True
    os.close(fd)
    return False


def start_supervisor(state: Path, lock_fd: int) -> subprocess.Popen[bytes]:
    """Start ``python -m hbd.executor.supervisor`` in its own session, handing it the lock.

    It reads ``launch.json`` from ``state``; its own stderr (a traceback if it
    fails) goes to ``supervisor.log`` there.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HBD_")}
    # The same hbd as this agent, wherever the supervisor's cwd is.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_HBD_ROOT, env.get("PYTHONPATH")) if p)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    errors = os.open(state / SUPERVISOR_LOG, flags, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "hbd.executor.supervisor", str(state), str(lock_fd)],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            pass_fds=(lock_fd,),
            start_new_session=True,  # outlives the agent, out of reach of its group's signals
        )
    finally:
        os.close(errors)


class SupervisorHandle:
    """A trial's supervisor: this agent's child, or adopted from a previous agent."""

    def __init__(self, state: Path, popen: subprocess.Popen[bytes] | None) -> None:
        self.state = state
        self._popen = popen
        # Our child's exit wakes :meth:`exited_within` at once (a pidfd; closed
        # once it has exited or is left running). Adopted ones are polled.
        self._exit_fd = exit_notifier(popen.pid) if popen is not None else None

    @property
    def adopted(self) -> bool:
        """Not our child: :meth:`finished` opens and locks a file (run it off the event loop)."""
        return self._popen is None

    @property
    def exit_status(self) -> int | None:
        """The supervisor's own exit status when it was our child and has exited."""
        return None if self._popen is None else self._popen.poll()

    def finished(self) -> bool:
        if self._popen is not None:
            if self._popen.poll() is None:  # reaps without blocking
                return False
            self._close_exit_fd()
            return True
        # Not our child: its lock is the only trustworthy sign of life.
        return not supervisor_alive(self.state)

    async def wait(self, poll: float) -> None:
        while not await self.finished_async():
            await self.exited_within(poll)

    async def exited_within(self, seconds: float) -> None:
        """Sleep ``seconds``, waking as soon as our supervisor exits.

        The agent tails metrics at this pace; without the wake-up every trial's
        end would be noticed up to ``seconds`` late, on the sweep's critical path.
        """
        if self._exit_fd is None:
            await anyio.sleep(seconds)
            return
        with anyio.move_on_after(seconds):
            await anyio.wait_readable(self._exit_fd)

    def _close_exit_fd(self) -> None:
        fd, self._exit_fd = self._exit_fd, None
        if fd is not None:
            os.close(fd)

    async def finished_async(self) -> bool:
        if self.adopted:
            return await anyio.to_thread.run_sync(self.finished)
        return self.finished()

    def leave_running(self) -> None:
        """This agent stops; the supervisor goes on, to be adopted by the next one."""
        self._close_exit_fd()
        if self._popen is not None:
            _LEFT_RUNNING.append(self._popen)  # no "still running" warning at collection


# Supervisors an agent left running when it stopped, kept referenced so that
# Popen does not warn about them when collected.
_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []


def kill_group(pid: int, start_time: str | None) -> bool:
    """SIGKILL the process group led by ``pid`` if it is still the same process."""
    if not pid_alive(pid, start_time):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(returncode: int) -> str:
    """``exit code N`` or ``killed by signal SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by signal {name}"
    return f"exit code {returncode}"


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
