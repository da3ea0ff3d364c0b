"""Settings of the daemon (``hbd serve``) and the executor agent (``hbd executor``).

Where a value comes from, highest precedence first:

1. command-line options (only those given; ``--executor`` replaces the list);
2. environment variables: ``HBD_<KEY>`` for the daemon (``HBD_PORT``,
   ``HBD_EXECUTORS='["http://gpu1:8766"]'``), ``HBD_EXECUTOR_<KEY>`` for the
   agent (``HBD_EXECUTOR_SLOTS``), so one host can run both;
3. the TOML file named by ``--config PATH`` or ``HBD_CONFIG`` (the agent:
   ``HBD_EXECUTOR_CONFIG``). No file is read unless one is named: a service's
   behaviour never depends on the directory it was started in. A named file
   that is missing is an error. ``config/hbd.toml`` and
   ``config/hbd-executor.toml`` are the documented templates;
4. the defaults below.

The bearer token is never a config key: it comes from ``--token-file PATH``,
then ``HBD_TOKEN``, then ``token_file`` in the environment
(``HBD_TOKEN_FILE``) or the TOML file. The CLI removes ``HBD_TOKEN`` from its
own environment once read, so trial processes do not inherit it.

Every problem is one :class:`~hbd.errors.ConfigError` naming the key, the
reason and where the value came from, e.g.
``port: Input should be less than or equal to 65535 (from /etc/hbd/hbd.toml)``.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from hbd.errors import ConfigError
from hbd.http import base_url, local_url

TOKEN_ENV = "HBD_TOKEN"
# A token shorter than this is guessable by anyone who can reach the port;
# `openssl rand -hex 32` gives 64 characters.
MIN_TOKEN_CHARS = 16
# A token file is one line; anything bigger is the wrong file.
MAX_TOKEN_FILE_BYTES = 4096
# Default TCP ports: the daemon's API and an executor agent's /v1 API.
DEFAULT_PORT = 8765
DEFAULT_EXECUTOR_PORT = 8766
# The seconds after which a trial whose executor stays unreachable is failed
# as lost (hbd.daemon.placement.LOST_AFTER, repeated to keep this module light).
DEFAULT_LOST_AFTER = 60.0
# Request bodies the daemon accepts: hbd.api.asgi.MAX_REQUEST_BODY_BYTES,
# repeated because hbd.api.asgi imports this module (importing it here would
# be circular); tests/test_settings.py checks that the two agree.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# How much of one trial's metrics file the agent ever parses:
# hbd.executor.metrics.DEFAULT_MAX_METRICS_FILE_BYTES, repeated to keep this
# module light; tests/executor/test_metrics.py checks that the two agree.
DEFAULT_MAX_METRICS_FILE_BYTES = 64 * 1024 * 1024

# The executor agent's retention and log caps: hbd.executor.agent's
# DEFAULT_RETAIN_SECONDS, DEFAULT_RETAIN_TRIALS, DEFAULT_LOG_CAP_BYTES and
# MIN_LOG_CAP_BYTES, repeated so that loading settings stays light;
# tests/executor/test_settings_agent.py checks that they agree.
DEFAULT_RETAIN_SECONDS = 7 * 24 * 3600.0
DEFAULT_RETAIN_TRIALS = 10_000
DEFAULT_LOG_CAP_BYTES = 64 * 1024 * 1024
MIN_LOG_CAP_BYTES = 4096
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """``7d``, ``36h``, ``90m``, ``30s`` or plain seconds -> seconds (else unchanged, for pydantic)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text and text[-1] in _DURATION_UNITS:
            try:
                return float(text[:-1]) * _DURATION_UNITS[text[-1]]
            except ValueError:
                pass
    return value


# Spec limits: hbd.core.limits.DEFAULT_MAX_TRIAL_RUNS and MAX_SPEC_BYTES (why
# they are what they are is said there), repeated so that reading settings does
# not import the core; tests/security/test_resource_bombs.py checks they agree.
DEFAULT_MAX_TRIAL_RUNS = 100_000
DEFAULT_MAX_SPEC_BYTES = 256 * 1024

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]

