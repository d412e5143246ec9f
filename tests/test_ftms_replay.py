"""The FTMS driver against recorded GATT conversations (issue 14 point 5).

``ftms+replay://`` runs the real ``ftms://`` driver through bleak's real ``BleakClient`` facade on a
backend that plays a capture (``drivers.ftms.replay``): the machine's recorded bytes and timing,
not our simulator. The corpus is ``tests/captures/`` (each capture names the source of its real
bytes and says what is reconstructed; README there). A round trip proves the recorder
(``?record=FILE``) writes what the replay plays.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_proc import Daemon, daemon
from helpers import ROOT
from prometheus_client.parser import text_string_to_metric_families

from retrotread.drivers import (
    BeltSample,
    CommandRejected,
    ConfigError,
    DeviceEvent,
    DeviceEventKind,
    Driver,
    NotConnected,
    Speed,
    open_driver,
)
from retrotread.drivers.ftms.capture import FORMAT, CaptureError, load_capture
from retrotread.drivers.ftms.codec import decode_speed_range
from retrotread.drivers.ftms.replay import ReplayFtmsDriver
from retrotread.safety.envelope import Envelope, Grid
from retrotread.sims.faults import parse_faults
from retrotread.sims.ftms import SimFtmsDriver
from retrotread.sims.ftms_peripheral import FtmsPeripheral, SimMachine

CAPTURES = Path(__file__).parent / "captures"
E1L = CAPTURES / "urevo-e1l-reconstructed.jsonl"
RECORDS = CAPTURES / "decoder-records-reconstructed.jsonl"
WITHIN = 10.0


def replay(path: Path) -> ReplayFtmsDriver:
    drv = open_driver(f"ftms+replay://{path}")
    assert isinstance(drv, ReplayFtmsDriver)
    return drv


async def updates(driver: Driver, within: float = WITHIN) -> AsyncIterator[BeltSample | DeviceEvent]:
    async with asyncio.timeout(within):
        async for item in driver.samples():
            yield item


async def next_sample(driver: Driver, ok: object = lambda kmh: True) -> BeltSample:
    assert callable(ok)
    async for item in updates(driver):
        if isinstance(item, BeltSample) and ok(item.speed.kmh):
            return item
    raise AssertionError("update stream ended")


def test_every_capture_in_the_corpus_names_its_sources() -> None:
    paths = sorted(CAPTURES.glob("*.jsonl"))
    assert len(paths) >= 2
    for path in paths:
        capture = load_capture(path)
        header = capture.header
        assert header["format"] == FORMAT and capture.source
        # Plainly which bytes are a machine's and what was reconstructed (timing, order).
        assert header["real"] and header["reconstructed"], path
        assert any("timing" in line for line in header["reconstructed"]), path
        machine = [e for e in capture.events if e.kind in ("notify", "indicate", "read")]
        assert all(e.source for e in machine), [e.line for e in machine if not e.source]


async def test_urevo_e1l_connect_grid_write_type_real_record_start_and_stop_on_the_wire() -> None:
    # hardware.md (treadspan protocol-analysis/urevo-E1L): control point 0x24, grid 0.96-6.43 km/h
    # by 0.32; the standstill record is a Urevo Spacewalk 3S's (hassio-ftms #3, pyftms tests).
    drv = replay(E1L)
    async with drv:
        assert drv.connected and drv.capabilities.can_drive, drv.drive_refusal
        grid = drv.capabilities.speed_grid
        assert (grid.minimum.kmh, grid.maximum.kmh) == pytest.approx((0.96, 6.43))
        inside = Grid.inside(Envelope.reverse(), drv.capabilities)
        assert inside is not None  # S3: it arms, on the only two grid speeds inside the envelope
        step = inside.speeds.increment
        reachable = [round(inside.speed(n).kmh, 2) for n in range(inside.first, inside.last + 1, step)]
        assert reachable == [1.60, 1.92]
        standstill = await next_sample(drv)
        assert standstill.speed.kmh == 0.0 and standstill.distance_m == 0.0  # the Spacewalk 3S's bytes
        await drv.start(Speed.from_kmh(1.60))  # Start, wait for 0x04, then the speed (without response)
        moving = await next_sample(drv, lambda kmh: kmh > 0)
        assert moving.speed.kmh == pytest.approx(1.60)
        await drv.stop()
        assert [w.data.hex() for w in drv.replay.writes] == ["00", "07", "02a000", "0801"]
        assert all(w.response is False for w in drv.replay.writes)  # the capture's write type: none offered
    drv.replay.check()
    assert drv.replay.errors == []


async def test_real_records_decode_split_parts_merge_and_real_statuses_become_events() -> None:
    # Spacewalk 3S standstill (hassio-ftms #3), RonanB96/bluetooth-sig-python's More Data part and
    # 12.5 km/h record as one split record, and the FTMS v1.0 status bytes 0201, 03, ff (S10).
    drv = replay(RECORDS)
    async with drv:
        seen: list[BeltSample | DeviceEvent] = []
        async for item in updates(drv):
            seen.append(item)
            if isinstance(item, DeviceEvent) and item.kind is DeviceEventKind.CONTROL_LOST:
                break
        samples = [s for s in seen if isinstance(s, BeltSample)]
        assert [round(s.speed.kmh, 2) for s in samples] == [0.0, 12.5]
        assert samples[1].incline_pct == pytest.approx(2.5)  # from the first part, merged (ftms.md)
        kinds = [e.kind for e in seen if isinstance(e, DeviceEvent)]
        assert kinds == [DeviceEventKind.STOPPED_BY_USER, DeviceEventKind.SAFETY_KEY, DeviceEventKind.CONTROL_LOST]
        # The stop reaches the wire after control was lost: refused, control taken, stopped again.
        await drv.stop()
        assert [(w.data.hex(), w.response) for w in drv.replay.writes] == [
            ("00", True),
            ("0801", True),
            ("00", True),
            ("0801", True),
        ]
        assert drv.bad_packets == 0
    drv.replay.check()


async def test_the_replay_fails_loudly_when_the_driver_writes_what_the_capture_did_not() -> None:
    drv = replay(E1L)
    async with drv:
        await next_sample(drv)
        # The capture's next write is Start (07); a speed written first is not that conversation.
        with pytest.raises(CommandRejected, match=r"wrote 02c000 to 2ad9 .* where the capture \(line \d+\) expects 07"):
            await drv.set_speed(Speed.from_kmh(1.92))
        [error] = drv.replay.errors
        assert "02c000" in error and "urevo-e1l-reconstructed.jsonl" in error
        # The conversation ended there: every later write fails too, naming the first divergence.
        with pytest.raises(CommandRejected, match="the conversation ended there"):
            await drv.stop()
    with pytest.raises(Exception, match="expects 07"):
        drv.replay.check()


async def test_a_stop_the_capture_does_not_have_next_is_taken_answered_and_reported() -> None:
    # S5, a stop is never refused: where the capture's next write is Start (07), a stop is taken,
    # answered 800801 as the machine would (the driver's stop succeeds) and reported; the recorded
    # conversation then goes on from where it was.
    drv = replay(E1L)
    async with drv:
        await next_sample(drv)
        await drv.stop()
        await drv.emergency_stop()
        first, second = drv.replay.unrecorded_stops
        assert first.before is not None and (first.before.line, first.before.data) == (12, b"\x07")
        assert second.before == first.before and first.response is False  # the offered write type
        assert [w.data.hex() for w in drv.replay.writes] == ["00"]
        await drv.start(Speed.from_kmh(1.60))
        moving = await next_sample(drv, lambda kmh: kmh > 0)
        assert moving.speed.kmh == pytest.approx(1.60)
        await drv.stop()  # the capture's own stop: matched
        await drv.stop()  # after the connection's last recorded write: taken too
        assert [w.data.hex() for w in drv.replay.writes] == ["00", "07", "02a000", "0801"]
        assert len(drv.replay.unrecorded_stops) == 3 and drv.replay.unrecorded_stops[2].before is None
    drv.replay.check()


def with_stops_after_request_control(tmp_path: Path, stops: int) -> Path:
    """The E1L capture with ``stops`` recorded stops (each answered) between Request Control's
    answer and the standstill records: what a daemon's start-up stop (S15) and repeats look like."""
    lines = E1L.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if '"hex": "800001"' in line) + 1
    added = []
    for k in range(stops):
        t = 0.5 + 0.1 * k
        added.append(json.dumps({"t": t, "kind": "write", "uuid": "2ad9", "hex": "0801", "response": False}))
        added.append(json.dumps({"t": t + 0.05, "kind": "notify", "uuid": "2ad9", "hex": "800801", "source": "test"}))
    path = tmp_path / f"e1l-{stops}-stops.jsonl"
    path.write_text("\n".join([*lines[:at], *added, *lines[at:]]) + "\n", encoding="utf-8")
    return path


