"""Home Assistant MQTT device discovery: the one retained config message that describes a treadmill.

Pure functions from a state snapshot to the payload of ``<prefix>/device/<id>/config`` (Home
Assistant's device-based discovery, 2024.11+): ``dev`` (the device), ``o`` (origin: us), shared
availability on ``retrotread/<id>/status``, and ``cmps`` (one entry per entity, each with its
platform ``p`` and a ``unique_id``). The entities read the retained ``state`` and ``timer`` topics
with templates over the JSON of interfaces.md and command through ``retrotread/<id>/cmd/<name>``.

Home Assistant's rules, as its ``components/mqtt`` applies them (checked against Core 2025.4):

- ``qos`` is on every component: a device-level ``qos`` is not among the options passed down to
  the components (``schemas.py``, ``SHARED_OPTIONS``), so it would leave them at QoS 0.
- A component left out of a later payload stays in Home Assistant and keeps working; only a
  platform-only entry (``{"p": "button"}``) deletes it (``discovery.py``). So a component that was
  published and is gone now is sent as such an entry once (``removed=``); ``published()`` reads
  which components a payload really defines.
- MQTT entities use ``has_entity_name``: an entity's name is shown after the device's name, so it
  never repeats it.

What the payload offers is decided by the mode, the driver and the control policy (S13, S16):
a belt the daemon does not drive (deadmill mode, the ``none`` driver) gets no entity that drives or
stops it; ``control = "stop"`` offers the stop and the emergency stop only; ``"full"`` adds the target
speed, reset, a plan select and the session buttons (the broker's ACL is then the guard).

What the machine says of itself (the snapshot's ``device`` block, issue 14.4) becomes diagnostic
sensors, one per value the driver knows and none for the rest. ``origin.support_url`` is the
daemon's own help page beside the dashboard (there is no public project address to point at).

This module must not do I/O, hold state, or decide anything a rule decides: the number's range is
the envelope the snapshot reports (S1 is still enforced by the supervisor on every command).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Literal

from retrotread.daemon.config import SPEED_UNITS, SpeedUnit
from retrotread.daemon.events import EventKind
from retrotread.daemon.plans import PRESETS
from retrotread.daemon.snapshot import StateSnapshot
from retrotread.daemon.timer import Phase

PACKAGE = "retrotread"
QOS = 1
Control = Literal["stop", "full"]
CONTROLS: tuple[Control, ...] = ("stop", "full")
IDLE = "idle"  # the timer's phase when no session runs (the idle timer published at start-up)
PHASES = tuple(dict.fromkeys([IDLE, *(str(p) for p in Phase)]))  # the enum sensor's options
REFUSED = "command_refused"  # the event the MQTT face publishes for a refused command
CUE = "cue"  # the event the MQTT face publishes for a cue (cues.md), for the event entity
EVENT_TYPES = tuple(dict.fromkeys([*(str(k) for k in EventKind), CUE, REFUSED]))
DEFAULT_PLAN = "deadmill"  # what "Start session" runs before a plan is chosen
UNKNOWN = "unknown"
HELP_PATH = "/static/help.html"  # the daemon's help page, for Home Assistant's "Visit support"


def discovery_topic(treadmill_id: str, discovery_prefix: str = "homeassistant") -> str:
    return f"{discovery_prefix}/device/{treadmill_id}/config"


def software_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def project_url() -> str | None:
    """Where users get help, from the package metadata ([project.urls]): an "Issues" or "Support"
    entry first, then any other, then the home page; None if it declares none."""
    try:
        meta = metadata.metadata(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    urls: list[tuple[str, str]] = []
    for entry in meta.get_all("Project-URL") or ():
        label, _, url = str(entry).partition(",")
        if url.strip():
            urls.append((label.strip().lower(), url.strip()))
    urls.sort(key=lambda lu: lu[0] not in ("issues", "support", "bug tracker"))
    if urls:
        return urls[0][1]
    for home in meta.get_all("Home-page") or ():
        if str(home).strip():
            return str(home).strip()
    return None


def target_speed(
    state_topic: str, command_topic: str, envelope: tuple[float, float], unit: SpeedUnit
) -> dict[str, Any]:
    """The target speed as a Home Assistant number, in ``unit``; ``envelope`` in that unit.

    Home Assistant converts a number's unit only for temperature and volume flow rate
    (``number/const.py`` ``UNIT_CONVERTERS``, Core 2025.4), not for speed: a number published in
    mph stays in mph beside a belt speed sensor shown in km/h (seen on a real Core). So the number
    is published in the unit the user reads and sends it back in that unit: the state carries
    ``target_kmh`` and ``envelope_kmh`` (rounded toward the inside), and the speed command takes
    ``speed_kmh``; the conversion is the daemon's. S1 is still the supervisor's, on every command.
    """
    lo, hi = envelope
    key = "kmh" if unit == "km/h" else "mph"
    step = 0.01 if unit == "km/h" else 0.05
    value = f"value_json.target_{key}"
    command = f'{{"speed_{key}": {{{{ value }}}}}}'
    return {
        "p": "number",
        "name": "Target speed",
        "state_topic": state_topic,
        "value_template": f"{{{{ {value} if {value} is not none else 'None' }}}}",
        "command_topic": command_topic,
        "command_template": command,
        "device_class": "speed",
        "unit_of_measurement": unit,
        "min": lo,
        "max": hi,
        "step": step,
        "mode": "box",
    }


def help_url(dashboard: str | None) -> str | None:
    """The daemon's own help page beside the dashboard (``api/static/help.html``): where Home
    Assistant's "Visit support" leads. There is no public project address, and none is invented."""
    if not dashboard:
        return None
    return dashboard.rstrip("/") + HELP_PATH


