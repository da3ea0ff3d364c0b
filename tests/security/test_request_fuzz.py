"""Hostile and random requests: never a 500, never a traceback (issue 10.9, 10.10 and the fuzz run).

The fixed cases are the integers that do not fit SQLite; the fuzz runs are
bounded hypothesis searches (a few seconds each) against the spec parser and
against the routes of a real daemon over HTTP.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hbd.api.docs import render
from hbd.api.routes import create_app
from hbd.api.server import protected_app
from hbd.core.errors import SpecError
from hbd.core.spec import load_spec
from hbd.daemon.app import Daemon
from hbd.store.log import Store
from tests.e2e.conftest import sweep_yaml

BIG = str(2**63)
# Examples per fuzz run: enough to reach every route and field many times,
# few enough to stay within a few seconds on a shared CI machine.
FUZZ_EXAMPLES = 100
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

VALID = yaml.safe_load(sweep_yaml(Path("/tmp/hbd-fuzz.jsonl")))


def assert_clean(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


# ---------------------------------------------------------------- fixed cases


@pytest.mark.parametrize(
    ("path", "params", "headers", "field"),
    [
        ("/v1/sweeps/{id}/trials", {"bracket": BIG}, {}, "bracket"),
        ("/v1/sweeps/{id}/trials", {"rung": BIG}, {}, "rung"),
        ("/v1/events", {"after": BIG, "follow": "false"}, {}, "after"),
        ("/v1/sweeps/{id}/events", {"after": BIG, "follow": "false"}, {}, "after"),
        ("/v1/events", {"follow": "false"}, {"Last-Event-ID": BIG}, "Last-Event-ID"),
        ("/v1/events", {"follow": "false"}, {"Last-Event-ID": "-1"}, "Last-Event-ID"),
    ],
)
def test_integers_beyond_sqlite_are_422_naming_the_field(
    daemon_url: str, path: str, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    with httpx.Client(base_url=daemon_url, timeout=30) as http:
        created = http.post("/v1/sweeps", content=json.dumps(VALID))
        assert created.status_code in (200, 201), created.text
        r = http.get(path.format(id=created.json()["id"]), params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert_clean(r)


def test_a_spec_with_a_seed_beyond_sqlite_is_422_naming_it(daemon_url: str) -> None:
    data = json.loads(json.dumps(VALID))
    data["matrix"]["seed"] = 2**63
    with httpx.Client(base_url=daemon_url, timeout=30) as http:
        r = http.post("/v1/sweeps", content=json.dumps(data))
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["errors"]] == ["matrix.seed"]


# ---------------------------------------------------------------- openapi and /docs


def every_route(routes: list[Any]) -> list[tuple[str, str]]:
    """(path, method) of every API route, through included routers (no prefixes are used)."""
    out = []
    for r in routes:
        if isinstance(r, APIRoute):
            out += [(r.path, m.lower()) for m in r.methods if r.include_in_schema]
        elif hasattr(r, "original_router"):  # FastAPI >= 0.16x keeps included routers nested
            out += every_route(r.original_router.routes)
    return sorted(set(out))


def test_openapi_lists_every_route_and_docs_show_them_offline(daemon_url: str) -> None:
    # The same app the daemon serves (protected_app adds /metrics), unwrapped.
    app: Any = protected_app(Daemon(cast(Store, None)), None, 1024 * 1024)
    while not hasattr(app, "routes"):  # WebPage(BearerAuth(BodySizeLimit(FastAPI)))
        app = app.app
    routes = every_route(app.routes)
    for expected in [("/v1/events", "get"), ("/metrics", "get"), ("/v1/sweeps", "post")]:
        assert expected in routes
    with httpx.Client(base_url=daemon_url, timeout=30) as http:
        schema = http.get("/openapi.json")
        docs = http.get("/docs")
    assert schema.status_code == 200, schema.text
    paths = schema.json()["paths"]
    for path, method in routes:
        assert method in paths.get(path, {}), (path, method)
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    for path, method in routes:
        assert f"{method}-{path}" in docs.text
    # Offline: no script, stylesheet or image is fetched from anywhere.
    assert "<script" not in docs.text and "<link" not in docs.text and "<img" not in docs.text
    assert "cdn" not in docs.text.lower()


def test_the_docs_page_escapes_what_the_schema_holds() -> None:
    page = render(
        {"info": {"title": "<b>x</b>"}, "paths": {"/a<script>": {"get": {"summary": "<i>"}}}}
    )
    assert "<script>" not in page and "<b>x" not in page and "<i>" not in page


def test_a_bare_app_serves_its_schema() -> None:
    assert "/healthz" in create_app(Daemon(cast(Store, None))).openapi()["paths"]


# ---------------------------------------------------------------- fuzz: the spec parser

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_PATHS = [
    ("matrix", "maxIterations"),
    ("matrix", "eta"),
    ("matrix", "seed"),
    ("matrix", "concurrency"),
    ("matrix", "params"),
    ("matrix", "params", "x"),
    ("matrix", "metric"),
    ("matrix", "metric", "name"),
    ("matrix", "resource"),
    ("matrix", "earlyStopping"),
    ("component", "inputs"),
    ("component", "container", "command"),
    ("component", "container", "args"),
    ("name",),
    ("termination",),
]


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    data = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_PATHS))
        holder = data
        for step in path[:-1]:
            holder = holder.setdefault(step, {}) if isinstance(holder, dict) else {}
        if isinstance(holder, dict):
            holder[path[-1]] = draw(_json)
    return data


def _spec_text(data: Any, as_yaml: bool) -> str:
    if as_yaml:
        return yaml.safe_dump(data)
    return json.dumps(data, allow_nan=True)


@FUZZ
@given(data=mutated_specs(), as_yaml=st.booleans())
def test_fuzzed_specs_raise_spec_errors_only(data: Any, as_yaml: bool) -> None:
    try:
        load_spec(_spec_text(data, as_yaml))
    except SpecError as exc:
        assert exc.problems
        str(exc).encode("utf-8")  # printable and sendable as it is


@FUZZ
@given(text=st.text(alphabet=string.printable + "&*[]{}!|>-:#'\"\x00é", max_size=300))
def test_fuzzed_text_raises_spec_errors_only(text: str) -> None:
    try:
        load_spec(text)
    except SpecError:
        pass


# ---------------------------------------------------------------- fuzz: the HTTP routes

_ids = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-_.%", min_size=1, max_size=70),
    st.just("x" * 300),
)
_query_values = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.text(max_size=12),
    st.sampled_from(["true", "false", "", "1e400", "NaN", "running", "trial.succeeded"]),
)


def _header_value(v: str) -> str:
    # An HTTP client cannot send control characters or edge whitespace in a header.
    return re.sub("[\x00-\x1f\x7f]", "", v).strip()


_requests = st.one_of(
    st.tuples(
        st.just("POST"),
        st.just("/v1/sweeps"),
        st.fixed_dictionaries({}, optional={"id": _ids}),
        st.one_of(
            mutated_specs().map(json.dumps),
            st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
            _json.map(json.dumps),
        ),
        st.just({}),
    ),
    st.tuples(
        st.just("POST"),
        st.just("/v1/callbacks"),
        st.just({}),
        st.one_of(
            _json.map(json.dumps),
            st.fixed_dictionaries(
                {
                    "kind": st.sampled_from(["metrics", "status", "x"]),
                    "trial_id": _ids,
                    "sweep_id": _ids,
                    "seq": st.integers(min_value=-(2**70), max_value=2**70),
                    "metrics": st.dictionaries(st.text(max_size=5), _scalars, max_size=3),
                    "status": _json,
                }
            ).map(json.dumps),
        ),
        st.just({}),
    ),
    st.tuples(
        st.just("GET"),
        st.sampled_from(
            [
                "/v1/sweeps",
                "/v1/sweeps/{id}",
                "/v1/sweeps/{id}/trials",
                "/v1/sweeps/{id}/events",
                "/v1/events",
                "/healthz",
                "/metrics",
            ]
        ),
        st.dictionaries(
            st.sampled_from(["status", "bracket", "rung", "after", "type", "follow"]),
            _query_values,
            max_size=3,
        ),
        st.just(""),
        st.fixed_dictionaries(
            {},
            optional={"Last-Event-ID": _query_values.map(_header_value)},
        ),
    ),
    st.tuples(
        st.just("POST"), st.just("/v1/sweeps/{id}/cancel"), st.just({}), st.just(""), st.just({})
    ),
)


@pytest.fixture(scope="module")
def http(daemon_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon_url, timeout=30) as client:
        yield client


@FUZZ
@given(request=_requests, sweep_id=_ids)
def test_fuzzed_requests_never_get_a_500_or_a_traceback(
    http: httpx.Client,
    request: tuple[str, str, dict[str, str], str, dict[str, str]],
    sweep_id: str,
) -> None:
    method, path, params, body, headers = request
    if "events" in path:
        params = {**params, "follow": "false"}  # a replay that ends, not a live tail
    r = http.request(
        method,
        path.replace("{id}", sweep_id),
        params=params,
        content=body.encode("utf-8", "surrogatepass"),
        # Raw bytes: a header may carry any octet, not only ASCII.
        headers={k: v.encode("utf-8", "surrogatepass") for k, v in headers.items()},
    )
    assert_clean(r)
