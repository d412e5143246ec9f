"""``retrotread scan``'s serial half: the serial ports of this machine and what is plugged into them.

Each port comes with the ``/dev/serial/by-id`` link that points at it, if udev made one: that name
survives re-plugging and reboots, where ``/dev/ttyUSB0`` may become ``/dev/ttyUSB1``, so it is the
one to put in a driver URL (``csafe:///dev/serial/by-id/usb-FTDI_...``).

This module only lists: it must not open a port (opening resets an Arduino and may disturb a
console that is in use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BY_ID = Path("/dev/serial/by-id")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One serial port as the system describes it."""

    device: str
    by_id: str | None = None
    vid: int | None = None
    pid: int | None = None
    description: str = ""
    manufacturer: str | None = None
    serial_number: str | None = None

    def describe(self) -> str:
        """One line: path, by-id link, VID:PID, description."""
        parts = [self.device]
        if self.by_id:
            parts.append(f"-> {self.by_id}")
        if self.vid is not None and self.pid is not None:
            parts.append(f"{self.vid:04x}:{self.pid:04x}")
        label = self.description if self.description and self.description != "n/a" else ""
        if self.manufacturer and self.manufacturer not in label:
            label = f"{self.manufacturer} {label}".strip()
        if label:
            parts.append(label)
        return "  ".join(parts)


def by_id_links(directory: Path = BY_ID) -> dict[str, str]:
    """Real device path → its ``/dev/serial/by-id`` link (the first in name order if several)."""
    links: dict[str, str] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return links  # no USB serial adapter was ever seen, or no udev (a container)
    for entry in entries:
        if entry.is_symlink():
            links.setdefault(os.path.realpath(entry), str(entry))
    return links


def serial_ports(by_id_dir: Path = BY_ID) -> list[PortInfo]:
    """The serial ports pyserial finds, sorted by path."""
    from serial.tools import list_ports

    links = by_id_links(by_id_dir)
    ports = [
        PortInfo(
            device=str(port.device),
            by_id=links.get(os.path.realpath(port.device)),
            vid=port.vid,
            pid=port.pid,
            description=str(port.description or ""),
            manufacturer=port.manufacturer,
            serial_number=port.serial_number,
        )
        for port in list_ports.comports()
    ]
    return sorted(ports, key=lambda p: p.device)


__all__ = ["PortInfo", "by_id_links", "serial_ports"]
