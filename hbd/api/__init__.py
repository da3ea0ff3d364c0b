"""HTTP layer: daemon routes, SSE, and the executor /v1 protocol models."""
