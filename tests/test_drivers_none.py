"""``none``: no treadmill, a plain set timer (S13: measure nothing, drive nothing)."""

from __future__ import annotations

import asyncio

import pytest
from daemon_proc import daemon

from retrotread.drivers.errors import ConfigError, Unsupported
from retrotread.drivers.registry import open_driver
from retrotread.drivers.units import Speed


@pytest.mark.parametrize("url", ["none", "none://", "NONE"])
def test_none_needs_no_url_syntax(url: str) -> None:
    driver = open_driver(url)
    assert driver.url == "none://"
    assert driver.capabilities.can_drive is False


@pytest.mark.parametrize("url", ["none:///dev/ttyUSB0", "none://?rate_hz=5", "none://host"])
def test_none_takes_no_device_and_no_options(url: str) -> None:
    with pytest.raises(ConfigError, match="takes no device"):
        open_driver(url)


async def test_none_reports_nothing_until_closed_and_refuses_motion() -> None:
    driver = open_driver("none")
    await driver.open()
    assert driver.connected
    stream = driver.samples()
    first = asyncio.ensure_future(anext(stream, None))
    await asyncio.sleep(0)
    assert not first.done()  # waiting, not ended: a timer runs until it is closed
    with pytest.raises(Unsupported, match="S13"):
        await driver.start(Speed.from_mph(1.0))
    await driver.emergency_stop()  # a stop is never refused (S5)
    await driver.close()
    assert await first is None  # nothing measured, nothing invented: the stream just ends
    assert not driver.connected


@pytest.mark.slow
def test_s13_a_daemon_on_none_times_a_session_and_refuses_to_drive() -> None:
    with daemon("--driver", "none", "--mode", "deadmill") as d:
        state = d.state()
        assert state["driver"] == "none://" and state["belt"] is None
        refused = d.post("/api/v1/belt/start", {"speed_mph": 1.0})
        assert refused.status_code == 409 and refused.json()["rule"] == "S13"
        assert d.post("/api/v1/session", {"plan": "2x1s/1s,countdown=0s"}).status_code == 201
        d.until(lambda s: s["session"] is None)
        [record] = d.http.get("/api/v1/history").json()
        assert record["outcome"] == "completed" and len(record["sets"]) == 2
        assert record["driver"] == "none://"
