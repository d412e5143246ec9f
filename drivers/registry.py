"""Pick a driver by URL scheme; import it only when it is used.

Like pyserial's ``serial_for_url`` and python-can's ``BACKENDS``: the table names a module and a
class as strings, so ``bleak`` is never imported for a serial treadmill and the simulators (which
live in ``sims``, a floor of their own) register like any driver without ``drivers`` importing them.
"""

from __future__ import annotations

import importlib
from urllib.parse import parse_qsl, urlsplit

from retrotread.drivers.base import Driver
from retrotread.drivers.errors import ConfigError

BACKENDS: dict[str, tuple[str, str]] = {
    "sim": ("retrotread.sims.driver", "SimBeltDriver"),
    "csafe": ("retrotread.drivers.csafe.driver", "CsafeDriver"),
    "pulse": ("retrotread.drivers.pulse.driver", "PulseDriver"),
    "gpio": ("retrotread.drivers.gpio.driver", "GpioDriver"),
    "ftms": ("retrotread.drivers.ftms.driver", "FtmsDriver"),
    "ftms+sim": ("retrotread.sims.ftms", "SimFtmsDriver"),
    "ftms+replay": ("retrotread.drivers.ftms.replay", "ReplayFtmsDriver"),
    "none": ("retrotread.drivers.none", "NoDriver"),
}


def driver_class(scheme: str) -> type[Driver]:
    """The driver class for a URL scheme, imported on first use."""
    try:
        module_name, class_name = BACKENDS[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise ConfigError(f"unknown driver scheme {scheme!r}; known: {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"driver {scheme}:// is not available in this build ({exc})") from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise TypeError(f"{module_name}.{class_name} is not a Driver")
    return cls


def open_driver(url: str) -> Driver:
    """Build (not yet connect) the driver for ``url``, e.g. ``sim://motorized?rate_hz=10``."""
    if url.strip().lower() == "none":
        url = "none://"  # no treadmill: the plain timer needs no URL syntax
    parts = urlsplit(url)
    if not parts.scheme:
        raise ConfigError(f"driver URL {url!r} has no scheme; try sim://motorized")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in options:
            raise ConfigError(f"driver option {key!r} given twice in {url!r}")
        options[key] = value
    driver = driver_class(parts.scheme).from_url(parts, options)
    driver.url = url
    return driver


def float_option(
    options: dict[str, str], key: str, default: float, *, minimum: float = 0.0, maximum: float = float("inf")
) -> float:
    """A numeric query option, with an error that names the key, the value and the range."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"driver option {key}={raw!r} is not a number") from None
    if not (minimum <= value <= maximum):
        raise ConfigError(f"driver option {key}={raw} is outside {minimum}..{maximum}")
    return value
