"""``SerialLink.close()``: it returns only once the port is really closed, however often it is called.

The cause of the flaky ``test_pulse_stalled_board_is_a_lost_link`` (issue 10): the driver's task
was cancelled while its ``close()`` waited for the transport, and the driver's own ``close()`` then
found the link already marked closed and returned while serial_asyncio_fast's close task still ran.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from retrotread.drivers.errors import LinkLost
from retrotread.drivers.serial_link import SerialLink
from retrotread.sims.pty import PtyEndpoint


def _transport_closing() -> list[asyncio.Task[object]]:
    """serial_asyncio_fast's background close tasks still running."""
    return [t for t in asyncio.all_tasks() if not t.done() and "_call_connection_lost" in repr(t.get_coro())]


def _link(path: Path) -> SerialLink:
    def lost(exc: LinkLost) -> None:
        raise AssertionError(f"the link was closed on purpose, not lost: {exc}")

    return SerialLink(str(path), baudrate=115200, on_data=lambda data, t: None, on_lost=lost)


async def test_close_after_a_cancelled_close_waits_for_the_port(tmp_path: Path) -> None:
    async with PtyEndpoint(tmp_path / "ttyX", on_data=lambda data, t: None):
        link = _link(tmp_path / "ttyX")
        await link.open()
        first = asyncio.create_task(link.close())
        await asyncio.sleep(0)  # one turn: the first close is now waiting on the transport
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await link.close()
        assert _transport_closing() == []
        assert not link.is_open


async def test_two_closes_at_once_both_wait_for_the_port(tmp_path: Path) -> None:
    async with PtyEndpoint(tmp_path / "ttyX", on_data=lambda data, t: None):
        link = _link(tmp_path / "ttyX")
        await link.open()
        first = asyncio.create_task(link.close())
        await asyncio.sleep(0)
        await link.close()
        assert _transport_closing() == []
        await first
        await link.close()  # and a third, on a closed link, does nothing
        await link.open()  # the link is reusable afterwards
        assert link.is_open
        await link.close()