_config_file: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("hbd_config_file")


def data_dir() -> Path:
    """Where state lives: systemd's StateDirectory, else the XDG data directory."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])  # several directories: the first is ours
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "hbd"


def default_db() -> Path:
    return data_dir() / "hbd.db"


def default_workdir() -> Path:
    return data_dir() / "executor"


def is_loopback(host: str) -> bool:
    """True if ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere: treat as public


class _Common(BaseSettings):
    """Keys both services share."""

    host: str = "127.0.0.1"
    token_file: Path | None = None
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"
    # On SIGTERM, leave running trials running (an executor's own, or the
    # in-process agent's); the next start on the same workdir adopts them.
    keep_trials_on_exit: bool = True

    _token: str | None = PrivateAttr(default=None)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    ENV_PREFIX: ClassVar[str] = "HBD_"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = InitSettingsSource(settings_cls, init_kwargs=_config_file.get({}))
        return init_settings, env_settings, toml

    # ---- what the services read ----

    @property
    def token(self) -> str | None:
        """The bearer token, or None; never printed (see :meth:`public`)."""
        return self._token

    @property
    def origins(self) -> Mapping[str, str]:
        """Key -> where its value came from (``default``, ``HBD_PORT``, a path, ``--port``)."""
        return self._origins

    def public(self) -> dict[str, Any]:
        """The effective settings as JSON-able values, the token masked."""
        data = self.model_dump(mode="json")
        data["token"] = None if self._token is None else "********"
        return data

    # ---- loading ----

    @classmethod
    def load(
        cls,
        *,
        config: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, str] | None = None,
        require_token_beyond_loopback: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> Self:
        """Build the settings from every source; raise ConfigError naming the key.

        ``overrides`` are command-line values (None entries are dropped);
        ``flags`` names the option each came from, for messages.
        """
        env = os.environ if environ is None else environ
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        path = config if config is not None else env.get(cls.ENV_PREFIX + "CONFIG") or None
        file_data = _read_toml(Path(path)) if path else {}
        origins: dict[str, str] = {}
        for key in cls.model_fields:
            if key in given:
                origins[key] = (flags or {}).get(key, "command line")
            elif cls.ENV_PREFIX + key.upper() in env:
                origins[key] = cls.ENV_PREFIX + key.upper()
            elif key in file_data:
                origins[key] = str(path)
            else:
                origins[key] = "default"

        reset = _config_file.set(file_data)
        try:
            settings = cls(**given)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "?"
            top = str(first["loc"][0]) if first["loc"] else ""
            where = origins.get(top) or (str(path) if top in file_data else "default")
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = "not a setting" + (
                    " (the token is never a config key: set token_file)" if top == "token" else ""
                )
            raise ConfigError(f"{key}: {msg} (from {where})") from None
        except SettingsError as exc:
            # Raised for an environment value that is not JSON where a list is wanted.
            match = re.search(r'field "(\w+)"', str(exc))
            key = match.group(1) if match else "?"
            raise ConfigError(
                f'{key}: not valid JSON (a list is written \'["a", "b"]\') '
                f"(from {origins.get(key, 'the environment')})"
            ) from None
        finally:
            _config_file.reset(reset)

        settings._origins = origins
        settings._token, origins["token"] = _resolve_token(settings, env, origins)
        if require_token_beyond_loopback:
            settings.check_exposure()
        return settings

    def check_exposure(self) -> None:
        """Refuse to serve beyond loopback without a token (before anything binds)."""
        if self._token is None and not is_loopback(self.host):
            raise ConfigError(
                f"host: {self.host} is reachable from other machines, so a token is required: "
                f"set token_file, pass --token-file or set {TOKEN_ENV} "
                f"(from {self._origins.get('host', 'default')})"
            )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _resolve_token(
    settings: _Common, env: Mapping[str, str], origins: dict[str, str]
) -> tuple[str | None, str]:
    """--token-file, then HBD_TOKEN, then token_file from env or file."""
    file_origin = origins.get("token_file", "default")
    from_cli = settings.token_file is not None and file_origin.startswith("--")
    if settings.token_file is not None and (from_cli or TOKEN_ENV not in env):
        return _read_token_file(settings.token_file, file_origin), f"token_file ({file_origin})"
    if env.get(TOKEN_ENV):
        return _check_token(env[TOKEN_ENV].strip(), TOKEN_ENV), TOKEN_ENV
    return None, "none"


