"""Property-based requests generated from the OpenAPI document: the server never answers 5xx,
refuses what the schema forbids, and answers only documented statuses and shapes.

Bounded (a few dozen examples per operation) so the whole run stays well under two minutes.
The document is loaded from the package, the same bytes the server serves (checked in
test_objects_and_docs), because schemathesis' fixture-based loader does not run on pytest 9.
"""

from __future__ import annotations

import copy

import requests
import schemathesis
from api_testing import TOKEN, Api
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from handlers.openapi import spec

BOUNDED = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _without_auth() -> dict:
    """The document as it holds for a server without API_TOKEN: no security requirement."""
    document = copy.deepcopy(spec())
    document.pop("security", None)
    return document


class Bearer(requests.auth.AuthBase):
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {TOKEN}"
        return request


with_token = schemathesis.openapi.from_dict(spec())
# Given to schemathesis rather than added to every request, so that the cases it
# generates without the header (to check they are refused) really go without it.
with_token.auth.set_from_requests(Bearer())
without_token = schemathesis.openapi.from_dict(_without_auth())


def check(case: schemathesis.Case, server: Api) -> None:
    # Every other check stays on. positive_data_acceptance is off because a schema-valid
    # body can still name an unreachable URL or an unknown model: those are rightly 403/404/422.
    case.call_and_validate(base_url=server.url, excluded_checks=[positive_data_acceptance])


@with_token.parametrize()
@BOUNDED
def test_with_api_token(case: schemathesis.Case, strict_api: Api) -> None:
    """The strict configuration: bearer token required, no exempt hosts, no local paths."""
    check(case, strict_api)


@without_token.parametrize()
@BOUNDED
def test_with_import_root_and_exempt_host(case: schemathesis.Case, api: Api) -> None:
    """The trusted configuration: no token, local paths under IMPORT_ROOT, the file server exempt."""
    check(case, api)
