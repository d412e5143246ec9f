"""FTMS quirks (issue 14 point 3): each quirk handled is a test that names its source.

Sources are those of ../shared/docs/hardware.md. Every test runs the real ``ftms://`` driver through
the real bleak client over the simulated treadmill (``ftms+sim://``) built to behave like the
machine named, and reads what went over the air from the peripheral's own record.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from contract import wait_speed
from helpers import start_until_latched

from retrotread.drivers import CommandRejected, ConfigError, Speed, open_driver
from retrotread.drivers.ftms.codec import (
    ControlOpcode,
    SetTargetSpeed,
    TreadmillData,
    encode_treadmill_data,
    truncated_speed,
)
from retrotread.drivers.ftms.quirks import WireUnit, quirks_for
from retrotread.drivers.units import SpeedUnit
from retrotread.sims.ftms import SimFtmsDriver


def sim(query: str) -> SimFtmsDriver:
    drv = open_driver(f"ftms+sim://?rate_hz=20&{query}")
    assert isinstance(drv, SimFtmsDriver)
    return drv


def speeds_written(drv: SimFtmsDriver) -> list[int]:
    return [w.request.speed_raw for w in drv.peripheral.writes if isinstance(w.request, SetTargetSpeed)]


def ops(drv: SimFtmsDriver) -> list[ControlOpcode]:
    return [ControlOpcode(w.request.op) for w in drv.peripheral.writes if w.request is not None]


def true_mph(drv: SimFtmsDriver) -> float:
    return Speed(drv.peripheral.belt.speed_mps).mph


# -- units ------------------------------------------------------------------------------------


async def test_horizon_7_0at_takes_set_target_speed_in_mph() -> None:
    # qdomyos-zwift PRs #4721, #4904, horizontreadmill.cpp: Horizon 7.0AT / T202 read Set Target
    # Speed as mph. Without the quirk, "1.61 km/h" runs its belt at 1.61 mph.
    async with sim("name=Horizon 7.0AT&lie=mph-in") as drv:
        assert drv.quirks.takes is WireUnit.MPH and "horizontreadmill.cpp" in drv.quirks.sources[0]
        assert drv.capabilities.speed_grid.unit is SpeedUnit.MPH_HUNDREDTHS
        await drv.start(Speed.from_mph(1.0))
        seen = await wait_speed(drv, lambda mph: mph > 0.995)
        assert speeds_written(drv) == [100]  # 1.00 mph in hundredths
        assert seen.speed.mph == pytest.approx(1.0, abs=0.02) and true_mph(drv) == pytest.approx(1.0, abs=0.02)
        await drv.emergency_stop()


async def test_bowflex_t9_reports_mph_in_the_kmh_field() -> None:
    # qdomyos-zwift PR #4364: Bowflex T9 reports mph. Without the quirk it reads 0.62 x the belt.
    async with sim("name=Bowflex T9&lie=mph-out") as drv:
        await drv.start(Speed.from_mph(1.0))
        seen = await wait_speed(drv, lambda mph: mph > 0.995)
        assert speeds_written(drv) == [161]  # it takes km/h as the spec says: 1.61 km/h
        assert seen.speed.mph == pytest.approx(true_mph(drv), abs=0.05)
        await drv.emergency_stop()


async def test_fitshow_walking_pad_found_by_its_device_information_model_number() -> None:
    # justintout/treadmill README: a FitShow FS-BT-T4's Supported Speed Range 0.6-3.8 is mph. Keyed by
    # the Device Information model number (0x2A24), whatever the pad advertises as its name.
    async with sim("model=FS-BT-T4&lie=mph-in&min_kmh=0.6&max_kmh=3.8&increment=0.1") as drv:
        grid = drv.capabilities.speed_grid
        assert grid.unit is SpeedUnit.MPH_HUNDREDTHS
        assert grid.minimum.mph == pytest.approx(0.6) and grid.maximum.mph == pytest.approx(3.8)
        await drv.start(Speed.from_mph(1.0))
        await wait_speed(drv, lambda mph: mph > 0.995)
        assert speeds_written(drv) == [100] and true_mph(drv) == pytest.approx(1.0, abs=0.02)
        await drv.emergency_stop()


async def test_the_url_unit_drives_a_machine_that_takes_and_reports_mph_unlisted() -> None:
    # The machine S7's unit check cannot see (it agrees with itself on the wire): ?unit=mph, what the
    # unit-mismatch message tells a user to set, makes the belt run at what was asked.
    async with sim("lie=mph&unit=mph") as drv:
        await drv.start(Speed.from_mph(1.0))
        seen = await wait_speed(drv, lambda mph: mph > 0.995)
        assert true_mph(drv) == pytest.approx(1.0, abs=0.02) and seen.speed.mph == pytest.approx(1.0, abs=0.02)
        await drv.emergency_stop()
    with pytest.raises(ConfigError, match="unit='furlongs'"):
        open_driver("ftms://AA:BB:CC:DD:EE:FF?unit=furlongs")


# -- the start sequence -----------------------------------------------------------------------


async def test_kingsmith_the_first_speed_waits_for_the_motor_after_start() -> None:
    # mcdax/walkingpad-controller ftms.py (KingSmith drops the link on a speed write while the motor
    # spins up) and qdomyos-zwift #5100 (TM11GY counts down 3 s): after Start wait for status 0x04.
    async with sim("countdown=1") as drv:
        await drv.start(Speed.from_mph(1.0))
        assert drv.connected and drv.reconnects == 0
        log = drv.peripheral.log
        started = [t for t, what, _ in log if what == "write" and _.startswith("07")]
        speed = [w.t for w in drv.peripheral.writes if isinstance(w.request, SetTargetSpeed)]
        assert started and speed and speed[0] - started[0] >= 1.0  # written once the countdown ended
        await wait_speed(drv, lambda mph: mph > 0.995)
        await drv.emergency_stop()


async def test_s5_a_stop_while_the_start_waits_for_the_motor_goes_out_at_once_and_no_speed_follows() -> None:
    async with sim("countdown=5") as drv:
        start = asyncio.create_task(drv.start(Speed.from_mph(1.0)))
        # Sample by sample (20 Hz) until Start went out and the driver waits for the motor.
        await wait_speed(drv, lambda _: ControlOpcode.START_OR_RESUME in ops(drv))
        await drv.emergency_stop()  # the procedure slot is free while the start waits
        with pytest.raises(CommandRejected, match="a stop was asked for meanwhile"):
            await start
        assert ops(drv)[-1] is ControlOpcode.STOP_OR_PAUSE
        assert speeds_written(drv) == []


async def test_tm11gy_never_gets_start_while_its_belt_runs() -> None:
    # qdomyos-zwift #5100: Start while running toggles pause on a TM11GY.
    async with sim("name=TM11GY&lie=mph-in") as drv:
        assert drv.quirks.never_resend_start
        await drv.start(Speed.from_mph(1.0))
        await wait_speed(drv, lambda mph: mph > 0.5)
        await drv.start(Speed.from_mph(1.1))
        assert ops(drv).count(ControlOpcode.START_OR_RESUME) == 1
        assert speeds_written(drv)[-1] == 110
        await drv.emergency_stop()


async def test_technogym_myrun_gets_control_and_start_before_every_speed() -> None:
    # qdomyos-zwift forceSpeed: Technogym MyRun needs Request Control + Start before every speed
    # write; the simulated one ignores a speed that no Start came right before.
    async with sim("name=MyRun 1234&needs_start=1") as drv:
        assert drv.quirks.start_before_speed and "forceSpeed" in drv.quirks.sources[0]
        await drv.start(Speed.from_mph(0.8))
        await wait_speed(drv, lambda mph: mph > 0.795)
        await drv.set_speed(Speed.from_mph(1.0))
        await wait_speed(drv, lambda mph: mph > 0.995)
        tail = ops(drv)[-3:]
        assert tail == [ControlOpcode.REQUEST_CONTROL, ControlOpcode.START_OR_RESUME, ControlOpcode.SET_TARGET_SPEED]
        await drv.emergency_stop()
    assert quirks_for("RetroTread SIM", None).sources == ()  # an unknown machine: the spec's path


# -- the link ---------------------------------------------------------------------------------


async def test_urevo_e1l_control_point_takes_write_without_response() -> None:
    # treadspan protocol-analysis/urevo-E1L: the control point's properties are 0x24 (write without
    # response + indicate). A write with response is refused with ATT "write not permitted".
    async with sim("without_response=1") as drv:
        assert drv.capabilities.can_drive, drv.drive_refusal
        await drv.start(Speed.from_mph(1.0))
        await wait_speed(drv, lambda mph: mph > 0.995)
        await drv.emergency_stop()


async def test_ks_mc21_gets_its_subscriptions_staggered() -> None:
    # qdomyos-zwift: KS-MC21 needs 100/200/300 ms between subscriptions (CCCD writes).
    async with sim("name=KS-MC21") as drv:
        times = [t for t, what, _ in drv.peripheral.log if what == "subscribe"]
        assert len(times) >= 3
        assert all(b - a >= drv.quirks.cccd_gap_s for a, b in itertools.pairwise(times))
        assert drv.quirks.cccd_gap_s >= 0.1


async def test_matrix_touchxl_records_cut_at_20_bytes_keep_their_speed() -> None:
    # TrackMyIndoorWorkout test/matrix_treadmill_test.dart: flags promise 30-32 bytes, 20 arrive.
    async with sim("truncate=20") as drv:
        await drv.start(Speed.from_mph(1.0))
        seen = await wait_speed(drv, lambda mph: mph > 0.995)
        assert seen.speed.mph == pytest.approx(1.0, abs=0.02)
        assert drv.truncated_packets > 0 and drv.bad_packets == 0
        await drv.emergency_stop()


def test_truncated_speed_reads_only_a_cut_record_with_its_speed_intact() -> None:
    full = encode_treadmill_data(
        TreadmillData(
            speed_kmh=3.2,
            average_speed_kmh=3.0,
            distance_m=10,
            incline_pct=0.0,
            elevation_gain_up_m=0.0,
            elevation_gain_down_m=0.0,
            energy_total_kcal=1,
            energy_per_hour_kcal=100,
            energy_per_minute_kcal=2,
            elapsed_s=5,
        )
    )
    assert len(full) > 20
    speed = truncated_speed(full[:20])  # what the Matrix TouchXL sends
    assert speed is not None and speed.kmh == pytest.approx(3.2)
    assert truncated_speed(full) is None  # whole: not a truncation
    assert truncated_speed(full[:6]) is None  # cut anywhere else: not the quirk, a broken packet
    more = bytes((full[0] | 0x01, full[1])) + full[2:20]
    assert truncated_speed(more) is None  # more data: this part has no speed
    garbage = bytes((0xFE, 0xFF)) + full[2:20]
    assert truncated_speed(garbage) is None  # reserved flag bits: garbage never reads as a speed


async def test_device_information_is_read_into_the_device_description() -> None:
    async with sim("model=T202&name=Horizon T202") as drv:
        device = drv.device
        assert device is not None
        assert (device.maker, device.model, device.firmware) == ("Retrotread Sim", "T202", "1.0")
        assert device.units == "mph" and device.quirks == drv.quirks.sources


async def test_s7_an_unlisted_ftms_machine_taking_mph_latches_unit_mismatch_in_the_daemon() -> None:
    # hardware.md "Units that lie": an unknown machine (no quirk) that takes mph and reports km/h
    # honestly reads 1.609 x its command; the controller's supervisor latches unit-mismatch (S7).
    from retrotread.daemon.controller import Controller
    from retrotread.safety import Mode, Rule, SafetyConfig

    drv = sim("lie=mph-in")
    async with Controller(drv, treadmill_id="t", safety=SafetyConfig(mode=Mode.REVERSE)) as c:
        latch = await start_until_latched(c, Speed.from_mph(0.8))
        assert (latch.reason, latch.rule) == ("unit-mismatch", Rule.S7)
        assert speeds_written(drv)[0] == 129  # what the daemon believes is 0.8 mph: 1.29 km/h