def _read_token_file(path: Path, origin: str) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"token_file: {path} is not a regular file (from {origin})")
        if info.st_size > MAX_TOKEN_FILE_BYTES:
            raise ConfigError(
                f"token_file: {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes (from {origin})"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"token_file: {path}: no such file (from {origin})") from None
    except PermissionError:
        raise ConfigError(f"token_file: {path}: permission denied (from {origin})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"token_file: {path} is not UTF-8 text (from {origin})") from None
    except OSError as exc:
        raise ConfigError(f"token_file: {path}: {exc.strerror or exc} (from {origin})") from None
    return _check_token(text.strip(), f"token_file {path}")


def _check_token(token: str, where: str) -> str:
    # Never echo the token itself in a message.
    if not token:
        raise ConfigError(f"token: {where} is empty")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"token: shorter than {MIN_TOKEN_CHARS} characters (from {where}); "
            "make one with `openssl rand -hex 32`"
        )
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ConfigError(f"token: must be printable ASCII without spaces (from {where})")
    return token


def token_file_mode_problem(path: Path) -> str | None:
    """A warning if the token file is readable by others than its owner."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"token_file {path} is readable by group or others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


class DaemonSettings(_Common):
    """``hbd serve``: the daemon, its API, and optionally an in-process executor."""

    model_config = SettingsConfigDict(env_prefix="HBD_", extra="forbid", validate_default=True)

    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    db: Path = Field(default_factory=default_db)
    local_executor: int = Field(default=0, ge=0, le=1024)  # slots of an in-process agent; 0: none
    local_workdir: Path | None = None  # the in-process agent's; default: beside the database
    executors: list[str] = Field(default_factory=list)
    # The URL executors call back to; default http://host:port. Set it when
    # host is 0.0.0.0 and executors run on other machines.
    advertise_url: str | None = None
    lost_after: float = Field(default=DEFAULT_LOST_AFTER, gt=0)
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=1024)
    # A sweep whose first N finished trial runs all failed stops (hbd.core.sweep's
    # FIRST_FAILURES_STOP; 0: never). Recorded in each sweep when submitted.
    first_failures_stop: int = Field(default=10, ge=0, le=1_000_000)
    # Limits on one submitted spec (issue 10; hbd.core.limits says why each).
    max_trial_runs: int = Field(default=DEFAULT_MAX_TRIAL_RUNS, ge=1, le=2**63 - 1)
    max_spec_bytes: int = Field(default=DEFAULT_MAX_SPEC_BYTES, ge=1024, le=64 * 1024 * 1024)

    # -- gpu helper: GPUs and checkpoints (docs/operations.md "GPUs and checkpoints")
    # GPU devices of the in-process agent: "auto" (what NVML reports), "none", "0,1".
    local_gpus: str = "auto"

    @field_validator("local_gpus", mode="before")
    @classmethod
    def _local_gpus(cls, value: Any) -> Any:
        return _gpu_list(value)

    # -- ckpt helper: where checkpoints live and which are kept
    # (docs/operations.md "Checkpoint retention"). Unset: each executor's own
    # directory; an absolute path every executor mounts; or an fsspec URL.
    checkpoints: str | None = Field(default=None, max_length=4096)
    # "resumable" (default): only what can still be resumed plus the best
    # trial's lineage; "all": never delete (hbd.core.retention).
    checkpoints_keep: Literal["all", "resumable"] = "resumable"

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from hbd.checkpoints import check_store  # light: standard library only

        value = value.strip()
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        check_store(value)  # ValueError: "must be an absolute path or a URL like s3://..."
        return value

    @property
    def shared_checkpoints(self) -> bool:
        """Whether every executor reaches every checkpoint (a promotion may run anywhere)."""
        return self.checkpoints is not None

    @field_validator("executors")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        # Any scheme with a registered backend (http(s) agents, ray://...).
        from hbd.http import EXECUTOR_BACKENDS as BACKENDS

        out = []
        for i, url in enumerate(urls):
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in BACKENDS or not rest.strip("/"):
                known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
                raise ValueError(f"entry {i}: {url!r} is not an executor URL (use {known})")
            out.append(base_url(url))
        if len(set(out)) != len(out):
            raise ValueError("the same executor URL appears twice")
        return out

    @field_validator("advertise_url")
    @classmethod
    def _advertise(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url

    @property
    def url(self) -> str:
        """Where a client on this host reaches the daemon."""
        return local_url(self.host, self.port)


class ExecutorSettings(_Common):
    """``hbd executor``: an executor agent running trials as local processes."""

    model_config = SettingsConfigDict(
        env_prefix="HBD_EXECUTOR_", extra="forbid", validate_default=True
    )
    ENV_PREFIX: ClassVar[str] = "HBD_EXECUTOR_"

    port: int = Field(default=DEFAULT_EXECUTOR_PORT, ge=0, le=65535)
    slots: int = Field(default=1, ge=1, le=1024)
    workdir: Path = Field(default_factory=default_workdir)
    trial_cwd: Path | None = None  # where trials run; default: the agent's working directory
    # Bytes of one trial's metrics file ever parsed; the rest is ignored (logged once).
    max_metrics_file_bytes: int = Field(default=DEFAULT_MAX_METRICS_FILE_BYTES, ge=0)
    # Finished trials are forgotten (memory and disk) this long after the
    # daemon took their result; a re-submission of a forgotten id runs again.
    retain: float = Field(default=DEFAULT_RETAIN_SECONDS, ge=0, le=10 * 366 * 86400.0)
    retain_trials: int = Field(default=DEFAULT_RETAIN_TRIALS, ge=0, le=10_000_000)
    # Each of a trial's stdout.log and stderr.log keeps at most this (head and tail).
    log_cap_bytes: int = Field(default=DEFAULT_LOG_CAP_BYTES, ge=MIN_LOG_CAP_BYTES)

    @field_validator("retain", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value)

    # -- gpu helper: GPUs and checkpoints (docs/operations.md "GPUs and checkpoints")
    # GPU devices trials get: "auto" (what NVML reports), "none", or ids "0,1,2,3".
    gpus: str = "auto"
    # Bytes of one checkpoint uploaded to / downloaded from a checkpoint store
    # (hbd.checkpoints.DEFAULT_MAX_CHECKPOINT_COPY_BYTES, repeated to keep this module light).
    max_checkpoint_copy_bytes: int = Field(default=256 * 1024**3, ge=0, le=2**62)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return _gpu_list(value)


def _gpu_list(value: Any) -> Any:
    """A ``gpus`` setting: a string (``auto``, ``none``, ``0,1``) or a TOML list of ids."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        from hbd.gpus import parse  # light, and only when the setting is read

        parse(value)  # ValueError names what is wrong
    return value


__all__ = [
    "DEFAULT_EXECUTOR_PORT",
    "DEFAULT_PORT",
    "MIN_TOKEN_CHARS",
    "TOKEN_ENV",
    "ConfigError",
    "DaemonSettings",
    "ExecutorSettings",
    "data_dir",
    "default_db",
    "is_loopback",
    "token_file_mode_problem",
]
