"""A synchronous client of the daemon, for notebooks and scripts: ``hbd.Client``.

    import hbd
    client = hbd.Client()                      # $HBD_URL / $HBD_TOKEN, else 127.0.0.1:8765
    sweep = client.submit("sweep.yaml")        # a path, YAML/JSON text, or a dict
    client.wait(sweep)
    df = client.results_frame(sweep)           # pandas: one column per param and metric

It speaks the same HTTP API as the async ``hbd.client.Client`` (what the CLI
uses) and raises the same errors (``ClientError``, ``SpecRejected``), but
with a plain ``httpx.Client``: no event loop, so it works in a Jupyter cell,
whose own loop is already running and would refuse ``anyio.run``.

pandas is an optional extra (``[pandas]``), imported only by
``results_frame``.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from hbd.client import (
    DEFAULT_TIMEOUT,
    DEFAULT_URL,
    FINISHED,
    STREAM_TIMEOUT,
    WAIT_POLL_SECONDS,
    ClientError,
    Event,
    EventStream,
    SpecRejected,
)
from hbd.core.vocabulary import TERMINAL_TRIAL_STATUSES
from hbd.http import auth_headers, base_url

if TYPE_CHECKING:
    import pandas

__all__ = ["Client", "ClientError", "Event", "SpecRejected"]

# A spec longer than this that names no existing file is taken as text: no
# path is that long (PATH_MAX is 4096 on Linux).
MAX_SPEC_PATH_CHARS = 4096
# The columns of results_frame before the params and metrics, in this order.
FRAME_COLUMNS = (
    "id",
    "bracket",
    "rung",
    "index",
    "resource",
    "status",
    "metric",
    "parent",
    "started_at",
    "ended_at",
    "duration",
)


def default_url() -> str:
    return os.environ.get("HBD_URL") or DEFAULT_URL


def default_token() -> str | None:
    """As the CLI finds it: ``$HBD_TOKEN``, else the file named by ``$HBD_TOKEN_FILE``."""
    if token := os.environ.get("HBD_TOKEN"):
        return token
    if path := os.environ.get("HBD_TOKEN_FILE"):
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ClientError(f"cannot read token file {path}: {exc.strerror}") from None
    return None


def spec_text(spec: str | os.PathLike[str] | Mapping[str, Any]) -> str:
    """The text to submit: a mapping as JSON, a path's contents, or the text itself."""
    if isinstance(spec, Mapping):
        return json.dumps(spec)
    if isinstance(spec, os.PathLike):
        return Path(spec).read_text()
    if "\n" not in spec and len(spec) <= MAX_SPEC_PATH_CHARS:
        try:
            return Path(spec).read_text()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass  # not a file: the text itself
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:  # one line of JSON is no file name
                raise
    return spec