DIAGNOSTICS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # (key in the snapshot's ``device`` block, component key, the component without its template)
    ("firmware", "firmware", {"p": "sensor", "name": "Firmware", "icon": "mdi:chip"}),
    ("serial", "serial_number", {"p": "sensor", "name": "Serial number", "icon": "mdi:barcode"}),
    (
        "units",
        "console_units",
        {"p": "sensor", "name": "Console units", "device_class": "enum", "options": ["mph", "km/h"]},
    ),
    (
        "hours_of_use",
        "hours_of_use",
        {
            "p": "sensor",
            "name": "Hours of use",
            "device_class": "duration",
            "unit_of_measurement": "h",
            "state_class": "total_increasing",
            "suggested_display_precision": 0,
        },
    ),
    (
        "odometer_m",
        "odometer",
        {
            # In km: an MQTT sensor takes no suggested unit (mqtt/sensor.py, Core 2025.4), and a
            # gym's odometer in metres reads as an eight-digit number.
            "p": "sensor",
            "name": "Odometer",
            "device_class": "distance",
            "unit_of_measurement": "km",
            "state_class": "total_increasing",
            "suggested_display_precision": 1,
        },
    ),
    ("error_code", "error_code", {"p": "sensor", "name": "Error code", "icon": "mdi:alert-circle-outline"}),
    ("service_code", "service_code", {"p": "sensor", "name": "Service code", "icon": "mdi:wrench-clock"}),
)
"""What the machine says of itself (issue 14.4), as Home Assistant diagnostic entities."""


def diagnostics(device: Mapping[str, object] | None, state_topic: str) -> dict[str, dict[str, Any]]:
    """A diagnostic sensor for each value the driver read from the machine (its firmware, serial
    number, the units its console uses; CSAFE hours of use, odometer, error and service codes) and
    none for what it does not know: a sensor stuck at "unknown" would suggest the machine was asked
    and gave nothing, and nothing shown may be invented. Maker and model are the device block's."""
    out: dict[str, dict[str, Any]] = {}
    for field, key, entry in DIAGNOSTICS:
        value = (device or {}).get(field)
        if value is None or value == "" or isinstance(value, bool):
            continue
        if entry.get("device_class") == "enum" and value not in entry["options"]:
            continue  # a value HA's enum sensor would refuse, and log, on every state
        out[key] = {
            **json.loads(json.dumps(entry)),  # a copy: the table's lists are never handed out
            "state_topic": state_topic,
            "entity_category": "diagnostic",
            # A reconnect may read the machine again and find a value gone: "None" is unknown.
            "value_template": f"{{{{ (value_json.device or {{}}).get('{field}', 'None') }}}}",
        }
        if field == "odometer_m":
            out[key]["value_template"] = (
                "{% set m = (value_json.device or {}).get('odometer_m') %}{{ m / 1000 if m is not none else 'None' }}"
            )
    return out


def diagnostic_keys(device: Mapping[str, object] | None) -> frozenset[str]:
    """The diagnostic components a ``device`` block makes: when a reconnect reads more (or less)
    of the machine than before, the set changes and discovery must be sent again."""
    return frozenset(diagnostics(device, ""))


