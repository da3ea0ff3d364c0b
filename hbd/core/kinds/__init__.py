"""The parameter kinds' models, one module per family, each imported on first use.

``hbd.core.params`` is the public face: it names every kind and loads a
family's module only when one of its kinds is asked for (``kind_model``,
or a class imported by name). Building a pydantic model class costs about
as much as importing a small library, so a spec pays only for the families
it uses, and ``hbd validate`` starts that much sooner (issue 15).
"""
