"""Topic names per treadmill id (``BASE`` = ``<prefix>/<id>``, interfaces.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

from retrotread.api.discovery import discovery_topic
from retrotread.drivers.errors import ConfigError

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    discovery: str
    ha_status: str

    @classmethod
    def of(
        cls, treadmill_id: str, base_topic_prefix: str = "retrotread", discovery_prefix: str = "homeassistant"
    ) -> Self:
        if not _ID.match(treadmill_id):
            # The id is a topic level: a '+', '#' or '/' in it would reach other treadmills' topics.
            raise ConfigError(f"treadmill id {treadmill_id!r}: allowed are 1-64 of A-Z a-z 0-9 _ -")
        for what, prefix in (("base topic prefix", base_topic_prefix), ("discovery prefix", discovery_prefix)):
            if not prefix or prefix.startswith("/") or prefix.endswith("/") or set(prefix) & {"+", "#", "\0"}:
                raise ConfigError(f"MQTT {what} {prefix!r}: a topic without wildcards or leading/trailing '/'")
        return cls(
            base=f"{base_topic_prefix}/{treadmill_id}",
            discovery=discovery_topic(treadmill_id, discovery_prefix),
            ha_status=f"{discovery_prefix}/status",
        )

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def timer(self) -> str:
        return f"{self.base}/timer"

    @property
    def plan(self) -> str:
        """The plan chosen in Home Assistant's select (retained; a choice, not a command)."""
        return f"{self.base}/plan"

    @property
    def commands(self) -> str:
        """The subscription filter for commands."""
        return f"{self.base}/cmd/+"

    @property
    def cmd_prefix(self) -> str:
        return f"{self.base}/cmd/"

    @property
    def result(self) -> str:
        return f"{self.base}/cmd/result"

    def leaf(self, name: str) -> str:
        return f"{self.base}/{name}"
