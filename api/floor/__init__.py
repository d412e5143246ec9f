"""The floor view (issue 13.6): one page with a tile per treadmill, for a wall screen.

``retrotread floor --mqtt URL [--http HOST:PORT]`` (or ``python -m retrotread.api.floor``) runs a
small process of its own that reads only the broker (``retrotread/+/status|state|timer|event``)
and serves the page: each treadmill's name, online, belt speed, set and time left, a latched stop
with its reason, and a STOP that publishes ``cmd/estop``; tiles sorted by attention (latched, then
in use). By job: ``tiles`` (what is known, pure), ``service`` (the broker link and the HTTP app),
``page`` (the HTML).
"""

from retrotread.api.floor.service import FloorService, build_app, serve
from retrotread.api.floor.tiles import Floor, Tile

__all__ = ["Floor", "FloorService", "Tile", "build_app", "serve"]
