"""An async Python client of the hbd daemon's HTTP API (what the CLI uses).

    async with Client("http://127.0.0.1:8765") as hbd:
        sweep_id = await hbd.submit(open("sweep.yaml").read())
        detail = await hbd.wait(sweep_id)

Errors are ``ClientError`` with a one-line message fit for a terminal;
a refused spec is ``SpecRejected`` carrying every problem the daemon found.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
import httpx

DEFAULT_URL = "http://127.0.0.1:8765"
# The daemon answers API calls from its database in milliseconds; a call that
# takes longer than this means the daemon is stuck or the URL is wrong.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# How often wait() asks for a sweep's status.
WAIT_POLL_SECONDS = 0.5


class ClientError(Exception):
    """A request failed; the message says why in one line."""


class SpecRejected(ClientError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        lines = "\n".join(
            f"  - {e['loc']}: {e['msg']}" if e.get("loc") else f"  - {e['msg']}" for e in errors
        )
        super().__init__(f"the daemon refused the spec ({len(errors)} error(s)):\n{lines}")


FINISHED = frozenset({"succeeded", "stopped", "failed", "cancelled"})


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=DEFAULT_TIMEOUT, transport=transport
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the hbd daemon at {self.url} (is `hbd serve` running?)"
            ) from None
        except httpx.TimeoutException:
            raise ClientError(f"the hbd daemon at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {self.url} failed: {exc}") from None
        if response.status_code == 422 and "errors" in _json(response):
            raise SpecRejected(_json(response)["errors"])
        if response.status_code == 401:
            raise ClientError("the daemon wants a token: set HBD_TOKEN or pass --token-file")
        if response.status_code >= 400:
            detail = _json(response).get("detail", response.text[:200])
            raise ClientError(f"{detail} (HTTP {response.status_code})")
        return response.json() if response.content else None

    async def submit(self, spec_text: str, *, sweep_id: str | None = None) -> str:
        params = {"id": sweep_id} if sweep_id else None
        body = await self._call("POST", "/v1/sweeps", content=spec_text.encode(), params=params)
        return str(body["id"])

    async def sweeps(self, status: str | None = None) -> list[dict[str, Any]]:
        return await self._call("GET", "/v1/sweeps", params={"status": status} if status else None)  # type: ignore[no-any-return]

    async def sweep(self, sweep_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/sweeps/{sweep_id}")  # type: ignore[no-any-return]

    async def trials(self, sweep_id: str, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return await self._call("GET", f"/v1/sweeps/{sweep_id}/trials", params=params)  # type: ignore[no-any-return]

    async def cancel(self, sweep_id: str) -> bool:
        return bool((await self._call("POST", f"/v1/sweeps/{sweep_id}/cancel"))["cancelling"])

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/healthz")  # type: ignore[no-any-return]

    async def wait(
        self, sweep_id: str, *, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Poll until the sweep has finished; returns its final detail."""
        while True:
            detail = await self.sweep(sweep_id)
            if on_progress is not None:
                on_progress(detail)
            if detail["status"] in FINISHED:
                return detail
            await anyio.sleep(WAIT_POLL_SECONDS)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