async def test_recorded_stop_repeats_the_client_did_not_make_are_passed_over(tmp_path: Path) -> None:
    # S5 repeats a stop until the belt reads 0: a recorded run may have repeated it more often than
    # this one. The client stopped once, then starts: the recorded repeats are passed over, listed.
    drv = replay(with_stops_after_request_control(tmp_path, 3))
    async with drv:
        await drv.stop()
        await drv.start(Speed.from_kmh(1.60))
        assert [w.data.hex() for w in drv.replay.writes] == ["00", "0801", "07", "02a000"]
        assert [e.data.hex() for e in drv.replay.skipped_stops] == ["0801", "0801"]
        assert drv.replay.unrecorded_stops == []
    drv.replay.check()


async def test_a_recorded_stop_the_client_never_made_is_still_a_divergence(tmp_path: Path) -> None:
    drv = replay(with_stops_after_request_control(tmp_path, 1))
    async with drv:
        with pytest.raises(CommandRejected, match=r"wrote 07 to 2ad9 .* where the capture \(line 10\) expects 0801"):
            await drv.start(Speed.from_kmh(1.60))
    with pytest.raises(Exception, match="expects 0801"):
        drv.replay.check()


async def test_a_write_type_the_control_point_does_not_offer_is_refused_as_bluez_would() -> None:
    # The Urevo E1L's control point has no write property: a write with response is ATT error 0x03.
    from bleak.exc import BleakGATTProtocolError

    drv = replay(E1L)
    async with drv:
        client = drv._client
        assert client is not None
        with pytest.raises(BleakGATTProtocolError):
            await client.write_gatt_char("2ad9", b"\x07", response=True)
        assert drv.replay.errors == [] and drv.replay.writes[-1].data == b"\x00"


