"""``GET /docs``: the API reference as one self-contained HTML page.

FastAPI's Swagger UI and ReDoc pages load their JavaScript and CSS from a
CDN, so on an offline training host (the usual place for hbd) ``/docs`` was a
blank page. This page is rendered here from the same OpenAPI schema that
``GET /openapi.json`` serves, with no script and no external asset: every
route, its parameters and its responses, readable anywhere and testable
without a browser. The machine-readable schema stays at ``/openapi.json`` for
tools (openapi-generator, Postman, a local Swagger UI).
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}
h2{margin-top:2em;font-size:1.05em;font-family:ui-monospace,monospace}
.m{display:inline-block;min-width:4.5em;font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
code{font-family:ui-monospace,monospace}
"""


def _params(operation: dict[str, Any]) -> str:
    rows = []
    for p in operation.get("parameters", []):
        schema = p.get("schema", {})
        kind = schema.get("type") or " | ".join(
            str(s.get("type", "")) for s in schema.get("anyOf", []) if s.get("type") != "null"
        )
        rows.append(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p.get('in', ''))}</td>"
            f"<td>{escape(kind)}</td><td>{'yes' if p.get('required') else ''}</td>"
            f"<td>{escape(p.get('description', ''))}</td></tr>"
        )
    if not rows:
        return ""
    head = "<tr><th>parameter</th><th>in</th><th>type</th><th>required</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render(schema: dict[str, Any]) -> str:
    """The HTML page of an OpenAPI schema (pure; tested directly)."""
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{escape(info.get('title', 'API'))} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>",
        f"<p>{escape(info.get('summary', ''))}. Every route but <code>/healthz</code> needs "
        "<code>Authorization: Bearer TOKEN</code> when the daemon has a token. "
        "The schema: <a href='openapi.json'><code>/openapi.json</code></a>.</p>",
    ]
    for path, methods in sorted(schema.get("paths", {}).items()):
        for method, op in methods.items():
            statuses = ", ".join(sorted(op.get("responses", {})))
            parts.append(
                f"<h2 id='{escape(method)}-{escape(path)}'><span class='m'>{escape(method.upper())}"
                f"</span>{escape(path)}</h2><p>{escape(op.get('summary', ''))}"
                f" <small>(responses: {escape(statuses)})</small></p>{_params(op)}"
            )
    parts.append("</body></html>")
    return "".join(parts)


def add_docs(app: FastAPI) -> None:
    """Serve the page at ``/docs`` (create the app with ``docs_url=None, redoc_url=None``)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(render(app.openapi()))
