"""The OpenAPI document is the truth (issue 10, point 9): schemathesis, against a real ``arqscale api``.

Every operation of the served description gets generated requests, valid and invalid (positive and
negative data, the coverage phase's edge cases and undeclared methods), with the bearer token and
without it. No answer may be a server error, and every answer must be what the document says: a
declared status, the declared content type, a body matching the declared schema, declared headers;
invalid data must be refused and an undeclared method answered 405 with an ``Allow`` header that lists
exactly the documented methods. The API runs as a subprocess against the test redis-server. Bounded:
a few examples per operation, about a minute for both runs on a shared machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from api_processes import api_env, api_process
from arqscale.api.openapi import build_document
from redis_server import RedisServer

TOKEN = "fuzz-token-123"
LIMIT = 65536
schema = schemathesis.openapi.from_dict(build_document(LIMIT))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
# Invalid data may also be refused for its size: a batch over maxItems is over the body limit first.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@pytest.fixture(scope="module")
def api_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    env = api_env(redis_server.url, ARQSCALE_API_TOKEN=TOKEN, ARQSCALE_API_MAX_BODY_BYTES=str(LIMIT))
    with api_process(env, log) as url:
        yield url
    out = log.read_text(errors="replace")
    # A 500 from the catch-all is logged with its traceback: there must be none.
    assert "unexpected error" not in out, out
    assert TOKEN not in out


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with-token", "without-token"])
@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_document_is_the_truth(case: schemathesis.Case, api_url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    case.call_and_validate(base_url=api_url, headers=headers, checks=CHECKS, timeout=10)
