"""Rule ids of ../shared/docs/safety.md; refusals, events and log lines name them."""

from __future__ import annotations

from enum import StrEnum


class Rule(StrEnum):
    S1 = "S1"  # envelope
    S2 = "S2"  # rounding on the wire
    S3 = "S3"  # arming
    S4 = "S4"  # start and ramp
    S5 = "S5"  # emergency stop
    S6 = "S6"  # latch
    S7 = "S7"  # overspeed, no response
    S8 = "S8"  # stale telemetry
    S9 = "S9"  # link loss
    S10 = "S10"  # device-reported stops
    S11 = "S11"  # uncommanded motion
    S12 = "S12"  # incline
    S13 = "S13"  # deadmill
    S14 = "S14"  # volume caps
    S15 = "S15"  # process
    S16 = "S16"  # commands from outside
    S17 = "S17"  # time
