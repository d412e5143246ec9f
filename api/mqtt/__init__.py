"""The MQTT face: one treadmill's state out to a broker, commands in, answered one by one.

Topics (``BASE`` = ``<prefix>/<id>``, interfaces.md):

=====================  ======  ===  ==========================================================
topic                  retain  QoS  payload
=====================  ======  ===  ==========================================================
BASE/status            yes     1    ``online``; the will and a clean shutdown leave ``offline``
BASE/state             yes     1    the state snapshot, forwarded from the hub (on change, ≥ 1/5 s)
BASE/telemetry         no      0    one sample
BASE/timer             yes     1    the session block (phase changes and every second)
BASE/event             no      1    events (estop, set_started, ...), and ``cue`` and ``command_refused``
BASE/cue               no      1    cues (``{"kind", "text", "set", "remaining_s", "ts", "session"}``)
BASE/plan              yes     1    the plan chosen in Home Assistant's select (full control; a choice)
BASE/cmd/<name>        (in)    1    ``estop`` ``reset`` ``start`` ``speed`` ``stop`` ``incline`` ``session`` ``extend``
BASE/cmd/result        no      1    ``{"cmd", "id", "ok", "error", "rule"}`` for every command
<ha>/device/<id>/config yes    1    Home Assistant discovery (``api.discovery``)
=====================  ======  ===  ==========================================================

Command bodies are JSON objects like the HTTP ones, each with an optional ``"id"`` (a string or an
integer) echoed in its result; an empty payload is ``{}``; a body over ``MAX_COMMAND_BYTES``
(4,096 bytes) is refused unread, saying so. ``start``/``speed``: ``{"speed_mph"}``;
``incline``: ``{"incline_pct"}``; ``estop``: ``{"reason"}`` optional; ``stop``, ``reset``: ``{}``;
``session``: ``{"plan": "3x60s/60s"}`` or ``{"sets", "work_s", "rest_s", "countdown_s",
"speed_mph"}`` to start one (as ``POST /api/v1/session``), or ``{"action": "pause|resume|skip|abort"}``;
``extend``: ``{"seconds": 30}``; their results add ``"session"`` (the session block, or null).
The bodies are the commands of ``daemon/commands.py`` (docs/commands.md).

Decisions, and why:

- Retained commands are ignored (S16): an old command left on the broker must never start a belt.
  With MQTT 5 (tried first) the command subscription asks for retain-as-published, so a retained
  command is recognized even when it arrives live; against a 3.1.1-only broker (the fallback) the
  flag survives only on messages delivered at subscribe time, which is the case S16 is about.
- Clean sessions only: nothing the broker queued while we were away is delivered later (as S9:
  nothing queued before a loss is replayed).
- A stop is never refused (S5): any live message on ``cmd/estop`` latches the stop and writes it
  to the device before its payload is read, whatever its bytes, size or encoding; then ``id`` and
  ``reason`` are read leniently (within the bound), a reason that cannot be read is recorded as
  ``unreadable``, and the result is ``ok``. ``cmd/stop`` likewise (a controlled stop; a body it
  cannot read or extra fields in it are ignored), and it is never answered "busy".
- ``estop`` is carried out in the message loop itself, never behind another command; commands
  before it that are still waiting are answered "superseded" and dropped (they would either be
  refused by the latch or, for a reset, undo a stop sent after it). Every other command runs in
  arrival order on one worker, so a ``stop`` is never overtaken by an earlier ``start``.
- Control policy (S16): ``control="stop"`` (``mqtt.control``, the default) takes only ``estop`` and
  ``stop``; every other command is refused with a result saying how to enable it. ``"full"`` takes
  every command, and the broker's ACL is then the guard (``doctor`` warns of an anonymous broker).
  The HTTP token is not asked for over MQTT: Home Assistant could only send it from a retained,
  readable discovery message. Discovery offers exactly the controls the policy takes.
- A refused command is also published on ``BASE/event`` (kind ``command_refused``, with ``cmd``,
  ``id``, ``reason`` and ``rule``): Home Assistant's event entity reads that topic, not ``cmd/result``.
  Cues are published there too (kind ``cue``, the cue's own kind as ``cue``).
- ``cmd/session`` ``{"action": "start"}`` (Home Assistant's start button) starts the plan last chosen
  on ``BASE/plan``, or ``deadmill``.
- Discovery components that were published (by this process or, read from the retained config,
  an earlier one) and are not offered now are sent once as platform-only entries, so Home
  Assistant deletes them. The state and timer are published at every connect before anything else
  (the idle timer when there is no session), and again after Home Assistant's birth message.
- The hub is drained all the time, connected or not: while away, telemetry and events are dropped
  and on each (re)connect the latest state and timer are re-published with ``online`` and the
  discovery config, so every retained topic is current again.

This package must not hold a rule, convert a unit or time a session (the controller does), must
never make the controller wait (the hub drops a slow face's oldest updates), and must never raise
out on broker trouble: it reconnects with capped backoff, logging once on failure and once on
recovery. Library errors are translated here (``BrokerError``, ``ConfigError``).

By job: ``address`` (broker URLs), ``topics`` (topic names per treadmill id), ``bodies`` (command
payload parsing and results), ``bridge`` (the ``MqttBridge``), ``forget`` (removing a treadmill).
"""

from retrotread.api.mqtt.address import (
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    NO_DELAY,
    TIMEOUT_S,
    BrokerAddress,
    BrokerError,
    parse_broker_url,
)
from retrotread.api.mqtt.bodies import COMMANDS, MAX_COMMAND_BYTES, OPEN_COMMANDS
from retrotread.api.mqtt.bridge import LinkState, MqttBridge
from retrotread.api.mqtt.forget import forget
from retrotread.api.mqtt.topics import Topics

__all__ = [
    "COMMANDS",
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "MAX_COMMAND_BYTES",
    "NO_DELAY",
    "OPEN_COMMANDS",
    "TIMEOUT_S",
    "BrokerAddress",
    "BrokerError",
    "LinkState",
    "MqttBridge",
    "Topics",
    "forget",
    "parse_broker_url",
]