async def test_a_session_recorded_with_record_replays_byte_for_byte(tmp_path: Path) -> None:
    # The recorder a user with a real machine runs (ftms://ADDRESS?record=FILE), here on the
    # simulated treadmill; the same session then runs against the recording.
    path = tmp_path / "session.jsonl"

    async def session(drv: Driver) -> list[float]:
        async with drv:
            kmh = [(await next_sample(drv)).speed.kmh]
            await drv.start(Speed.from_mph(1.0))
            kmh.append((await next_sample(drv, lambda v: v > 1.5)).speed.kmh)
            await drv.stop()
            return kmh

    recorded = await session(SimFtmsDriver(FtmsPeripheral(SimMachine(rate_hz=20.0)), record=path))
    capture = load_capture(path)
    assert capture.rate_hz == 20.0 and "recorded by retrotread" in capture.source
    cp = capture.characteristic("00002ad9-0000-1000-8000-00805f9b34fb")
    assert cp is not None and set(cp.properties) == {"write", "indicate"}
    writes = [e.data.hex() for e in capture.events if e.kind == "write"]
    assert writes == ["00", "07", "02a100", "0801"]  # 1.0 mph = 1.61 km/h
    assert any(e.kind == "indicate" for e in capture.events) and any(e.kind == "read" for e in capture.events)
    drv = replay(path)
    replayed = await session(drv)
    drv.replay.check()
    assert [w.data.hex() for w in drv.replay.writes] == writes
    assert replayed[0] == recorded[0] and replayed[1] == pytest.approx(recorded[1], abs=0.2)


