"""Recorded GATT conversations with an FTMS machine: the capture format, a reader and a recorder.

A capture is JSON lines (docs/protocols/ftms.md, "Captures"): first a ``capture`` line (what the
machine is, where the bytes come from, what was reconstructed), then one ``service`` line per GATT
service with its characteristics and their properties, then the conversation in order, each line
with ``t`` (seconds since the connection):

- ``read``: the machine's answer when the client reads ``uuid`` (answered on demand, in order per
  characteristic);
- ``subscribe``: the client enabled notifications or indications on ``uuid`` (informative);
- ``write``: what the client is expected to write to ``uuid`` (``hex``, and ``response``: the write
  type);
- ``notify`` / ``indicate``: what the machine sends on ``uuid``, ``t`` after the connection, timed
  from the client's last write;
- ``disconnect``: the machine dropped the link;
- ``connect``: the client connected again; what follows is that connection's conversation (after a
  reconnect the driver's first write is a stop, rule S9, and a capture shows it).

Any line may carry ``source`` (whose bytes these are) and ``note``. The format is ours, so that a
user with a real machine can record one (``ftms://ADDRESS?record=FILE``) and the FTMS driver can be
tested against it (``ftms+replay://FILE``, ``drivers.ftms.replay``).

This module does file I/O only: no Bluetooth, no asyncio.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, cast, get_args

from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.service import BleakGATTServiceCollection
from bleak.uuids import normalize_uuid_str

from retrotread.drivers.errors import ConfigError

__all__ = [
    "FORMAT",
    "VERSION",
    "Capture",
    "CaptureError",
    "CaptureEvent",
    "CaptureRecorder",
    "CharacteristicRecord",
    "load_capture",
    "short_uuid",
]

FORMAT: Final = "retrotread-gatt-capture"
VERSION: Final = 1

EventKind = Literal["read", "subscribe", "write", "notify", "indicate", "disconnect", "connect"]
_EVENT_KINDS: Final = frozenset({"read", "subscribe", "write", "notify", "indicate", "disconnect", "connect"})
_PROPERTIES: Final[frozenset[str]] = frozenset(get_args(CharacteristicPropertyName))


class CaptureError(ConfigError):
    """A capture file that cannot be read; the message names the file and the line."""


def short_uuid(uuid: str) -> str:
    """``2ad9`` for a SIG 16-bit UUID, the full UUID otherwise (for messages and files)."""
    if uuid.startswith("0000") and uuid.endswith("-0000-1000-8000-00805f9b34fb"):
        return uuid[4:8]
    return uuid


@dataclass(frozen=True, slots=True)
class CharacteristicRecord:
    uuid: str
    service: str
    properties: tuple[CharacteristicPropertyName, ...]
    handle: int


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    line: int
    """The line of the file (1-based), for messages that point at it."""
    t: float
    kind: EventKind
    uuid: str | None = None
    data: bytes = b""
    response: bool | None = None
    """For a write: with response (True) or without (False); ``None``: not recorded."""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    path: Path
    name: str
    source: str
    advertised_name: str | None
    rate_hz: float | None
    characteristics: tuple[CharacteristicRecord, ...]
    events: tuple[CaptureEvent, ...]
    header: dict[str, Any] = field(default_factory=dict)

    def characteristic(self, uuid: str) -> CharacteristicRecord | None:
        return next((c for c in self.characteristics if c.uuid == uuid), None)

    def segments(self) -> list[int]:
        """Where each connection's conversation starts in ``events``: 0, then after each ``connect``."""
        return [0, *(i + 1 for i, e in enumerate(self.events) if e.kind == "connect")]


