"""``GET /metrics``: Prometheus text, read from the controller at scrape time.

A custom collector (prometheus-client's recommended way to export values another object owns)
so nothing is counted twice and no face keeps state of its own.

The machine's own description (``Driver.device``: FTMS Device Information, CSAFE GetVersion and
counters, hardware.md "What a gym operator reads from CSAFE") is exported as it is known:
``retrotread_device_info{maker,model,firmware,serial} 1`` and one gauge per counter the machine
answered. What it did not answer is left out, never exported as 0 (nothing invented).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from retrotread.daemon.controller import Controller
from retrotread.drivers.types import DeviceInfo

SECONDS_PER_HOUR = 3600.0


class TreadmillCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def collect(self) -> Iterator[Metric]:
        c = self.c
        snap = c.snapshot()
        labels = ["treadmill"]
        ident = [c.id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(ident, value)
            return g

        yield gauge("retrotread_belt_speed_mph", "Measured belt speed.", snap.belt.speed_mph if snap.belt else 0.0)
        yield gauge("retrotread_target_speed_mph", "Commanded target speed (0 when stopped).", snap.target_mph or 0.0)
        yield gauge("retrotread_stop_latched", "1 while the emergency stop is latched.", float(snap.stop.latched))
        yield gauge("retrotread_connected", "1 while the driver is connected.", float(snap.connected))
        age = c.sample_age()
        yield gauge(
            "retrotread_sample_age_seconds", "Seconds since the last belt sample.", -1.0 if age is None else age
        )
        yield gauge("retrotread_session_running", "1 while a session runs.", float(snap.session is not None))
        yield gauge("retrotread_event_subscribers", "Faces subscribed to the state hub.", float(c.hub.subscribers))

        samples = CounterMetricFamily("retrotread_samples", "Belt samples received.", labels=labels)
        samples.add_metric(ident, c.samples_seen)
        yield samples
        reconnects = CounterMetricFamily("retrotread_driver_reconnects", "Driver reconnections.", labels=labels)
        reconnects.add_metric(ident, c.reconnects)
        yield reconnects
        driver = CounterMetricFamily(
            "retrotread_driver_events", "The driver's own counters, by name.", labels=[*labels, "counter"]
        )
        for name, n in sorted(c.driver_stats().items()):
            driver.add_metric([*ident, name], n)
        yield driver
        stops = CounterMetricFamily("retrotread_emergency_stops", "Emergency stops by rule.", labels=[*labels, "rule"])
        for rule, n in sorted(c.stops_by_rule.items()):
            stops.add_metric([*ident, rule], n)
        yield stops
        sessions = CounterMetricFamily(
            "retrotread_sessions", "Sessions ended, by outcome.", labels=[*labels, "outcome"]
        )
        for outcome, n in sorted(c.sessions_by_outcome.items()):
            sessions.add_metric([*ident, outcome], n)
        yield sessions
        sets = CounterMetricFamily("retrotread_sets", "Sets ended, by outcome.", labels=[*labels, "outcome"])
        for outcome, n in sorted(c.sets_by_outcome.items()):
            sets.add_metric([*ident, outcome], n)
        yield sets
        device = c.device
        if device is not None:
            yield from device_metrics(device, labels, ident)


def device_metrics(device: DeviceInfo, labels: list[str], ident: list[str]) -> Iterator[Metric]:
    """The machine's description and counters; each only when the machine answered it."""
    described = {
        "maker": device.maker,
        "model": device.model,
        "firmware": device.firmware,
        "serial": device.serial,
    }
    if any(value is not None for value in described.values()):
        info = InfoMetricFamily(
            "retrotread_device",
            "What the machine says it is (FTMS Device Information, CSAFE GetVersion).",
            labels=labels,
        )
        # An absent label and an empty one are the same to Prometheus: unknown fields are "".
        info.add_metric(ident, {k: v or "" for k, v in described.items()})
        yield info
    counters = (
        # Base units (Prometheus naming): the machine's hours of use as seconds.
        (
            "retrotread_device_use_seconds",
            "The machine's own hours-of-use counter (CSAFE GetUtilization), in seconds.",
            None if device.hours_of_use is None else device.hours_of_use * SECONDS_PER_HOUR,
        ),
        (
            "retrotread_device_odometer_meters",
            "The machine's own odometer (CSAFE GetOdometer).",
            device.odometer_m,
        ),
        (
            "retrotread_device_error_code",
            "The machine's last error code (CSAFE GetErrorCode; 0: none).",
            device.error_code,
        ),
        (
            "retrotread_device_service_code",
            "The machine's service code (CSAFE GetServiceCode; 0: none).",
            device.service_code,
        ),
    )
    for name, doc, value in counters:
        if value is not None:
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            gauge.add_metric(ident, float(value))
            yield gauge


def render(controller: Controller) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TreadmillCollector(controller))
    return generate_latest(registry)