def test_bad_capture_files_and_urls_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a capture file"):
        open_driver("ftms+replay://")
    with pytest.raises(CaptureError, match="cannot be read"):
        open_driver(f"ftms+replay://{tmp_path}/none.jsonl")
    with pytest.raises(ConfigError, match="has no option 'speed'"):
        open_driver(f"ftms+replay://{E1L}?speed=2")
    bad = tmp_path / "bad.jsonl"
    header = json.dumps({"kind": "capture", "format": FORMAT, "version": 1, "source": "test"})
    service = json.dumps(
        {"kind": "service", "uuid": "1826", "characteristics": [{"uuid": "2ad9", "properties": ["write"]}]}
    )
    for body, match in [
        ("{}", "the first line must be"),
        (json.dumps({"kind": "capture", "format": FORMAT, "version": 1}), "names its source"),
        (f"{header}\nnot json", "line 2: not JSON"),
        (f"{header}\n{service}\n" + json.dumps({"t": 1, "kind": "write", "uuid": "2ad9", "hex": "zz"}), "line 3: hex"),
        (f"{header}\n" + json.dumps({"t": 1, "kind": "notify", "uuid": "2acd", "hex": "00"}), "in no service line"),
        (f"{header}\n{service}\n" + json.dumps({"t": -1, "kind": "write", "uuid": "2ad9", "hex": "00"}), "t -1"),
        (f"{header}\n{service}\n" + json.dumps({"t": 1, "kind": "poke"}), "kind 'poke'"),
        (f"{header}\n{service}\n" + '{"t": Infinity, "kind": "disconnect"}', "t inf"),
    ]:
        bad.write_text(body + "\n")
        with pytest.raises(CaptureError, match=match):
            load_capture(bad)
    with pytest.raises(ConfigError, match="record= is empty"):
        open_driver("ftms://AA:BB:CC:DD:EE:FF?record=")
    with pytest.raises(ConfigError, match="record= is empty"):
        open_driver("ftms+sim://?record=")
    with pytest.raises(ConfigError, match="does not exist"):
        open_driver(f"ftms+sim://?record={tmp_path}/no/such/dir/c.jsonl")
    with pytest.raises(ConfigError, match="does not exist"):
        open_driver(f"ftms://AA:BB:CC:DD:EE:FF?record={tmp_path}/no/such/dir/c.jsonl")
    # Checking a URL (doctor does) creates no file: only open() does.
    open_driver(f"ftms://AA:BB:CC:DD:EE:FF?record={tmp_path}/c.jsonl")
    assert not (tmp_path / "c.jsonl").exists()


async def test_s9_a_recorded_link_drop_replays_and_the_first_write_back_is_the_stop(tmp_path: Path) -> None:
    # The simulated machine drops the link while the belt runs (fault unplug); the recording keeps
    # the drop and the second connection, whose first control point write is Stop (rule S9).
    path = tmp_path / "drop.jsonl"

    async def session(drv: Driver) -> None:
        async with drv:
            await next_sample(drv)
            await drv.start(Speed.from_mph(1.0))
            async for item in updates(drv):
                if isinstance(item, DeviceEvent) and item.kind is DeviceEventKind.CONNECTED:
                    break
            await drv.stop()

    peripheral = FtmsPeripheral(SimMachine(rate_hz=20.0, faults=parse_faults("unplug@1.5")))
    await session(SimFtmsDriver(peripheral, record=path, reconnect_first_s=0.05))
    capture = load_capture(path)
    assert len(capture.segments()) == 2
    second = capture.events[capture.segments()[1] :]
    assert next(e.data.hex() for e in second if e.kind == "write") == "0801"  # S9: a stop first
    drv = ReplayFtmsDriver(capture, reconnect_first_s=0.05)
    await session(drv)
    drv.replay.check()
    assert drv.replay.connections == 2
    assert [w.data.hex() for w in drv.replay.writes] == [e.data.hex() for e in capture.events if e.kind == "write"]


