"""The daemon's web page at ``/``: sweeps, brackets and rungs, live learning curves.

Plain HTML, JavaScript and SVG shipped as package data (``hbd/web/static``)
and served by the daemon itself: no CDN, no build step. ``hbd.web.app``
holds the ASGI layer that serves it and its login (see that module for how a
browser, which cannot put a bearer header on an EventSource, authenticates).
"""
