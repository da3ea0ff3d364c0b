"""The 16 parameter kinds of a Polyaxon matrix, as validated pydantic models.

Each kind is ``{kind: <name>, value: <form>}``. The value may be written as a
list (``[0, 1]``), a mapping with Polyaxon's field names (``{low: 0, high: 1}``)
or an ``"a:b:c"`` string; all three normalise to one value model, so the rest
of hbd sees a single shape. Unlike Polyaxon, list items beyond the known
fields are an error rather than silently dropped, and every check that
Polyaxon defers to sampling time (empty grids, bad scales, ``geomspace``
through 0, ...) happens here, at submission.

The kinds' models live in ``hbd.core.kinds``, one module per family, and are
made on first use: this module names them all (``KIND_FAMILIES``; each class
can be imported from here) but imports a family only when one of its kinds is
asked for, so a spec pays only for the kinds it uses (issue 15: pydantic
model classes are costly to make, and ``hbd validate`` must start fast).

Grid arithmetic (size and n-th point) lives on the value models so that
validation (``spec``) and sampling (``space``) cannot disagree about it.
Exact ``Fraction`` arithmetic on the decimal the user wrote keeps ``range``
and ``q`` grids free of float drift (0.1 * 3 is 0.3, not 0.30000000000000004).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, PlainValidator
from pydantic_core import PydanticKnownError

from hbd.core.kinds.shared import (
    MAX_EXP_ARG,
    NORMAL_TAIL_SCALES,
    PCHOICE_TOLERANCE,
    Frozen,
    Number,
    exact,
    json_native,
)

__all__ = [
    "KIND_CLASSES",
    "KIND_FAMILIES",
    "KIND_MODELS",
    "MAX_EXP_ARG",
    "NORMAL_TAIL_SCALES",
    "NUMERIC_KINDS",
    "PARAM_KINDS",
    "PCHOICE_TOLERANCE",
    "ChoiceParam",
    "DateRangeParam",
    "DateRangeValue",
    "DateTimeRangeParam",
    "DateTimeRangeValue",
    "Frozen",
    "GeomspaceParam",
    "GeomspaceValue",
    "LinspaceParam",
    "LinspaceValue",
    "LogNormalParam",
    "LogNormalValue",
    "LogUniformParam",
    "LogUniformValue",
    "LogspaceParam",
    "LogspaceValue",
    "NormalParam",
    "NormalValue",
    "Number",
    "PChoiceParam",
    "Param",
    "ParamOfKind",
    "QLogNormalParam",
    "QLogNormalValue",
    "QLogUniformParam",
    "QLogUniformValue",
    "QNormalParam",
    "QNormalValue",
    "QUniformParam",
    "QUniformValue",
    "RangeParam",
    "RangeValue",
    "UniformParam",
    "UniformValue",
    "exact",
    "json_native",
    "kind_model",
    "validate_param",
]


# ---------------------------------------------------------------- the kinds

# Each kind's family: the module of hbd.core.kinds that defines its model, in
# the order of the ``Param`` union (error messages list the kinds in this order).
KIND_FAMILIES: dict[str, str] = {
    "choice": "choice",
    "pchoice": "choice",
    "range": "grid",
    "linspace": "grid",
    "logspace": "grid",
    "geomspace": "grid",
    "uniform": "uniform",
    "quniform": "uniform",
    "loguniform": "uniform",
    "qloguniform": "uniform",
    "normal": "normal",
    "qnormal": "normal",
    "lognormal": "normal",
    "qlognormal": "normal",
    "daterange": "dates",
    "datetimerange": "dates",
}

# Each kind's model class, by name.
KIND_CLASSES: dict[str, str] = {
    "choice": "ChoiceParam",
    "pchoice": "PChoiceParam",
    "range": "RangeParam",
    "linspace": "LinspaceParam",
    "logspace": "LogspaceParam",
    "geomspace": "GeomspaceParam",
    "uniform": "UniformParam",
    "quniform": "QUniformParam",
    "loguniform": "LogUniformParam",
    "qloguniform": "QLogUniformParam",
    "normal": "NormalParam",
    "qnormal": "QNormalParam",
    "lognormal": "LogNormalParam",
    "qlognormal": "QLogNormalParam",
    "daterange": "DateRangeParam",
    "datetimerange": "DateTimeRangeParam",
}

# Every class the families define (kinds and their value forms) -> its family,
# for ``from hbd.core.params import RangeValue`` (a test checks the table).
_CLASS_FAMILIES: dict[str, str] = {
    **{KIND_CLASSES[kind]: family for kind, family in KIND_FAMILIES.items()},
    "RangeValue": "grid",
    "LinspaceValue": "grid",
    "LogspaceValue": "grid",
    "GeomspaceValue": "grid",
    "UniformValue": "uniform",
    "LogUniformValue": "uniform",
    "QUniformValue": "uniform",
    "QLogUniformValue": "uniform",
    "NormalValue": "normal",
    "QNormalValue": "normal",
    "LogNormalValue": "normal",
    "QLogNormalValue": "normal",
    "DateRangeValue": "dates",
    "DateTimeRangeValue": "dates",
}

if TYPE_CHECKING:
    from hbd.core.kinds.choice import ChoiceParam, PChoiceParam
    from hbd.core.kinds.dates import (
        DateRangeParam,
        DateRangeValue,
        DateTimeRangeParam,
        DateTimeRangeValue,
    )
    from hbd.core.kinds.grid import (
        GeomspaceParam,
        GeomspaceValue,
        LinspaceParam,
        LinspaceValue,
        LogspaceParam,
        LogspaceValue,
        RangeParam,
        RangeValue,
    )
    from hbd.core.kinds.normal import (
        LogNormalParam,
        LogNormalValue,
        NormalParam,
        NormalValue,
        QLogNormalParam,
        QLogNormalValue,
        QNormalParam,
        QNormalValue,
    )
    from hbd.core.kinds.uniform import (
        LogUniformParam,
        LogUniformValue,
        QLogUniformParam,
        QLogUniformValue,
        QUniformParam,
        QUniformValue,
        UniformParam,
        UniformValue,
    )

    # Each kind's model (``kind_model``), every family imported.
    KIND_MODELS: dict[str, type[Frozen]]

    # Any parameter: the discriminated union of every kind (built on first use).
    Param = Annotated[
        ChoiceParam
        | PChoiceParam
        | RangeParam
        | LinspaceParam
        | LogspaceParam
        | GeomspaceParam
        | UniformParam
        | QUniformParam
        | LogUniformParam
        | QLogUniformParam
        | NormalParam
        | QNormalParam
        | LogNormalParam
        | QLogNormalParam
        | DateRangeParam
        | DateTimeRangeParam,
        Field(discriminator="kind"),
    ]


def kind_model(kind: str) -> type[Frozen]:
    """The model of ``kind`` (a key of ``KIND_FAMILIES``), its family imported on first use."""
    family = import_module(f"hbd.core.kinds.{KIND_FAMILIES[kind]}")
    model: type[Frozen] = getattr(family, KIND_CLASSES[kind])
    return model


def __getattr__(name: str) -> Any:
    # PEP 562: a class is made when first named, with the rest of its family;
    # the names that need every kind (``Param``, ``KIND_MODELS``) make them all.
    family = _CLASS_FAMILIES.get(name)
    if family is not None:
        return getattr(import_module(f"hbd.core.kinds.{family}"), name)
    value: Any
    if name == "KIND_MODELS":
        value = {kind: kind_model(kind) for kind in KIND_FAMILIES}
    elif name == "Param":
        models = [kind_model(kind) for kind in KIND_FAMILIES]
        value = Annotated[functools.reduce(operator.or_, models), Field(discriminator="kind")]
    else:
        raise AttributeError(f"module 'hbd.core.params' has no attribute {name!r}")
    globals()[name] = value  # made once
    return value


_KIND = "'kind'"  # the discriminator, quoted as pydantic quotes it in its errors
_EXPECTED_TAGS = ", ".join(f"'{k}'" for k in KIND_FAMILIES)
_MISSING = object()


def validate_param(v: object) -> Any:
    """One matrix param, validated by the model of its ``kind`` alone.

    The same result and the same errors (types, locations, context) as the
    ``Param`` discriminated union, without building all 16 kinds' validators
    when a module is imported: a spec pays only for the kinds it uses, and
    ``hbd validate`` starts that much sooner. Each kind's model is built on
    its first use (``defer_build``).
    """
    if isinstance(v, Mapping):
        tag = v.get("kind", _MISSING)
    elif isinstance(v, BaseModel):
        tag = getattr(v, "kind", _MISSING)
    else:
        raise PydanticKnownError("model_attributes_type")
    if tag is _MISSING:
        raise PydanticKnownError("union_tag_not_found", {"discriminator": _KIND})
    if not isinstance(tag, str) or tag not in KIND_FAMILIES:
        raise PydanticKnownError(
            "union_tag_invalid",
            {"discriminator": _KIND, "tag": str(tag), "expected_tags": _EXPECTED_TAGS},
        )
    # A ValidationError raised here keeps its locations, under this param's.
    return kind_model(tag).model_validate(v)


if TYPE_CHECKING:
    ParamOfKind = Param
else:
    # What a spec's `matrix.params` values are validated with (see validate_param).
    ParamOfKind = Annotated[Any, PlainValidator(validate_param)]

# Kinds whose values are numbers, so the input they feed must be int or float.
NUMERIC_KINDS = frozenset(
    {
        "range",
        "linspace",
        "logspace",
        "geomspace",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "lognormal",
        "qlognormal",
    }
)

PARAM_KINDS = NUMERIC_KINDS | {"choice", "pchoice", "daterange", "datetimerange"}
