"""The error tree: abstract bases refuse instantiation; store errors are StoreErrors."""

from __future__ import annotations

import pytest

from hbd import errors


@pytest.mark.parametrize("cls", [errors.HbdError, errors.StoreError, errors.ExecutorError])
def test_abstract_bases_refuse_instantiation(cls: type[Exception]) -> None:
    with pytest.raises(TypeError, match="abstract"):
        cls("boom")


@pytest.mark.parametrize(
    "cls", [errors.StoreWriteError, errors.StoreReadError, errors.ConflictError]
)
def test_store_errors_are_concrete_store_errors(cls: type[errors.StoreError]) -> None:
    exc = cls("boom")
    assert isinstance(exc, errors.StoreError) and isinstance(exc, errors.HbdError)
    assert str(exc) == "boom"


def test_schema_too_new_says_what_to_do() -> None:
    exc = errors.SchemaTooNew(path="/x.db", found=9, known=2)
    assert isinstance(exc, errors.StoreError)
    assert "9" in str(exc) and "2" in str(exc) and "upgrade" in str(exc)
    assert (exc.found, exc.known) == (9, 2)


def test_executor_and_not_found_branches() -> None:
    assert issubclass(errors.ExecutorUnavailable, errors.ExecutorError)
    assert issubclass(errors.ExecutorRejected, errors.ExecutorError)
    assert not issubclass(errors.NotFound, errors.StoreError)
    errors.NotFound("sweep x")
