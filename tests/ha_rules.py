"""Home Assistant's rules for an MQTT device discovery payload, written out for the tests
(``homeassistant/components/mqtt``, Core 2025.4: ``discovery.py``, ``schemas.py``, the platforms'
schemas). ``tests/test_discovery.py`` explains the ones got wrong before; ``test_mqtt_ha`` checks a
real daemon's payload with them too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

# homeassistant/components/mqtt/const.py SUPPORTED_COMPONENTS (the platforms we could use)
SUPPORTED = {"binary_sensor", "button", "event", "number", "select", "sensor", "switch", "text", "update"}
# schemas.py SHARED_OPTIONS: the only device-level options a component inherits
SHARED_OPTIONS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "command_topic",
    "payload_available",
    "payload_not_available",
    "state_topic",
}
# schemas.py DEVICE_DISCOVERY_SCHEMA (with its availability part), keys at the top level
TOP_LEVEL = SHARED_OPTIONS | {"dev", "device", "o", "origin", "cmps", "components", "qos", "encoding"}
DEVICE_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
}


def _url(value: Any) -> bool:
    parts = urlsplit(str(value))
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _topic(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not set(value) & {"+", "#", "\0"}


def ha_rules(config: dict[str, Any]) -> list[str]:
    """What Home Assistant would reject or get wrong in a device discovery payload (empty: none)."""
    bad: list[str] = []
    if set(config) - TOP_LEVEL:
        bad.append(f"top-level keys HA does not take: {sorted(set(config) - TOP_LEVEL)}")
    if "qos" in config:
        bad.append("device-level qos: HA does not pass it down to the components")
    dev = config.get("dev", {})
    if not dev.get("identifiers"):
        bad.append("dev needs identifiers")
    if set(dev) - DEVICE_KEYS:
        bad.append(f"dev keys HA does not take: {sorted(set(dev) - DEVICE_KEYS)}")
    if "configuration_url" in dev and not _url(dev["configuration_url"]):
        bad.append("dev.configuration_url is not a URL")
    origin = config.get("o", {})
    if not origin.get("name"):
        bad.append("o needs a name")
    if set(origin) - {"name", "sw_version", "support_url"}:
        bad.append(f"origin keys HA does not take: {sorted(set(origin) - {'name', 'sw_version', 'support_url'})}")
    if "support_url" in origin and not _url(origin["support_url"]):
        bad.append("o.support_url is not a URL")
    device_name = str(dev.get("name", "")).lower()
    uids: set[str] = set()
    for key, c in config.get("cmps", {}).items():
        where = f"cmps.{key}"
        if c.get("p") not in SUPPORTED:
            bad.append(f"{where}: platform {c.get('p')!r}")
            continue
        if set(c) == {"p"}:
            continue  # a removal: HA deletes the component
        if not c.get("unique_id") or c["unique_id"] in uids:
            bad.append(f"{where}: unique_id missing or repeated")
        uids.add(c.get("unique_id", ""))
        if c.get("qos") not in (0, 1, 2):
            bad.append(f"{where}: no qos of its own")
        name = str(c.get("name") or "")
        if (device_name and device_name in name.lower()) or "retrotread" in name.lower() or "treadmill" in name.lower():
            bad.append(f"{where}: name {name!r} repeats the device (has_entity_name)")
        for t in ("state_topic", "command_topic", "json_attributes_topic"):
            if t in c and not _topic(c[t]):
                bad.append(f"{where}: {t} {c[t]!r}")
        p = c["p"]
        if p in ("button", "number", "select") and "command_topic" not in c:
            bad.append(f"{where}: a {p} needs a command_topic")
        if p in ("sensor", "binary_sensor", "event") and "state_topic" not in c:
            bad.append(f"{where}: a {p} needs a state_topic")
        if p == "event" and not c.get("event_types"):
            bad.append(f"{where}: an event needs event_types")
        if p == "select" and not c.get("options"):
            bad.append(f"{where}: a select needs options")
        if p == "number" and not (c["min"] < c["max"]):
            bad.append(f"{where}: min must be below max")
        if c.get("device_class") == "enum" and not c.get("options"):
            bad.append(f"{where}: an enum sensor needs options")
        if c.get("device_class") == "enum" and ("unit_of_measurement" in c or "state_class" in c):
            bad.append(f"{where}: an enum sensor takes no unit or state class")
        # Seen on a real Core 2025.4: mqtt/sensor.py's schema has no suggested_unit_of_measurement
        # (only suggested_display_precision); HA drops it without a word, so nothing is converted.
        if "suggested_unit_of_measurement" in c:
            bad.append(f"{where}: MQTT entities take no suggested_unit_of_measurement")
    return bad