def drives_belt(snapshot: StateSnapshot) -> bool:
    """True when the daemon drives this belt: reverse mode on a real (or simulated) treadmill. In
    deadmill mode and with the ``none`` driver it cannot stop a belt and must not pretend to (S13)."""
    scheme = snapshot.driver.partition(":")[0]
    return snapshot.mode == "reverse" and snapshot.envelope_mph is not None and scheme != "none"


def published(config: Mapping[str, Any] | None) -> dict[str, str]:
    """The components a discovery payload defines (key → platform), leaving out the platform-only
    removal entries; {} for anything that is not a discovery payload."""
    if not isinstance(config, Mapping):
        return {}
    cmps = config.get("cmps")
    if not isinstance(cmps, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, entry in cmps.items():
        platform = entry.get("p") if isinstance(entry, Mapping) else None
        if isinstance(key, str) and isinstance(platform, str) and set(entry) - {"p", "platform"}:
            out[key] = platform
    return out


def device_config(
    snapshot: StateSnapshot,
    *,
    base_topic: str,
    control: Control = "stop",
    removed: Mapping[str, str] | None = None,
    maker: str | None = None,
    model: str | None = None,
    configuration_url: str | None = None,
    sw_version: str | None = None,
    support_url: str | None = None,
    plans: Sequence[str] = tuple(PRESETS),
    speed_unit: SpeedUnit = "km/h",
) -> dict[str, Any]:
    """The discovery payload for the treadmill ``snapshot`` describes, publishing under ``base_topic``.

    ``removed``: components published before (key → platform); those not offered now are sent as
    platform-only entries so Home Assistant deletes them. ``maker``/``model``: the treadmill's own,
    where the driver knows them ("unknown" otherwise). ``configuration_url``: the dashboard.
    ``speed_unit``: the unit of Home Assistant's target-speed number (its range, step and the field
    it sends); the belt-speed sensor is always in mph, and Home Assistant converts it.
    """
    if control not in CONTROLS:
        raise ValueError(f"control {control!r}: one of {', '.join(CONTROLS)}")
    if speed_unit not in SPEED_UNITS:
        raise ValueError(f"speed_unit {speed_unit!r}: one of {', '.join(SPEED_UNITS)}")
    tid = snapshot.id
    version = sw_version or software_version()
    state_topic = f"{base_topic}/state"
    timer_topic = f"{base_topic}/timer"
    cmd = f"{base_topic}/cmd"

    def uid(key: str) -> str:
        return f"retrotread_{tid}_{key}"

    def button(name: str, topic: str, payload: Mapping[str, Any], icon: str) -> dict[str, Any]:
        return {"p": "button", "name": name, "command_topic": topic, "payload_press": json.dumps(payload), "icon": icon}

    def session_button(name: str, action: str, icon: str) -> dict[str, Any]:
        return button(name, f"{cmd}/session", {"action": action}, icon)

    cmps: dict[str, dict[str, Any]] = {
        "belt_speed": {
            "p": "sensor",
            "name": "Belt speed",
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
            "state_topic": state_topic,
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "value_template": "{{ value_json.belt.incline_pct if value_json.belt "
            "and value_json.belt.incline_pct is not none else 'None' }}",
        },
        "distance": {
            "p": "sensor",
            "name": "Distance",
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
            "state_topic": state_topic,
            "device_class": "moving",
            "value_template": "{{ 'ON' if value_json.belt and value_json.belt.moving else 'OFF' }}",
        },
        "stop_latched": {
            "p": "binary_sensor",
            "name": "Stop latched",
            "state_topic": state_topic,
            "device_class": "problem",
            "value_template": "{{ 'ON' if value_json.stop.latched else 'OFF' }}",
        },
        "stop_reason": {
            "p": "sensor",
            "name": "Stop reason",
            "state_topic": state_topic,
            "icon": "mdi:alert-octagon",
            # The reason with its rule, "uncommanded (S11)"; "none" while nothing is latched.
            "value_template": "{% set s = value_json.stop %}{{ (s.reason or 'stopped') ~ "
            "(' (' ~ s.rule ~ ')' if s.rule else '') if s.latched else 'none' }}",
            "json_attributes_topic": state_topic,
            "json_attributes_template": "{{ value_json.stop | tojson }}",
        },
        "link": {
            "p": "binary_sensor",
            "name": "Link",
            "state_topic": state_topic,
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "value_template": "{{ 'ON' if value_json.connected else 'OFF' }}",
        },
        "mode": {
            "p": "sensor",
            "name": "Mode",
            "state_topic": state_topic,
            "device_class": "enum",
            "options": ["reverse", "deadmill"],
            "entity_category": "diagnostic",
            "value_template": "{{ value_json.mode }}",
        },
        "session_phase": {
            "p": "sensor",
            "name": "Session phase",
            "state_topic": timer_topic,
            "device_class": "enum",
            "options": list(PHASES),
            "value_template": "{{ value_json.phase }}",
        },
        "set": {
            "p": "sensor",
            "name": "Set",
            "state_topic": timer_topic,
            "icon": "mdi:counter",
            "value_template": "{{ '%d of %d' % (value_json.set, value_json.sets) "
            "if value_json.sets and value_json.phase != 'idle' else 'None' }}",
        },
        "time_remaining": {
            "p": "sensor",
            "name": "Time remaining",
            "state_topic": timer_topic,
            "device_class": "duration",
            "unit_of_measurement": "s",
            "suggested_display_precision": 0,
            "value_template": "{{ value_json.remaining_s if value_json.phase != 'idle' else 'None' }}",
        },
        "session_ends_at": {
            "p": "sensor",
            "name": "Session ends at",
            "state_topic": timer_topic,
            "device_class": "timestamp",
            "value_template": "{{ value_json.ends_at if value_json.ends_at else 'None' }}",
        },
        "events": {
            "p": "event",
            "name": "Events",
            "state_topic": f"{base_topic}/event",
            "event_types": list(EVENT_TYPES),
            # Home Assistant's event entity wants "event_type"; the rest become its attributes.
            "value_template": "{{ dict(value_json, event_type=value_json.kind) | tojson }}",
        },
    }
    drives = drives_belt(snapshot)
    if drives:
        cmps["emergency_stop"] = button(
            "Emergency stop", f"{cmd}/estop", {"reason": "home-assistant"}, "mdi:alert-octagon-outline"
        )
        cmps["stop"] = button("Stop belt", f"{cmd}/stop", {}, "mdi:stop")
    if control == "full":
        envelope = snapshot.envelope_kmh if speed_unit == "km/h" else snapshot.envelope_mph
        if drives and envelope is not None:
            cmps["target_speed"] = target_speed(state_topic, f"{cmd}/speed", envelope, speed_unit)
            cmps["reset"] = button("Reset stop", f"{cmd}/reset", {}, "mdi:restore")
        cmps["plan"] = {
            "p": "select",
            "name": "Plan",
            # The choice is kept retained on BASE/plan, not a command: only the start button
            # (a live command) starts anything (S16).
            "state_topic": f"{base_topic}/plan",
            "command_topic": f"{base_topic}/plan",
            "retain": True,
            "options": list(plans),
            "icon": "mdi:format-list-numbered",
        }
        cmps["session_start"] = session_button("Start session", "start", "mdi:play")
        cmps["session_pause"] = session_button("Pause session", "pause", "mdi:pause")
        cmps["session_resume"] = session_button("Resume session", "resume", "mdi:play-pause")
        cmps["session_skip"] = session_button("Skip phase", "skip", "mdi:skip-next")
        cmps["session_abort"] = session_button("Abort session", "abort", "mdi:stop-circle-outline")
    cmps.update(diagnostics(snapshot.device, state_topic))
    for key, entry in cmps.items():
        entry["unique_id"] = uid(key)
        entry["qos"] = QOS  # per component: a device-level qos is not passed down
    for key, platform in (removed or {}).items():
        if key not in cmps:
            cmps[key] = {"p": platform}  # Home Assistant deletes it
    origin: dict[str, Any] = {"name": PACKAGE, "sw_version": version}
    url = support_url if support_url is not None else help_url(configuration_url) or project_url()
    if url:
        origin["support_url"] = url
    device: dict[str, Any] = {
        "identifiers": [f"retrotread_{tid}"],
        "name": tid,
        "manufacturer": maker or UNKNOWN,
        "model": model or UNKNOWN,
        "sw_version": version,
    }
    serial = (snapshot.device or {}).get("serial")
    if isinstance(serial, str) and serial:
        device["serial_number"] = serial
    if configuration_url:
        device["configuration_url"] = configuration_url
    return {
        "dev": device,
        "o": origin,
        "availability_topic": f"{base_topic}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "cmps": cmps,
    }


def discovery_payload(snapshot: StateSnapshot, *, base_topic: str, **options: Any) -> bytes:
    """``device_config`` as the bytes to publish (retained)."""
    config = device_config(snapshot, base_topic=base_topic, **options)
    return json.dumps(config, separators=(",", ":")).encode()
