"""Error mapping: PostgREST/Postgres codes and HTTP statuses to the package's error classes."""

from __future__ import annotations

import httpx
import pytest
import respx

from supabase_identity import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    DataRejectedError,
    EndpointNotFoundError,
    IdentityClient,
    IdentityError,
    InternalServerError,
    MigrationsNotAppliedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SchemaNotExposedError,
    ValidationError,
)
from supabase_identity._exceptions import make_api_error

from .conftest import USER_ID

CASES: list[tuple[int, dict[str, str] | None, type[IdentityError]]] = [
    (
        406,
        {"code": "PGRST106", "message": "The schema must be one of: public"},
        SchemaNotExposedError,
    ),
    (
        404,
        {"code": "PGRST202", "message": "Could not find the function"},
        MigrationsNotAppliedError,
    ),
    (404, {"code": "PGRST205", "message": "Could not find the table"}, MigrationsNotAppliedError),
    (401, {"code": "PGRST301", "message": "JWSError JWSInvalidSignature"}, AuthenticationError),
    (401, {"code": "PGRST302", "message": "Anonymous access is disabled"}, AuthenticationError),
    (401, {"code": "PGRST303", "message": "JWT expired"}, AuthenticationError),
    (
        401,
        {"code": "42501", "message": "permission denied for schema identity"},
        PermissionDeniedError,
    ),
    (403, {"code": "42501", "message": "permission denied for table users"}, PermissionDeniedError),
    (406, {"code": "PGRST116", "message": "JSON object requested, 0 rows"}, NotFoundError),
    (400, {"code": "23514", "message": "violates check constraint"}, DataRejectedError),
    (400, {"code": "22P02", "message": "invalid input syntax for type uuid"}, DataRejectedError),
    (400, {"code": "PGRST100", "message": "failed to parse filter"}, APIStatusError),
    (400, {"code": "PGRST102", "message": "Empty or invalid json"}, DataRejectedError),
    (409, {"code": "23505", "message": "duplicate key value"}, ConflictError),
    (403, None, PermissionDeniedError),
    (401, None, AuthenticationError),
    (404, None, EndpointNotFoundError),
    (404, {"code": "P0002", "message": "no data found"}, NotFoundError),
    (400, None, DataRejectedError),
    (413, None, DataRejectedError),
    (418, None, APIStatusError),
    (408, None, APITimeoutError),
    (429, None, RateLimitError),
    (500, None, InternalServerError),
    (503, None, InternalServerError),
]

#: The Stainless tree: each class and the parents it must have (so ``except Parent`` catches it).
TREE: list[tuple[type[IdentityError], tuple[type[Exception], ...]]] = [
    (APIError, (IdentityError,)),
    (APIStatusError, (APIError,)),
    (DataRejectedError, (APIStatusError, ValidationError, ValueError)),
    (AuthenticationError, (APIStatusError,)),
    (PermissionDeniedError, (APIStatusError,)),
    (NotFoundError, (APIStatusError, LookupError)),
    (ConflictError, (APIStatusError,)),
    (RateLimitError, (APIStatusError, BackendUnavailableError)),
    (InternalServerError, (APIStatusError, BackendUnavailableError)),
    (SchemaNotExposedError, (APIStatusError, ConfigError)),
    (MigrationsNotAppliedError, (APIStatusError, ConfigError)),
    (EndpointNotFoundError, (APIStatusError, ConfigError)),
    (APIConnectionError, (APIError, BackendUnavailableError)),
    (APITimeoutError, (APIConnectionError,)),
    (ValidationError, (IdentityError, ValueError)),
]


@pytest.mark.parametrize(("status", "body", "expected"), CASES)
def test_make_api_error_maps_codes_then_statuses(
    status: int, body: dict[str, str] | None, expected: type[IdentityError]
) -> None:
    err = make_api_error(status, body, fallback_text="<html>gateway says no</html>")
    assert type(err) is expected
    assert err.status_code == status
    # Code written against the Stainless SDKs catches every answered error as APIStatusError.
    assert isinstance(err, APIStatusError) or (status == 408 and isinstance(err, APITimeoutError))
    if body is not None:
        assert err.code == body["code"]
        assert body["message"] in err.message


def test_schema_not_exposed_error_says_how_to_fix_it() -> None:
    err = make_api_error(406, {"code": "PGRST106", "message": "The schema must be one of: public"})
    text = str(err)
    assert "identity" in text
    assert "supabase/config.toml" in text
    assert "Exposed schemas" in text
    assert isinstance(err, ConfigError)


def test_missing_function_error_says_to_push_migrations() -> None:
    err = make_api_error(404, {"code": "PGRST202", "message": "Could not find the function"})
    assert "supabase db push" in str(err)


@pytest.mark.parametrize(("cls", "parents"), TREE)
def test_the_error_tree_has_the_stainless_shape(
    cls: type[IdentityError], parents: tuple[type[Exception], ...]
) -> None:
    for parent in parents:
        assert issubclass(cls, parent), f"{cls.__name__} must be a {parent.__name__}"


def test_only_transient_failures_are_backend_unavailable() -> None:
    transient = {APIConnectionError, APITimeoutError, RateLimitError, InternalServerError}
    for cls, _ in TREE:
        assert issubclass(cls, BackendUnavailableError) == (cls in transient), cls.__name__


def test_a_bad_argument_is_a_validation_error_but_no_api_error() -> None:
    err = ValidationError("limit must be 1..100", field="limit", rule="range")
    assert not isinstance(err, APIError)
    assert (err.field, err.rule, err.status_code) == ("limit", "range", None)


def test_validation_error_is_also_a_value_error() -> None:
    err = make_api_error(400, {"code": "23514", "message": "check"})
    assert isinstance(err, ValueError)
    assert isinstance(err, IdentityError)


@pytest.mark.parametrize(("status", "body", "expected"), CASES)
def test_client_raises_the_mapped_error_chained(
    client: IdentityClient,
    api: respx.MockRouter,
    status: int,
    body: dict[str, str] | None,
    expected: type[IdentityError],
) -> None:
    response = (
        httpx.Response(status, json=body) if body else httpx.Response(status, text="<h1>x</h1>")
    )
    api.post("/rpc/get_user_profile").mock(return_value=response)
    with pytest.raises(expected) as info:
        client.get_user_profile(USER_ID)
    assert info.value.status_code == status
