"""Where finished sets and sessions go.

``MemoryHistory`` keeps them for the life of the process (the standalone ``deadmill`` command and
tests); the SQLite store keeps them across restarts. Both take a set when it ends and a
checkpoint of the running set, so a crash loses at most the last few seconds of one set.
"""

from __future__ import annotations

from typing import Protocol

from daemon.snapshot import Event, Outcome, SessionRecord, SetResult


class History(Protocol):
    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int: ...

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        """The running set so far (marked ``interrupted`` until it ends)."""

    def record_set(self, session_id: int, result: SetResult) -> None: ...

    def record_event(self, session_id: int, event: Event) -> None: ...

    def end(self, session_id: int, outcome: Outcome, ended_at: str) -> None: ...

    def get(self, session_id: int) -> SessionRecord | None: ...

    def recent(self, limit: int = 20) -> list[SessionRecord]: ...

    def close(self) -> None: ...


class MemoryHistory:
    def __init__(self) -> None:
        self._sessions: dict[int, SessionRecord] = {}
        self._next = 1

    def begin(self, plan: str, mode: str, driver: str, sets_planned: int, started_at: str) -> int:
        sid = self._next
        self._next += 1
        self._sessions[sid] = SessionRecord(
            id=sid,
            plan=plan,
            mode=mode,
            driver=driver,
            started_at=started_at,
            ended_at=None,
            outcome=None,
            sets_planned=sets_planned,
            sets=(),
        )
        return sid

    def _put_set(self, session_id: int, result: SetResult) -> None:
        rec = self._sessions[session_id]
        others = tuple(s for s in rec.sets if s.set != result.set)
        self._sessions[session_id] = rec.model_copy(update={"sets": (*others, result)})

    def checkpoint(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_set(self, session_id: int, result: SetResult) -> None:
        self._put_set(session_id, result)

    def record_event(self, session_id: int, event: Event) -> None:
        rec = self._sessions[session_id]
        self._sessions[session_id] = rec.model_copy(update={"events": (*rec.events, event)})

    def end(self, session_id: int, outcome: Outcome, ended_at: str) -> None:
        rec = self._sessions[session_id]
        self._sessions[session_id] = rec.model_copy(update={"outcome": outcome, "ended_at": ended_at})

    def get(self, session_id: int) -> SessionRecord | None:
        return self._sessions.get(session_id)

    def recent(self, limit: int = 20) -> list[SessionRecord]:
        return sorted(self._sessions.values(), key=lambda r: r.id, reverse=True)[:limit]

    def close(self) -> None:
        pass