def _uuid(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CaptureError(f"{where}: uuid missing or not a string")
    try:
        return normalize_uuid_str(value)
    except ValueError as exc:
        raise CaptureError(f"{where}: uuid {value!r} is not a UUID ({exc})") from None


def _hex(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise CaptureError(f"{where}: hex missing or not a string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise CaptureError(f"{where}: hex {value!r} is not hexadecimal bytes") from None


def load_capture(path: Path) -> Capture:
    """Read and check a capture file; a ``CaptureError`` names the line that is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"capture {path}: cannot be read ({exc.strerror or exc})") from None
    header: dict[str, Any] | None = None
    chars: list[CharacteristicRecord] = []
    events: list[CaptureEvent] = []
    last_t = 0.0
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"capture {path} line {number}"
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise CaptureError(f"{where}: expected a JSON object")
        kind = item.get("kind")
        if header is None:
            if kind != "capture" or item.get("format") != FORMAT:
                raise CaptureError(f'{where}: the first line must be {{"kind": "capture", "format": "{FORMAT}", ...}}')
            if item.get("version") != VERSION:
                raise CaptureError(f"{where}: version {item.get('version')!r}; this build reads version {VERSION}")
            if not isinstance(item.get("source"), str) or not item["source"]:
                raise CaptureError(f"{where}: a capture names its source (who recorded it, on what machine)")
            header = item
            continue
        if kind == "service":
            service = _uuid(item.get("uuid"), where)
            listed = item.get("characteristics")
            if not isinstance(listed, list):
                raise CaptureError(f"{where}: a service lists its characteristics")
            for entry in listed:
                if not isinstance(entry, dict):
                    raise CaptureError(f"{where}: a characteristic is a JSON object")
                props = entry.get("properties")
                if not isinstance(props, list) or not props or not set(props) <= _PROPERTIES:
                    raise CaptureError(f"{where}: properties {props!r}: a list of {', '.join(sorted(_PROPERTIES))}")
                uuid = _uuid(entry.get("uuid"), where)
                handle = 0x0100 + 4 * len(chars)
                chars.append(
                    CharacteristicRecord(
                        uuid, service, cast(tuple[CharacteristicPropertyName, ...], tuple(props)), handle
                    )
                )
            continue
        if kind not in _EVENT_KINDS:
            raise CaptureError(f"{where}: kind {kind!r}; expected service or one of {', '.join(sorted(_EVENT_KINDS))}")
        t = item.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool) or not (math.isfinite(t) and t >= last_t):
            raise CaptureError(f"{where}: t {t!r} must be a number of seconds, not before the line above")
        last_t = float(t)
        uuid_value: str | None = None
        data = b""
        response: bool | None = None
        if kind not in ("disconnect", "connect"):
            uuid_value = _uuid(item.get("uuid"), where)
            if not any(c.uuid == uuid_value for c in chars):
                raise CaptureError(f"{where}: {short_uuid(uuid_value)} is in no service line above")
            if kind != "subscribe":
                data = _hex(item.get("hex"), where)
            if kind == "write":
                raw_response = item.get("response")
                if raw_response is not None and not isinstance(raw_response, bool):
                    raise CaptureError(f"{where}: response {raw_response!r}: true, false or absent")
                response = raw_response
        source = item.get("source")
        events.append(
            CaptureEvent(
                number, float(t), kind, uuid_value, data, response, source if isinstance(source, str) else None
            )
        )
    if header is None:
        raise CaptureError(f"capture {path}: empty")
    rate = header.get("rate_hz")
    name = header.get("name")
    advertised = header.get("advertised_name")
    return Capture(
        path=path,
        name=name if isinstance(name, str) and name else path.stem,
        source=header["source"],
        advertised_name=advertised if isinstance(advertised, str) and advertised else None,
        rate_hz=float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0 else None,
        characteristics=tuple(chars),
        events=tuple(events),
        header=header,
    )


class CaptureRecorder:
    """Writes one connection's conversation as a capture, a line at a time (a crash keeps it).

    The driver calls it at its few GATT calls; it decides nothing. A reconnect after the machine
    dropped the link is recorded as a ``connect`` line and the new connection's conversation (the
    GATT table is the first connection's); the file ends when the driver closes.
    """

    def __init__(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise ConfigError(f"record={path}: the folder {path.parent} does not exist")
        self.path = path
        self._file: IO[str] | None = None
        self._begun = False
        self._t0: float | None = None
        self._indicating: set[str] = set()

    def begin(self) -> None:
        """Create the file (when the driver opens, not when its URL is checked)."""
        if self._begun:
            return
        try:
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"record={self.path}: cannot be written ({exc.strerror or exc})") from None
        self._begun = True

    @property
    def recording(self) -> bool:
        return self._file is not None

    def _line(self, item: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(item, separators=(", ", ": ")) + "\n")
        self._file.flush()

    def _t(self) -> float:
        assert self._t0 is not None
        return round(time.monotonic() - self._t0, 3)

    def connected(
        self, *, url: str, advertised_name: str | None, services: BleakGATTServiceCollection, rate_hz: float
    ) -> None:
        """The header and the GATT table; the conversation's clock starts now. Again: ``connect``."""
        if self._file is None:
            return
        if self._t0 is not None:
            self._line({"t": self._t(), "kind": "connect"})
            return
        self._t0 = time.monotonic()
        self._line(
            {
                "kind": "capture",
                "format": FORMAT,
                "version": VERSION,
                "name": advertised_name or url,
                "source": f"recorded by retrotread from {url} on {time.strftime('%Y-%m-%d', time.gmtime())}",
                "advertised_name": advertised_name,
                "rate_hz": rate_hz,
                "note": "a real machine's bytes and timing; the Device Information lines carry its serial number",
            }
        )
        for service in services:
            chars = []
            for char in service.characteristics:
                chars.append({"uuid": short_uuid(char.uuid), "properties": list(char.properties)})
                if "indicate" in char.properties and "notify" not in char.properties:
                    self._indicating.add(char.uuid)
            self._line({"kind": "service", "uuid": short_uuid(service.uuid), "characteristics": chars})

    def read(self, uuid: str, data: bytes) -> None:
        if self._t0 is not None:
            self._line({"t": self._t(), "kind": "read", "uuid": short_uuid(uuid), "hex": data.hex()})

    def subscribe(self, uuid: str) -> None:
        if self._t0 is not None:
            self._line({"t": self._t(), "kind": "subscribe", "uuid": short_uuid(uuid)})

    def write(self, uuid: str, data: bytes, *, response: bool) -> None:
        if self._t0 is not None:
            self._line(
                {"t": self._t(), "kind": "write", "uuid": short_uuid(uuid), "hex": data.hex(), "response": response}
            )

    def received(self, uuid: str, data: bytes) -> None:
        if self._t0 is not None:
            kind = "indicate" if uuid in self._indicating else "notify"
            self._line({"t": self._t(), "kind": kind, "uuid": short_uuid(uuid), "hex": bytes(data).hex()})

    def disconnected(self) -> None:
        """The machine dropped the link (not our own close)."""
        if self._t0 is not None:
            self._line({"t": self._t(), "kind": "disconnect"})

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()
