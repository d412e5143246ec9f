"""Figure B5: FTMS Treadmill Data packets decoded per second, ours against pyftms (performance.md).

    python bench/decode.py                  # ours only (pyftms needs Python >= 3.12)
    /tmp/bench312/bin/python bench/decode.py    # ours and pyftms in the same run, and the ratio

Prints one JSON line. The packets are the Treadmill Data vectors of tests/vectors/ftms.json plus
packets generated with our encoder in the layouts real treadmills send (a walk at 1.2-2.0 km/h
with distance, time and steps counting up). Every packet is one pyftms accepts (it refuses
padding), and both decoders are checked to agree on them before anything is timed. Trials of
the two decoders alternate, with the garbage collector off during a trial (as timeit does); a
trial decodes the whole mix PASSES times. Reported: packets per second of the median trial and
of the 99th-percentile (slow) trial, and the ratio of the medians (ours / pyftms).

This script must not need anything beyond the standard library, our ``drivers`` package and,
when present, pyftms.
"""

from __future__ import annotations

import datetime
import gc
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/decode.py` from a checkout, installed or not

from retrotread.drivers.ftms.codec import (  # noqa: E402 - needs the path above
    TreadmillData,
    decode_treadmill_data,
    encode_treadmill_data,
)

TRIALS = 101
PASSES = 5
GENERATED = 196
TARGET_RATIO = 5.0

# Layouts seen on real machines (flags, then what they carry):
REAL_LAYOUTS = {
    0x0484: "speed, distance, energy, elapsed (Horizon, qdomyos-zwift #175)",
    0x2484: "speed, distance, energy, elapsed, steps (FITSHOW FS-BT-T4 walking pads)",
    0x259C: "speed, distance, incline, elevation, energy, heart rate, elapsed, steps (Urevo)",
    0x040C: "speed, distance, incline, elapsed",
    0x0102: "speed, average speed, heart rate",
    0x0000: "speed only",
}


def _generated_packets(count: int) -> list[bytes]:
    rng = random.Random(0x2ACD)  # the same mix on every run
    layouts = list(REAL_LAYOUTS)
    packets = []
    distance_m, steps, energy = 0, 0, 0
    for elapsed_s in range(1, count + 1):  # one packet per second
        flags = layouts[elapsed_s % len(layouts)]
        speed_kmh = round(rng.uniform(1.2, 2.0), 2)
        distance_m += rng.randint(0, 1)
        steps += rng.randint(1, 2)
        energy += rng.randint(0, 1)
        fields: dict[str, Any] = {"speed_kmh": speed_kmh}
        if flags & 0x0002:
            fields["average_speed_kmh"] = round(rng.uniform(1.2, 2.0), 2)
        if flags & 0x0004:
            fields["distance_m"] = distance_m
        if flags & 0x0008:
            fields["incline_pct"], fields["ramp_deg"] = 0.0, 0.0
        if flags & 0x0010:
            fields["elevation_gain_up_m"], fields["elevation_gain_down_m"] = 0.0, 0.0
        if flags & 0x0080:
            fields["energy_total_kcal"] = energy
            fields["energy_per_hour_kcal"] = rng.randint(60, 200)
            fields["energy_per_minute_kcal"] = rng.randint(1, 3)
        if flags & 0x0100:
            fields["heart_rate_bpm"] = rng.randint(70, 130)
        if flags & 0x0400:
            fields["elapsed_s"] = elapsed_s
        if flags & 0x2000:
            fields["steps"] = steps
        packets.append(encode_treadmill_data(TreadmillData(flags=flags, **fields)))
    return packets


def _vector_packets() -> list[bytes]:
    vectors = json.loads((ROOT / "tests" / "vectors" / "ftms.json").read_text(encoding="utf-8"))
    return [bytes.fromhex(v["hex"]) for v in vectors["treadmill_data"]]


def _pyftms_decoder() -> tuple[Callable[[bytes], Any], str, str] | None:
    """pyftms's lowest bytes-to-record step: ``TreadmillData._deserialize`` on a stream.

    ``get_serializer(TreadmillData).deserialize(data)``, which its notification handler calls,
    only wraps the bytes in ``io.BytesIO`` and calls this.
    """
    try:
        from importlib.metadata import version

        from pyftms.models import TreadmillData as PyftmsTreadmillData  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    deserialize = PyftmsTreadmillData._deserialize
    bytes_io = io.BytesIO

    def decode(packet: bytes) -> Any:
        return deserialize(bytes_io(packet))

    return decode, "pyftms.models.TreadmillData._deserialize(io.BytesIO(packet))", version("pyftms")


def _agree(ours: TreadmillData, theirs: Any) -> bool:
    def same(a: float | None, b: float | None) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and abs(a - b) < 1e-9)

    return (
        same(ours.speed_kmh, theirs.speed_instant)
        and same(ours.average_speed_kmh, theirs.speed_average)
        and same(ours.distance_m, theirs.distance_total)
        and same(ours.elapsed_s, theirs.time_elapsed)
        and same(ours.heart_rate_bpm, theirs.heart_rate)
        and same(ours.steps, theirs.step_count)
        and same(ours.incline_pct, theirs.inclination.inclination if theirs.inclination else None)
    )


def _trial(decode: Callable[[bytes], Any], packets: list[bytes]) -> float:
    """Seconds to decode ``packets`` PASSES times, with the collector off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(PASSES):
            for packet in packets:
                decode(packet)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def _summary(durations: list[float], per_trial: int) -> dict[str, float]:
    p99 = statistics.quantiles(durations, n=100, method="inclusive")[98]
    return {
        "pps_median": round(per_trial / statistics.median(durations)),
        "pps_p99": round(per_trial / p99),
    }


def main() -> None:
    vectors = _vector_packets()
    packets = vectors + _generated_packets(GENERATED)
    pyftms = _pyftms_decoder()
    excluded = 0
    if pyftms is not None:
        accepted = []
        for packet in packets:
            try:
                theirs = pyftms[0](packet)
            except Exception:  # pyftms refuses padding (an assert): count what it refuses
                excluded += 1
                continue
            if not _agree(decode_treadmill_data(packet), theirs):
                raise SystemExit(f"decoders disagree on {packet.hex()}: {theirs!r}")
            accepted.append(packet)
        packets = accepted

    decoders: list[Callable[[bytes], Any]] = [decode_treadmill_data]
    if pyftms is not None:
        decoders.append(pyftms[0])
    for decode in decoders:  # warm up: our layout plans, pyftms's serializer caches
        _trial(decode, packets)
    durations: list[list[float]] = [[] for _ in decoders]
    for _ in range(TRIALS):
        for i, decode in enumerate(decoders):
            durations[i].append(_trial(decode, packets))

    per_trial = PASSES * len(packets)
    ours = {"function": "retrotread.drivers.ftms.codec.decode_treadmill_data", **_summary(durations[0], per_trial)}
    result: dict[str, Any] = {
        "figure": "B5",
        "what": "FTMS Treadmill Data packets decoded per second",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "packets": len(packets),
        "mix": {
            "vectors": len(vectors),
            "generated": GENERATED,
            "layouts": sorted({f"0x{p[0] | p[1] << 8:04x}" for p in packets}),
            "mean_bytes": round(statistics.fmean(len(p) for p in packets), 1),
        },
        "trials": TRIALS,
        "decodes_per_trial": per_trial,
        "p99": "packets/s of the 99th-percentile (slow) trial",
        "ours": ours,
        "pyftms": None,
        "ratio_median": None,
        "target_ratio": TARGET_RATIO,
    }
    if pyftms is None:
        result["note"] = (
            "pyftms not importable (it needs Python >= 3.12); run with a 3.12 venv holding pyftms "
            "and this checkout, e.g. /tmp/bench312/bin/python bench/decode.py"
        )
    else:
        theirs = {"function": pyftms[1], "version": pyftms[2], **_summary(durations[1], per_trial)}
        ratio = statistics.median(durations[1]) / statistics.median(durations[0])
        result.update(
            pyftms=theirs,
            ratio_median=round(ratio, 2),
            meets_target=ratio >= TARGET_RATIO,
            cross_checked=len(packets),
            excluded_by_pyftms=excluded,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
