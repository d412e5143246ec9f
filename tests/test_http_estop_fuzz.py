"""Issue 10: a stop over HTTP is taken whatever comes with it (S5, S16).

A real ``retrotread run`` on the simulated belt, whose device logs every command it hears
(``trace``). Hypothesis throws arbitrary bytes, content types, sizes, encodings, tokens and Host
headers at ``POST /api/v1/estop``; after each, the device has heard one more stop and the stop is
latched. The answer, when the client gets one, is 202.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemon_proc import Daemon, daemon
from helpers import heard, wait_heard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/octet-stream",
        'garbage;;=; charset="nope',
        "application/json; charset=utf-16",
    ]
)
BODIES = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda r: json.dumps({"reason": r}).encode(), st.text(max_size=400)),
    st.builds(lambda n: b"x" * n, st.integers(0, 300_000)),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(1, 100_000)),
)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    trace = tmp_path_factory.mktemp("estop") / "device.jsonl"
    with daemon("--driver", f"sim://motorized?rate_hz=20&trace={trace}", "--mode", "reverse") as d:
        yield d, trace


@given(body=BODIES, content_type=CONTENT_TYPES, token=st.booleans(), host=st.sampled_from([None, "evil.example"]))
@example(body=b"stop", content_type="text/plain", token=False, host=None)
@example(body=b'{"reason": 5}', content_type="application/json", token=False, host=None)
@example(body=b'{"reason": "' + b"x" * 300 + b'"}', content_type="application/json", token=True, host=None)
@example(body=b'{"reason": "\\ud800"}', content_type="application/json", token=False, host=None)
@example(body=b'{"reason": "\xff\xfe"}', content_type="application/json", token=False, host=None)
@example(body=b"reason=stop", content_type="application/x-www-form-urlencoded", token=False, host="evil.example")
@example(body=b"x" * (10 * 1024 * 1024), content_type="application/json", token=False, host=None)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_any_estop_request_latches_a_stop_the_device_hears(
    running: tuple[Daemon, Path], body: bytes, content_type: str | None, token: bool, host: str | None
) -> None:
    d, trace = running
    before = heard(trace, "estop")
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if token:
        headers["authorization"] = d.http.headers["Authorization"]
    if host is not None:
        headers["host"] = host
    answer: httpx.Response | None = None
    with httpx.Client(base_url=d.url, timeout=10) as client:
        try:
            answer = client.post("/api/v1/estop", content=body, headers=headers)
        except httpx.TransportError:
            # Only a body far past what a stop reads may be cut off (the answer then closes).
            assert len(body) > 64 * 1024, "a small stop request lost its answer"
    wait_heard(trace, "estop", before)
    if answer is not None:
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"ok": True, "detail": ""}
    assert d.state()["stop"]["latched"]
    assert d.proc.poll() is None
