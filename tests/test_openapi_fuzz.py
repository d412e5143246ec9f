"""schemathesis against the running daemon's OpenAPI: no 5xx, no response that breaks the schema.

A real `retrotread run` on the simulated belt; every operation but the event stream is fuzzed
with the token (so control calls get past 401 into the supervisor). schemathesis's pytest
plugin does not load under pytest 9, so the test walks its Python API: one Hypothesis strategy
per operation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from daemon_proc import Daemon, daemon
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running() -> Iterator[Daemon]:
    with daemon("--driver", "sim://motorized?rate_hz=20", "--mode", "reverse") as d:
        yield d


def test_no_server_errors_and_responses_match_the_schema(running: Daemon) -> None:
    schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
    headers = {"Authorization": running.http.headers["Authorization"]}
    operations = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/v1/events":
            continue  # a stream that never ends by itself
        operations.append(op)
    assert len(operations) >= 12
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

        fuzz()
    assert running.proc.poll() is None  # the daemon is still up
    assert running.http.get("/healthz").json()["ok"] is True
