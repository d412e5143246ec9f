"""The controller's state as the faces see it: the snapshot, the session view, and their publishing.

``StateViews`` builds the immutable ``StateSnapshot`` and ``SessionView`` (interfaces.md) from the
supervisor, the last sample and the running session, and publishes ``state`` on the hub on change
(at most every STATE_MIN_INTERVAL_S unless forced) and as a heartbeat. Building a view never
changes anything, so any loop or face may ask for one at any time.
"""

from __future__ import annotations

from retrotread.daemon.controller_base import ControllerBase, round_or_none
from retrotread.daemon.events import rule_name
from retrotread.daemon.session import RunningSession
from retrotread.daemon.snapshot import BeltView, SessionView, StateSnapshot, StopView, iso
from retrotread.drivers.types import DeviceInfo
from retrotread.safety.supervisor import STANDSTILL_MPH, Mode

STATE_HEARTBEAT_S = 5.0  # state is published on change and at least this often
STATE_MIN_INTERVAL_S = 0.5  # ... and at most this often unless something forces it


class StateViews(ControllerBase):
    """The snapshot and session view, and the ``state`` and ``timer`` publishing."""

    @property
    def device(self) -> DeviceInfo | None:
        """The machine's own description (re-read by the driver at each connect), None if it has none."""
        return self._driver.device

    @property
    def session_paused(self) -> bool | None:
        """Whether the running session is paused (None with no session)."""
        return None if self.session is None else self.session.paused_at is not None

    def sample_age(self) -> float | None:
        """Seconds since the last sample (monotonic), or None before the first."""
        return None if self._sample is None else self.clock() - self._sample.t

    def snapshot(self) -> StateSnapshot:
        sup = self.supervisor
        sample = self._sample
        belt = None
        if sample is not None:
            mph = sample.speed.mph
            belt = BeltView(
                speed_mph=round(mph, 3),
                speed_kmh=round(sample.speed.kmh, 3),
                incline_pct=sample.incline_pct,
                distance_m=round_or_none(sample.distance_m, 1),
                moving=mph > STANDSTILL_MPH,
            )
        latch = sup.latch
        stop = StopView(latched=False)
        if latch is not None:
            stop = StopView(
                latched=True, reason=latch.reason, rule=rule_name(latch.rule), since=self._wall_at(latch.since)
            )
        target = sup.target.mph if sup.target is not None else None
        return StateSnapshot(
            id=self.id,
            mode=self.mode.value,
            driver=self._driver.url,
            connected=sup.link_up and self._driver.connected,
            armed=sup.armed,
            belt=belt,
            target_mph=round_or_none(target, 3),
            envelope_mph=self.safety.envelope.mph if self.mode is Mode.REVERSE else None,
            target_kmh=round_or_none(sup.target.kmh if sup.target is not None else None, 3),
            envelope_kmh=self.safety.envelope.kmh if self.mode is Mode.REVERSE else None,
            stop=stop,
            session=self.session_view(),
            ts=iso(self.wall()),
            seq=self._seq,
            device=self.device.to_json() if self.device is not None else None,
        )

    def session_view(self, session: RunningSession | None = None) -> SessionView | None:
        session = session or self.session
        if session is None:
            return None
        v = session.timer.view(self.clock())
        return SessionView(
            id=session.id,
            plan=session.plan.name,
            phase=v.phase,
            set=v.set_no,
            sets=v.sets,
            remaining_s=round(v.remaining_s, 1),
            elapsed_s=round(v.elapsed_s, 1),
            ends_at=self._wall_at(v.ends_at) if v.ends_at is not None else None,
            paused=v.paused,
        )

    def _state_key(self) -> tuple[object, ...]:
        """What makes the published state different; the belt's continuous numbers are coarsened
        because every sample goes out as telemetry anyway."""
        sup = self.supervisor
        sample = self._sample
        belt: tuple[object, ...] = ()
        if sample is not None:
            mph = sample.speed.mph
            dist = sample.distance_m
            belt = (round(mph, 1), mph > STANDSTILL_MPH, sample.incline_pct, None if dist is None else round(dist))
        session = self.session
        seg = session.timer.current if session is not None else None
        timer = (session.id, seg, session.paused_at is not None) if session is not None else None
        return (sup.link_up and self._driver.connected, sup.armed, belt, sup.target, sup.latch, timer)

    def _publish_state(self, force: bool = False) -> None:
        now = self.clock()
        if not force:
            # At most STATE_MIN_INTERVAL_S apart unless forced (a latch, a reconnect, a session's
            # end force it), and only on change or for the heartbeat: the snapshot is not free.
            since = now - self._last_state_at
            if since < STATE_MIN_INTERVAL_S:
                return
            key = self._state_key()
            if key == self._last_state_key and since < STATE_HEARTBEAT_S:
                return
        else:
            key = self._state_key()
        self._seq += 1
        self._last_state_key = key
        self._last_state_at = now
        try:
            self.hub.publish("state", self.snapshot().model_copy(update={"seq": self._seq}))
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)

    def _publish_timer(self, session: RunningSession | None = None) -> None:
        try:
            view = self.session_view(session)
            if view is not None:
                self.hub.publish("timer", view)
        except Exception as exc:  # publishing never ends a loop
            self._contained("publish", exc)
