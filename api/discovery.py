"""Home Assistant MQTT device discovery: the one retained config message that describes a treadmill.

Pure functions from a state snapshot to the payload of ``<prefix>/device/<id>/config`` (Home
Assistant's device-based discovery, 2024.11+): ``dev`` (the device), ``o`` (origin: us), shared
availability on ``retrotread/<id>/status``, and ``cmps`` (one entry per entity, each with its
platform ``p`` and a ``unique_id``). The entities read the retained ``state`` and ``timer`` topics
with templates over the JSON of interfaces.md and command through ``retrotread/<id>/cmd/<name>``.

This module must not do I/O, hold state, or decide anything a rule decides: the number's range is
the envelope the snapshot reports (S1 is still enforced by the supervisor on every command), and
controls that need the API token are left out when one is configured, because a token written
into a retained discovery message would be readable by every client of the broker (S16).
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from retrotread.daemon.events import Phase
from retrotread.daemon.snapshot import StateSnapshot

PACKAGE = "retrotread"
PHASES = tuple(str(p) for p in Phase)  # Home Assistant's enum sensor: the daemon's own phase names


def discovery_topic(treadmill_id: str, discovery_prefix: str = "homeassistant") -> str:
    return f"{discovery_prefix}/device/{treadmill_id}/config"


def software_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def project_url() -> str | None:
    """The project's home page from the package metadata ([project.urls]), if it declares one."""
    try:
        meta = metadata.metadata(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or ():
        _label, _, url = str(entry).partition(",")
        if url.strip():
            return url.strip()
    for home in meta.get_all("Home-page") or ():
        if home.strip():
            return str(home).strip()
    return None


def device_config(
    snapshot: StateSnapshot,
    *,
    base_topic: str,
    token_required: bool = False,
    sw_version: str | None = None,
    support_url: str | None = None,
) -> dict[str, Any]:
    """The discovery payload for the treadmill ``snapshot`` describes, publishing under ``base_topic``.

    ``token_required``: the daemon asks for the API token on MQTT commands, so the target-speed
    number and the reset button (which would need it) are left out; the stop buttons never need it.
    """
    tid = snapshot.id
    version = sw_version or software_version()
    state_topic = f"{base_topic}/state"
    timer_topic = f"{base_topic}/timer"
    cmd = f"{base_topic}/cmd"

    def uid(key: str) -> str:
        return f"retrotread_{tid}_{key}"

    cmps: dict[str, dict[str, Any]] = {
        "belt_speed": {
            "p": "sensor",
            "name": "Belt speed",
            "unique_id": uid("belt_speed"),
            "state_topic": state_topic,
            "device_class": "speed",
            "unit_of_measurement": "mph",
            "state_class": "measurement",
            "suggested_display_precision": 2,
            # "None" is Home Assistant's payload for "unknown": no sample yet.
            "value_template": "{{ value_json.belt.speed_mph if value_json.belt else 'None' }}",
        },
        "incline": {
            "p": "sensor",
            "name": "Incline",
            "unique_id": uid("incline"),
            "state_topic": state_topic,
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "value_template": "{{ value_json.belt.incline_pct if value_json.belt "
            "and value_json.belt.incline_pct is not none else 'None' }}",
        },
        "distance": {
            "p": "sensor",
            "name": "Distance",
            "unique_id": uid("distance"),
            "state_topic": state_topic,
            "device_class": "distance",
            "unit_of_measurement": "m",
            "state_class": "total_increasing",
            "value_template": "{{ value_json.belt.distance_m if value_json.belt "
            "and value_json.belt.distance_m is not none else 'None' }}",
        },
        "moving": {
            "p": "binary_sensor",
            "name": "Belt moving",
            "unique_id": uid("moving"),
            "state_topic": state_topic,
            "device_class": "moving",
            "value_template": "{{ 'ON' if value_json.belt and value_json.belt.moving else 'OFF' }}",
        },
        "stop_latched": {
            "p": "binary_sensor",
            "name": "Emergency stop latched",
            "unique_id": uid("stop_latched"),
            "state_topic": state_topic,
            "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.stop.latched else 'OFF' }}",
        },
        "connected": {
            "p": "binary_sensor",
            "name": "Treadmill link",
            "unique_id": uid("connected"),
            "state_topic": state_topic,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.connected else 'OFF' }}",
        },
        "set_phase": {
            "p": "sensor",
            "name": "Set phase",
            "unique_id": uid("set_phase"),
            "state_topic": timer_topic,
            "device_class": "enum",
            "options": list(PHASES),
            "value_template": "{{ value_json.phase }}",
        },
        "set_number": {
            "p": "sensor",
            "name": "Set",
            "unique_id": uid("set_number"),
            "state_topic": timer_topic,
            "value_template": "{{ value_json.set }}",
        },
        "set_remaining": {
            "p": "sensor",
            "name": "Set time remaining",
            "unique_id": uid("set_remaining"),
            "state_topic": timer_topic,
            "device_class": "duration",
            "unit_of_measurement": "s",
            "value_template": "{{ value_json.remaining_s }}",
        },
    }
    envelope = snapshot.envelope_mph
    if envelope is not None:
        # Only a belt we drive (reverse mode) gets controls: in deadmill mode the daemon cannot stop
        # the belt and must not pretend to (S13).
        cmps["emergency_stop"] = {
            "p": "button",
            "name": "Emergency stop",
            "unique_id": uid("emergency_stop"),
            "command_topic": f"{cmd}/estop",
            "payload_press": json.dumps({"reason": "home-assistant"}),
        }
        cmps["stop"] = {
            "p": "button",
            "name": "Stop belt",
            "unique_id": uid("stop"),
            "command_topic": f"{cmd}/stop",
            "payload_press": "{}",
        }
        if not token_required:
            low, high = envelope
            cmps["target_speed"] = {
                "p": "number",
                "name": "Target speed",
                "unique_id": uid("target_speed"),
                "state_topic": state_topic,
                "value_template": "{{ value_json.target_mph if value_json.target_mph is not none else 'None' }}",
                "command_topic": f"{cmd}/speed",
                "command_template": '{"speed_mph": {{ value }}}',
                "min": low,
                "max": high,
                "step": 0.1,
                "unit_of_measurement": "mph",
                "mode": "box",
            }
            cmps["reset"] = {
                "p": "button",
                "name": "Reset emergency stop",
                "unique_id": uid("reset"),
                "command_topic": f"{cmd}/reset",
                "payload_press": "{}",
            }
    origin: dict[str, Any] = {"name": PACKAGE, "sw_version": version}
    url = support_url if support_url is not None else project_url()
    if url:
        origin["support_url"] = url
    scheme = snapshot.driver.partition(":")[0] or "unknown"
    return {
        "dev": {
            "identifiers": [f"retrotread_{tid}"],
            "name": f"retrotread {tid}",
            "manufacturer": PACKAGE,
            "model": f"{scheme} treadmill, {snapshot.mode} mode",
            "sw_version": version,
        },
        "o": origin,
        "availability_topic": f"{base_topic}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": 1,
        "cmps": cmps,
    }


def discovery_payload(
    snapshot: StateSnapshot, *, base_topic: str, token_required: bool = False, support_url: str | None = None
) -> bytes:
    """``device_config`` as the bytes to publish (retained)."""
    config = device_config(snapshot, base_topic=base_topic, token_required=token_required, support_url=support_url)
    return json.dumps(config, separators=(",", ":")).encode()