class Client:
    """Blocking calls to an hbd daemon. Use as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url(url or default_url())
        token = token if token is not None else default_token()
        headers = auth_headers(token)
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=DEFAULT_TIMEOUT, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"hbd.Client({self.url!r})"

    # -- requests --------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the hbd daemon at {self.url} (is `hbd serve` running?)"
            ) from None
        except httpx.TimeoutException:
            raise ClientError(f"the hbd daemon at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}") from None
        if response.status_code >= 400:
            _raise_for(response)
        return response.json() if response.content else None

    def submit(
        self, spec: str | os.PathLike[str] | Mapping[str, Any], *, sweep_id: str | None = None
    ) -> str:
        """Submit a spec (a file path, YAML/JSON text, or a dict); returns the sweep id."""
        params = {"id": sweep_id} if sweep_id else None
        body = self._call("POST", "/v1/sweeps", content=spec_text(spec).encode(), params=params)
        return str(body["id"])

    def sweeps(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every sweep's summary (or only those with ``status``)."""
        return self._call("GET", "/v1/sweeps", params={"status": status} if status else None)  # type: ignore[no-any-return]

    def status(self, sweep: str) -> dict[str, Any]:
        """One sweep: status, reason, best trial so far, counts, brackets and rungs."""
        return self._call("GET", f"/v1/sweeps/{sweep}")  # type: ignore[no-any-return]

    def trials(
        self,
        sweep: str,
        *,
        status: str | None = None,
        bracket: int | None = None,
        rung: int | None = None,
    ) -> list[dict[str, Any]]:
        """The sweep's trial runs, optionally filtered."""
        params = {
            k: v
            for k, v in (("status", status), ("bracket", bracket), ("rung", rung))
            if v is not None
        }
        return self._call("GET", f"/v1/sweeps/{sweep}/trials", params=params)  # type: ignore[no-any-return]

    def results(self, sweep: str) -> list[dict[str, Any]]:
        """Every trial run that ended, best first by the sweep's metric (failed and
        metric-less runs last, then by trial order, as the daemon ranks them)."""
        detail = self.status(sweep)
        sign = -1.0 if detail["metric"]["optimization"] == "maximize" else 1.0
        ended = [t for t in self.trials(sweep) if t["status"] in TERMINAL_TRIAL_STATUSES]

        def key(t: Mapping[str, Any]) -> tuple[bool, float]:
            m = t["metric"]
            return (m is None, 0.0 if m is None else sign * float(m))

        return sorted(ended, key=key)  # stable: ties keep the daemon's trial order

    def cancel(self, sweep: str) -> bool:
        """Stop a sweep; False when it had already finished."""
        return bool(self._call("POST", f"/v1/sweeps/{sweep}/cancel")["cancelling"])

    def extend(self, sweep: str, iterations: int = 1) -> int:
        """More Hyperband iterations for a running sweep; its iterations in all."""
        answer = self._call("POST", f"/v1/sweeps/{sweep}/extend", params={"iterations": iterations})
        return int(answer["iterations"])

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")  # type: ignore[no-any-return]

    def wait(
        self,
        sweep: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Block until the sweep has finished; returns its final status.

        Raises TimeoutError after ``timeout`` seconds (None: wait for ever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            detail = self.status(sweep)
            if on_progress is not None:
                on_progress(detail)
            if detail["status"] in FINISHED:
                return detail
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"sweep {sweep} is still {detail['status']} after {timeout} s")
            time.sleep(WAIT_POLL_SECONDS)

    def events(
        self,
        sweep: str | None = None,
        *,
        after: int | None = None,
        types: Collection[str] | None = None,
        follow: bool = True,
    ) -> Iterator[Event]:
        """Every event after ``after`` (all sweeps, or ``sweep``'s), then the live tail.

        As the async client's: reconnects with ``Last-Event-ID`` so each event
        arrives once, in order; a sweep's stream ends after ``sweep.finished``;
        ``follow=False`` ends at the current end of the log. Close the iterator
        (or leave the ``for`` loop) to drop the connection.
        """
        stream = EventStream(self.url, sweep, after=after, types=types, follow=follow)
        while True:
            headers = stream.headers()
            try:
                with self._http.stream(
                    "GET",
                    stream.path,
                    params=stream.params,
                    headers=headers,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    todo = stream.answer(response.status_code)
                    if todo == "done":
                        return
                    if todo == "read":
                        for line in response.iter_lines():
                            if (event := stream.feed(line)) is not None:
                                yield event
                                if stream.ends_with(event):
                                    return
                        if not follow:
                            return
                    else:
                        response.read()
                        if todo == "refused":
                            _raise_for(response)
            except httpx.TransportError as exc:
                stream.broken(exc)
            time.sleep(stream.retry())

    def optuna_study(
        self, sweep: str, *, storage: Any = None, study_name: str | None = None
    ) -> Any:
        """The sweep as a new Optuna study (``optuna.Study``), one trial per ended trial run,
        with intermediate values: for ``optuna.visualization`` in a notebook.

        ``storage``: any Optuna storage or URL (default: in memory). What
        ``hbd export --optuna-journal`` writes (see ``hbd.export.optuna_journal``).
        Needs the optional Optuna extra.
        """
        from hbd.export.optuna_journal import EXPORT_EVENT_TYPES, fill_study, sweep_data

        detail = self.status(sweep)
        trials = self.trials(sweep)
        events = [
            (e.type, e.trial_id, e.payload)
            for e in self.events(sweep, types=EXPORT_EVENT_TYPES, follow=False)
        ]
        return fill_study(storage, sweep_data(detail, trials, events), study_name)

    def results_frame(self, sweep: str) -> pandas.DataFrame:
        """The sweep's trial runs as a pandas DataFrame, one row per run.

        Columns: ``FRAME_COLUMNS`` (``duration`` in seconds, times as UTC
        timestamps), then one ``param.<name>`` column per parameter and one
        ``metric.<name>`` column per metric any run reported (missing: NaN).
        Rows in the daemon's trial order.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "results_frame needs pandas: pip install pandas (or install hbd with its [pandas] extra)"
            ) from None
        trials = self.trials(sweep)
        params = sorted({k for t in trials for k in t["config"]})
        metrics = sorted({k for t in trials for k in t.get("metrics") or {}})
        rows = []
        for t in trials:
            start, end = t.get("started_at"), t.get("ended_at")
            row: dict[str, Any] = {c: t.get(c) for c in FRAME_COLUMNS}
            row["duration"] = end - start if start is not None and end is not None else None
            for p in params:
                row[f"param.{p}"] = t["config"].get(p)
            for m in metrics:
                row[f"metric.{m}"] = (t.get("metrics") or {}).get(m)
            rows.append(row)
        columns = [
            *FRAME_COLUMNS,
            *(f"param.{p}" for p in params),
            *(f"metric.{m}" for m in metrics),
        ]
        frame = pd.DataFrame(rows, columns=columns)
        for col in ("started_at", "ended_at"):
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        for col in ("duration", "metric", *(f"metric.{m}" for m in metrics)):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        return frame


def _raise_for(response: httpx.Response) -> NoReturn:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    if status == 422 and isinstance(body.get("errors"), list):
        raise SpecRejected(body["errors"])
    if status == 401:
        raise ClientError(
            f"the daemon at {response.request.url.host} refused the token "
            "(pass token=..., or set HBD_TOKEN or HBD_TOKEN_FILE)",
            status=status,
        )
    detail = body.get("detail", response.text[:200])
    if isinstance(detail, list):  # FastAPI's validation errors: say each in one line
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    raise ClientError(f"{detail} (HTTP {status})", status=status)