@pytest.mark.parametrize("path", sorted(CAPTURES.glob("*.jsonl")), ids=lambda p: p.stem)
async def test_every_capture_connects_reads_its_grid_writes_as_offered_and_decodes_every_record(path: Path) -> None:
    capture = load_capture(path)
    cp = capture.characteristic("00002ad9-0000-1000-8000-00805f9b34fb")
    assert cp is not None
    grid_read = next(e for e in capture.events if e.kind == "read" and e.uuid and e.uuid[4:8] == "2ad4")
    drv = replay(path)
    async with drv:
        assert drv.connected and drv.capabilities.can_drive, drv.drive_refusal
        speed_range = decode_speed_range(grid_read.data)
        grid = drv.capabilities.speed_grid
        assert (grid.minimum.kmh, grid.maximum.kmh, grid.increment) == pytest.approx(
            (speed_range.min_raw / 100, speed_range.max_raw / 100, speed_range.increment_raw)
        )
        # Request Control went out with the write type the control point offers.
        first = drv.replay.writes[0]
        assert first.data == b"\x00" and first.response == ("write" in cp.properties)
        async with asyncio.timeout(WITHIN):
            await drv.replay.waiting.wait()  # played up to the capture's next write
        data = [e for e in drv.replay.played if e.uuid and e.uuid[4:8] == "2acd"]
        assert data and drv.bad_packets == 0 and drv.bad_samples == 0
    drv.replay.check()


async def test_name_finds_the_recorded_machine_through_bleaks_scanner(tmp_path: Path) -> None:
    # ftms://?name=PREFIX finds a machine by its advertised name (BleakScanner); a replay of a
    # recording does the same through the real facade, on a scanner backend that hears the capture.
    path = tmp_path / "named.jsonl"
    async with SimFtmsDriver(FtmsPeripheral(SimMachine(rate_hz=20.0)), record=path) as recording:
        await next_sample(recording)
    assert load_capture(path).advertised_name == "RetroTread SIM"
    drv = open_driver(f"ftms+replay://{path}?name=RetroTread&timeout=5")
    assert isinstance(drv, ReplayFtmsDriver)
    async with drv:
        assert drv.connected and drv.replay.connections == 1
        await next_sample(drv)
    drv.replay.check()
    for url in (f"ftms+replay://{path}?name=Nope&timeout=0.2", f"ftms+replay://{E1L}?name=URevo&timeout=0.2"):
        with pytest.raises(NotConnected, match="no FTMS device named"):
            await open_driver(url).open()  # the E1L capture publishes no name: nothing to find by one


# -- a whole daemon on a replay (retrotread run --driver ftms+replay://...) -----------------------

UNRECORDED_STOP = r"replay .*: an unrecorded stop \(0801\)"


def replay_errors(log: str) -> list[str]:
    """The replay's divergences a daemon logged (each is an ERROR line naming the capture's line)."""
    return [line for line in log.splitlines() if " ERROR " in line and ".ftms.replay" in line]


@pytest.mark.slow
def test_a_daemon_runs_on_a_corpus_capture_and_an_http_estop_reaches_the_replayed_wire() -> None:
    # This capture is a bare driver session: the daemon's start-up stop (S15) and the estop are not
    # in it. The replay takes each (a stop is never refused, S5), answers 800801 as the machine
    # would and says so; the recorded conversation stays where it was.
    with daemon("--driver", f"ftms+replay://{E1L.relative_to(ROOT)}", "--mode", "reverse", cwd=ROOT) as d:
        state = d.until(lambda s: s["connected"] and s["belt"] is not None)
        # The Spacewalk 3S's standstill record, decoded from its real bytes; it arms (S3) because
        # the E1L's grid (0.96-6.43 km/h by 0.32, read from 0x2AD4) has speeds inside the envelope.
        assert state["belt"] == {
            "speed_mph": 0.0,
            "speed_kmh": 0.0,
            "incline_pct": 0.0,
            "distance_m": 0.0,
            "moving": False,
        }
        assert state["armed"] and state["device"] == {"units": "km/h"}
        d.wait_log(r"line 8: the client wrote 00 to 2ad9 \(without response\), as recorded")
        [startup] = d.wait_log(UNRECORDED_STOP)
        assert "where the capture has 07 next (line 12): answered 800801" in startup
        mark = len(d.log().splitlines())
        resp = d.post("/api/v1/estop", {"reason": "test"})
        assert resp.status_code == 202, resp.text
        assert d.wait_log(UNRECORDED_STOP, since=mark)  # on the replayed wire, and answered
        state = d.until(lambda s: s["stop"]["latched"])
        assert (state["stop"]["rule"], state["stop"]["reason"]) == ("S5", "estop")
        assert replay_errors(d.log()) == []


