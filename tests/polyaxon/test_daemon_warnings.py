"""A submitted Polyaxon operation: the daemon answers with its warnings and logs them once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import structlog

from hbd.api.routes import create_app
from hbd.specfile import resolve_spec
from tests.daemon.helpers import FakeExecutor, running_daemon

pytestmark = pytest.mark.anyio
SPEC = Path(__file__).parent / "specs" / "07-cluster-keys.yaml"


async def test_submit_answers_with_warnings_and_logs_them_once(tmp_path: Path) -> None:
    text = resolve_spec(SPEC.read_text(), SPEC.parent)
    async with running_daemon(tmp_path / "hbd.db", FakeExecutor(slots=1)) as daemon:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://hbd") as http:
            with structlog.testing.capture_logs() as logs:
                first = await http.post("/v1/sweeps?id=warned", content=text.encode())
                again = await http.post("/v1/sweeps?id=warned", content=text.encode())
    assert first.status_code == 201 and again.status_code == 200
    warnings = first.json()["warnings"]
    assert "queue: not used on a host (a Polyaxon cluster setting); ignored" in warnings
    assert any(w.startswith("component.run.sidecars:") for w in warnings)
    assert again.json()["warnings"] == warnings  # the answer always carries them
    logged = [e["warning"] for e in logs if e.get("event") == "spec warning"]
    assert logged == warnings  # logged once: the repeat created nothing


async def test_an_unresolved_path_ref_is_refused_over_the_api(tmp_path: Path) -> None:
    text = (SPEC.parent / "03-pathref.yaml").read_text()
    async with running_daemon(tmp_path / "hbd.db", FakeExecutor(slots=1)) as daemon:
        transport = httpx.ASGITransport(app=create_app(daemon))
        async with httpx.AsyncClient(transport=transport, base_url="http://hbd") as http:
            response = await http.post("/v1/sweeps", content=text.encode())
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == "pathRef" and "inline the component" in error["msg"]
