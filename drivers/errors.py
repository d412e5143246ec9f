"""The error tree of retrotread.

Every error the product raises on purpose derives from ``TreadError``; library errors (pyserial,
bleak, OS errors) are translated at the driver boundary with ``raise ... from exc``::

    TreadError
    ├── DriverError                 a driver or its link failed
    │   ├── NotConnected            no link to the device right now (HTTP 503)
    │   ├── LinkLost                the link dropped while in use (rule S9)
    │   ├── DeviceAccessError       the port or adapter exists but may not be opened (permissions)
    │   ├── CommandRejected         the device refused or did not acknowledge a command
    │   │   └── ReplayMismatch      a replayed capture did not expect what the client wrote (drivers.ftms.replay)
    │   └── Unsupported             the device cannot do what was asked (a capability, not a retry)
    ├── CodecError                  bytes that do not form a valid frame
    │   ├── LocalProtocolError      our side built something invalid (a bug or a bad argument)
    │   └── RemoteProtocolError     the peer sent something invalid (a device quirk or line noise)
    ├── ConfigError                 a bad URL, option or setting; the message names key and value
    │   ├── EnvelopeError           an envelope wider than S1 allows, or upside down (safety)
    │   ├── CaptureError            a GATT capture file that cannot be read (drivers.ftms.capture)
    │   ├── HistoryError            the history cannot be opened or read (daemon.history)
    │   └── ListenError             the HTTP address cannot be listened on (api.server)
    ├── InputError                  a request that does not make sense: the message says why
    │   ├── PlanError               a plan that cannot be parsed or breaks a limit (daemon.plans)
    │   └── ExportError             an export format we do not write (daemon.export)
    ├── StateError                  an action that does not fit the current state (HTTP 409)
    │   ├── SessionError            a session action out of place; may name a rule (daemon.controller)
    │   └── TimerError              the set timer asked to do what its phase does not allow
    ├── BrokerError                 the MQTT broker cannot be reached or refused us (api.mqtt)
    └── CliError                    a command-line failure reported as one line (api.cli)
        └── DaemonUnreachable       no daemon answered at the URL

The command line catches ``TreadError`` alone. This module must not import anything else of ours:
every floor may import it; the subclasses live beside the code that raises them.
"""

from __future__ import annotations


class TreadError(Exception):
    """Root of every error retrotread raises on purpose."""


class DriverError(TreadError):
    """A driver or its link to the device failed."""


class NotConnected(DriverError):
    """There is no link to the device right now."""


class LinkLost(DriverError):
    """The link to the device dropped while it was in use (rule S9)."""


class DeviceAccessError(DriverError):
    """The device exists but may not be opened; the message says how to get access."""


class CommandRejected(DriverError):
    """The device refused a command or did not acknowledge it in time."""


class Unsupported(DriverError):
    """The device cannot do what was asked; report it as a capability, never retry it."""


class CodecError(TreadError):
    """Bytes that do not form a valid frame, or a frame that cannot be encoded."""


class LocalProtocolError(CodecError):
    """Our side asked for a frame that cannot exist (bad argument or a bug of ours)."""


class RemoteProtocolError(CodecError):
    """The peer sent bytes that are not a valid frame (device quirk or line noise)."""


class ConfigError(TreadError, ValueError):
    """A bad driver URL, option or setting. The message names the key, the value and what is allowed."""


class InputError(TreadError, ValueError):
    """A request that does not make sense (a plan, a command's arguments, a format)."""


class StateError(TreadError, RuntimeError):
    """An action that does not fit the current state (HTTP 409)."""