def samples_seen(d: Daemon) -> float:
    """How many belt samples the daemon has read (``/metrics``)."""
    text = d.http.get("/metrics").text
    families = text_string_to_metric_families(text)
    return next(s.value for f in families for s in f.samples if s.name == "retrotread_samples_total")


def run_a_session(driver: str, dwell: int = 0) -> tuple[float, str]:
    """``retrotread run`` on ``driver``: start the belt at the envelope's minimum (one speed write,
    no ramp: S4), stop it once it runs at that speed (1.29 km/h), SIGTERM. That speed as the state showed it,
    and the log.

    ``dwell``: samples to wait for before the start and before the stop. A replay's machine says
    only what the capture has before the next write, so the recording dwells and the replay does
    not: the replay's commands then come while the recorded records still flow.
    """
    with daemon("--driver", driver, "--mode", "reverse") as d:
        d.until(lambda s: s["connected"] and s["armed"] and s["belt"] is not None and not s["belt"]["moving"])
        goal = samples_seen(d) + dwell
        d.until(lambda _: samples_seen(d) >= goal)
        resp = d.post("/api/v1/belt/start", {"speed_mph": 0.8})
        assert resp.status_code == 202, resp.text
        # 0.8 mph on a 0.01 km/h grid is 1.29 km/h: the belt at its setpoint (it never overshoots).
        at_speed = d.until(lambda s: s["target_mph"] and abs(s["belt"]["speed_kmh"] - 1.29) < 0.004)
        moving: float = at_speed["belt"]["speed_mph"]
        goal = samples_seen(d) + dwell // 2
        d.until(lambda _: samples_seen(d) >= goal)
        assert d.post("/api/v1/belt/stop").status_code == 202
        d.until(lambda s: s["belt"]["speed_mph"] == 0.0 and s["target_mph"] is None)
        d.signal(signal.SIGTERM)  # its last stop (S15) is part of the session
        assert d.proc.wait(10) == 0
        return moving, d.log()


@pytest.mark.slow
def test_a_daemon_session_recorded_on_the_simulator_replays_through_a_daemon(tmp_path: Path) -> None:
    path = tmp_path / "daemon.jsonl"
    recorded, _ = run_a_session(f"ftms+sim://?rate_hz=20&record={path}", dwell=100)  # 5 s, 2.5 s
    capture = load_capture(path)
    writes = [e.data.hex() for e in capture.events if e.kind == "write"]
    # Request Control, the start-up stop (S15), the incline to 0, Start, 0.8 mph as 1.29 km/h, then
    # stops (S5 repeats them until the belt reads 0; SIGTERM's last one).
    assert writes[:5] == ["00", "0801", "030000", "07", "028100"] and set(writes[5:]) == {"0801"}, writes
    replayed, log = run_a_session(f"ftms+replay://{path}")
    assert replay_errors(log) == []
    taken = re.findall(r"line \d+: the client wrote (\w+) to 2ad9", log)
    assert taken[:5] == writes[:5] and set(taken[5:]) <= {"0801"}
    assert recorded == pytest.approx(1.29 / 1.609344, abs=0.005)  # 1.29 km/h, the belt at its setpoint
    assert replayed == pytest.approx(recorded, abs=0.005)  # decoded from the recorded records
