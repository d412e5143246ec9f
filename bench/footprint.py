"""B4, footprint: what one real daemon costs during a session, beside the floors that do the same I/O.

    python bench/footprint.py                        # 60 s window, 5 starts, a private Mosquitto
    python bench/footprint.py --seconds 60 --starts 10
    python bench/footprint.py --seconds 10 --starts 2 --no-floors       # a quick dry run
    python bench/footprint.py --broker mqtt://127.0.0.1:1883            # a broker of your own (quiet)

A real ``retrotread run --driver sim://motorized?rate_hz=10 --mode reverse --mqtt URL`` process (the
``retrotread`` next to ``--python``, default this venv's), talking MQTT to a private Mosquitto on a
free loopback port (unless ``--broker``), with one SSE client (``GET /api/v1/events``) and a session
started over HTTP (``POST /api/v1/session``, one long set, so the belt runs the whole window):

- **CPU**: utime + stime of the process (every thread) from ``/proc/PID/stat`` over ``--seconds``,
  as a percentage of one core;
- **RSS**: ``VmHWM`` (peak) and ``VmRSS`` at the end, from ``/proc/PID/status``;
- **ready**: exec → the first HTTP answer (``GET /api/v1/state``, polled every 2 ms) and exec →
  ``READY=1`` on a notify socket (``NOTIFY_SOCKET``), median of ``--starts`` separate starts with
  the same command line (one state directory, as a real restart has), plus the import profile of
  one more start (``PYTHONPROFILEIMPORTTIME``: the top-level modules by cumulative time).

It **fails loudly** (non-zero exit, no figure) if the MQTT bridge did not connect: the daemon's
retained ``retrotread/<id>/status`` must be ``online`` on the broker and its telemetry must have
arrived there during the window. A tap (MQTT 5, retain-as-published) records every message the
daemon published in the window, and the SSE client every frame it received, each with its time.

The floors, measured in the same run after the daemon has exited (both at once, each its own
process): **(a)** a bare asyncio + aiomqtt process publishing the recorded messages (same topics,
payloads, QoS and retain flags) at the recorded times to the same broker; **(b)** a bare uvicorn
app (a raw ASGI callable, no framework) serving the recorded SSE frames at the recorded times to
one client. Printed: the daemon's figures, the floors' CPU and peak RSS, and the ratios. A floor
is the plain way to do the daemon's I/O with these libraries and nothing else (floor (a) awaits
each publish, as aiomqtt does), not a lower bound: a daemon whose publish path is leaner than
aiomqtt's can come out below 1 against it; the rest of the daemon's cost is its own work (the
safety tick, the sample path, the session, serialization).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Mosquitto,
    MqttTap,
    NotifySocket,
    SseReader,
    cpu_seconds,
    free_port,
    json_line,
    machine,
    now,
    status_mb,
    stopped_at_exit,
    wait_http,
)

PLAN = "1x30m/0s,countdown=0s"  # one long set: the belt runs through the whole window
SETTLE_S = 3.0  # after the belt moves: the SSE client fed, the state publishes settled to their rate
TARGET = {"rss_mb": 45, "cpu_pct": 1.0, "ready_s": 0.8}  # shared/docs/performance.md, B4


def daemon_cmd(args: argparse.Namespace, port: int, url: str) -> list[str]:
    python = str(Path(args.python).absolute())
    return [
        python, str(Path(python).with_name("retrotread")), "run",
        "--driver", f"sim://motorized?rate_hz={args.rate_hz:g}", "--mode", "reverse",
        "--http", f"127.0.0.1:{port}", "--mqtt", url,
    ]  # fmt: skip


def spawn(
    args: argparse.Namespace, state: Path, notify: NotifySocket, url: str, log: Path, **extra: str
) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    env = {**os.environ, "RETROTREAD_DAEMON__STATE_DIR": str(state), "NOTIFY_SOCKET": notify.path, **extra}
    with log.open("ab") as err:
        t_exec = now()
        proc = subprocess.Popen(daemon_cmd(args, port, url), env=env, stdout=subprocess.DEVNULL, stderr=err)
    return proc, port, t_exec


def one_start(args: argparse.Namespace, state: Path, url: str, log: Path) -> tuple[float, float | None]:
    """exec → first HTTP answer, exec → READY=1 (None if it never came within the wait)."""
    notify = NotifySocket(tempfile.mkdtemp(dir=state.parent))
    try:
        proc, port, t_exec = spawn(args, state, notify, url, log)
        with stopped_at_exit(proc):
            t_http = wait_http(f"http://127.0.0.1:{port}", "/api/v1/state", 60, proc)
            deadline = now() + 10
            while notify.first("READY=1") is None and now() < deadline and proc.poll() is None:
                time.sleep(0.002)
        ready = notify.first("READY=1")
        return t_http - t_exec, None if ready is None else ready - t_exec
    finally:
        notify.close()


def import_profile(args: argparse.Namespace, state: Path, url: str, top: int = 12) -> list[dict[str, Any]]:
    """One more start with ``PYTHONPROFILEIMPORTTIME``: the top-level imports by cumulative time."""
    log = state.parent / "importtime.log"
    notify = NotifySocket(tempfile.mkdtemp(dir=state.parent))
    try:
        proc, port, _ = spawn(args, state, notify, url, log, PYTHONPROFILEIMPORTTIME="1")
        with stopped_at_exit(proc):
            wait_http(f"http://127.0.0.1:{port}", "/api/v1/state", 60, proc)
    finally:
        notify.close()
    rows: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part for part in line.split(":", 1)[1].split("|"))
        if cumulative.strip().isdigit() and not name.startswith("  ") and name.strip():
            rows.append({"module": name.strip(), "cumulative_ms": round(int(cumulative) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def measured_run(args: argparse.Namespace, state: Path, url: str, log: Path) -> dict[str, Any]:
    """The daemon during a session, over the window: its figures and what it sent."""
    tap = MqttTap(url, "#")
    notify = NotifySocket(tempfile.mkdtemp(dir=state.parent))
    sse: SseReader | None = None
    try:
        proc, port, t_exec = spawn(args, state, notify, url, log)
        with stopped_at_exit(proc):
            base = f"http://127.0.0.1:{port}"
            t_http = wait_http(base, "/api/v1/state", 60, proc)
            token = (state / "token").read_text().strip()
            import httpx

            with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
                sse = SseReader(base)
                resp = http.post("/api/v1/session", json={"plan": PLAN})
                if resp.status_code != 201:
                    raise SystemExit(f"bench: the session did not start: {resp.status_code} {resp.text}")
                deadline = now() + 30
                while not any(
                    kind == "state" and (json.loads(data).get("belt") or {}).get("moving")
                    for _t, kind, data in list(sse.frames)
                ):
                    if now() > deadline or proc.poll() is not None:
                        raise SystemExit("bench: the belt did not start moving")
                    time.sleep(0.05)
                time.sleep(SETTLE_S)
                cpu0, t0 = cpu_seconds(proc.pid), now()
                time.sleep(args.seconds)
                cpu1, t1 = cpu_seconds(proc.pid), now()
                hwm, rss = status_mb(proc.pid, "VmHWM"), status_mb(proc.pid, "VmRSS")
                session = http.get("/api/v1/state").json().get("session") or {}
            ready = notify.first("READY=1")
    finally:
        if sse is not None:
            sse.close()
        notify.close()
        tap.close()
    status = tap.last("status", before=t1)
    mine = [h for h in tap.between(t0, t1) if h.topic.startswith(("retrotread/", "homeassistant/"))]
    telemetry = [h for h in mine if h.topic.endswith("/telemetry")]
    online = status is not None and status.payload.strip() == b"online"
    if not online or not telemetry:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise SystemExit(
            f"bench: FAILED: the daemon's MQTT bridge did not connect to {url}: retained status "
            f"{status.payload if status else None!r} on {status.topic if status else 'no status topic'}, "
            f"{len(telemetry)} telemetry messages in the window"
        )
    frames = sse.between(t0, t1) if sse is not None else []
    if not frames:
        raise SystemExit("bench: FAILED: the SSE client received nothing in the window")
    if session.get("phase") != "work":
        raise SystemExit(f"bench: FAILED: the session was not running at the end of the window: {session}")
    window = t1 - t0
    return {
        "window_s": round(window, 1),
        "cpu_s": round(cpu1 - cpu0, 2),
        "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / window, 2),
        "rss_mb_peak": round(hwm, 1),
        "rss_mb_end": round(rss, 1),
        "this_run_ready_http_s": round(t_http - t_exec, 3),
        "this_run_ready_notify_s": None if ready is None else round(ready - t_exec, 3),
        "treadmill": status.topic.split("/")[1] if status else None,
        "mqtt_online": online,
        "mqtt_messages": len(mine),
        "mqtt_per_s": round(len(mine) / window, 1),
        "mqtt_by_leaf": dict(Counter(h.topic.rsplit("/", 1)[-1] for h in mine)),
        "sse_frames": len(frames),
        "sse_per_s": round(len(frames) / window, 1),
        "sse_by_event": dict(Counter(kind for _t, kind, _d in frames)),
        "session_phase_at_end": session.get("phase"),
        "_mqtt": [
            {
                "at": h.t - t0,
                "topic": h.topic,
                "payload": base64.b64encode(h.payload).decode(),
                "qos": h.qos,
                "retain": h.retain,
            }
            for h in mine
        ],
        "_sse": [{"at": t - t0, "event": kind, "data": data} for t, kind, data in frames],
        "_window": window,
    }


# ------------------------------------------------------------------ the floors (own processes)


def floor_mqtt(schedule_path: str, url: str) -> None:
    """Floor (a): asyncio + aiomqtt, publishing the daemon's messages at their times, nothing else."""
    from urllib.parse import urlsplit

    import aiomqtt

    where = urlsplit(url)  # not retrotread's parser: this process imports nothing of ours
    data = json.loads(Path(schedule_path).read_text())
    msgs = [(m["at"], m["topic"], base64.b64decode(m["payload"]), m["qos"], m["retain"]) for m in data["mqtt"]]

    async def main() -> dict[str, Any]:
        async with aiomqtt.Client(
            where.hostname or "127.0.0.1",
            where.port or 1883,
            username=where.username,
            password=where.password,
            identifier=f"bench-floor-{os.getpid()}",
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        ) as client:
            c0, t0 = os.times(), time.monotonic()
            for at, topic, payload, qos, retain in msgs:
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await client.publish(topic, payload, qos=qos, retain=retain)
            await asyncio.sleep(max(0.0, t0 + data["window"] - time.monotonic()))
            c1, t1 = os.times(), time.monotonic()
        return {"cpu_s": (c1.user + c1.system) - (c0.user + c0.system), "window_s": t1 - t0, "messages": len(msgs)}

    report = asyncio.run(main())
    report["rss_mb_peak"] = status_mb(os.getpid(), "VmHWM")
    print(json.dumps(report), flush=True)


def floor_sse(schedule_path: str, port: int) -> None:
    """Floor (b): uvicorn and a raw ASGI callable streaming the daemon's frames at their times to one
    client: the HTTP server's share of the daemon's cost, with no framework and no work."""
    import uvicorn

    data = json.loads(Path(schedule_path).read_text())
    frames = [(f["at"], f"event: {f['event']}\r\ndata: {f['data']}\r\n\r\n".encode()) for f in data["sse"]]
    window = float(data["window"])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        c0, t0 = os.times(), time.monotonic()
        for at, frame in frames:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await asyncio.sleep(max(0.0, t0 + window - time.monotonic()))
        c1, t1 = os.times(), time.monotonic()
        report = {
            "cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
            "window_s": t1 - t0,
            "frames": len(frames),
            "rss_mb_peak": status_mb(os.getpid(), "VmHWM"),
        }
        print(json.dumps(report), flush=True)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve())


def floors(args: argparse.Namespace, run: dict[str, Any], url: str, tmp: Path) -> dict[str, Any]:
    """Both floors at once, each in its own process, fed the daemon's recorded window."""
    schedule = tmp / "schedule.json"
    schedule.write_text(json.dumps({"mqtt": run["_mqtt"], "sse": run["_sse"], "window": run["_window"]}))
    python = str(Path(args.python).absolute())
    port = free_port()
    me = str(Path(__file__).resolve())
    sse_proc = subprocess.Popen(
        [python, me, "--floor-sse", str(schedule), "--floor-port", str(port)], stdout=subprocess.PIPE
    )
    mqtt_proc: subprocess.Popen[bytes] | None = None
    reader: SseReader | None = None
    try:
        with stopped_at_exit(sse_proc):
            wait_http(f"http://127.0.0.1:{port}", "/healthz", 30, sse_proc)
            reader = SseReader(f"http://127.0.0.1:{port}", "/events")
            mqtt_proc = subprocess.Popen(
                [python, me, "--floor-mqtt", str(schedule), "--url", url], stdout=subprocess.PIPE
            )
            out_mqtt, _ = mqtt_proc.communicate(timeout=run["_window"] + 60)
            assert sse_proc.stdout is not None
            line = sse_proc.stdout.readline()
    finally:
        if reader is not None:
            reader.close()
        if mqtt_proc is not None and mqtt_proc.poll() is None:
            mqtt_proc.kill()
            mqtt_proc.wait()
    if mqtt_proc.returncode != 0 or not out_mqtt.strip():
        raise SystemExit(f"bench: floor (a) failed ({mqtt_proc.returncode})")
    if not line.strip():
        raise SystemExit("bench: floor (b) failed")
    a, b = json.loads(out_mqtt), json.loads(line)
    a["cpu_pct_of_one_core"] = round(100 * a["cpu_s"] / a["window_s"], 2)
    b["cpu_pct_of_one_core"] = round(100 * b["cpu_s"] / b["window_s"], 2)
    b["frames_received"] = len(reader.frames) if reader is not None else 0
    for r in (a, b):
        r["cpu_s"], r["window_s"], r["rss_mb_peak"] = (
            round(r["cpu_s"], 2),
            round(r["window_s"], 1),
            round(r["rss_mb_peak"], 1),
        )
    return {
        "mqtt_asyncio_aiomqtt": {"what": "asyncio + aiomqtt publishing the recorded messages at their times", **a},
        "sse_bare_uvicorn": {"what": "uvicorn + a raw ASGI app streaming the recorded frames to one client", **b},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window during the session")
    p.add_argument("--starts", type=int, default=5, help="starts timed for the ready figures (median)")
    p.add_argument("--rate-hz", type=float, default=10.0, help="the simulated belt's sample rate")
    p.add_argument(
        "--broker", "--mqtt", help="mqtt:// URL of a quiet broker instead of a private Mosquitto (--mqtt: old name)"
    )
    p.add_argument("--python", default=sys.executable, help="the venv python whose retrotread is measured")
    p.add_argument("--no-floors", action="store_true", help="skip the floors (a quick look only)")
    p.add_argument("--floor-mqtt", help=argparse.SUPPRESS)
    p.add_argument("--floor-sse", help=argparse.SUPPRESS)
    p.add_argument("--floor-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.floor_mqtt:
        floor_mqtt(args.floor_mqtt, args.url)
        return
    if args.floor_sse:
        floor_sse(args.floor_sse, args.floor_port)
        return
    broker = None if args.broker else Mosquitto()
    url = args.broker or (broker.url if broker else "")
    try:
        with tempfile.TemporaryDirectory(prefix="retrotread-b4-") as tmp_name:
            tmp = Path(tmp_name)
            state = tmp / "state"
            state.mkdir()
            log = tmp / "daemon.log"
            starts = [one_start(args, state, url, log) for _ in range(args.starts)]
            profile = import_profile(args, state, url)
            run = measured_run(args, state, url, log)
            base = floors(args, run, url, tmp) if not args.no_floors else None
    finally:
        if broker is not None:
            broker.close()
    http = [s[0] for s in starts]
    notify = [s[1] for s in starts if s[1] is not None]
    figures = {k: v for k, v in run.items() if not k.startswith("_")}
    out: dict[str, Any] = {
        **machine("B4"),
        "broker": f"{broker.version} (private, loopback)" if broker else args.broker,
        "command": " ".join(daemon_cmd(args, 0, "URL")).replace(" 127.0.0.1:0 ", " 127.0.0.1:PORT "),
        "plan": PLAN,
        "sse_clients": 1,
        **figures,
        "ready_http_s_median": round(statistics.median(http), 3) if http else None,
        "ready_notify_s_median": round(statistics.median(notify), 3) if notify else None,
        "ready_http_s_all": [round(x, 3) for x in http],
        "ready_notify_s_all": [round(x, 3) for x in notify],
        "import_profile_top": profile,
    }
    if base is not None:
        a = base["mqtt_asyncio_aiomqtt"]["cpu_pct_of_one_core"]
        b = base["sse_bare_uvicorn"]["cpu_pct_of_one_core"]
        cpu = run["cpu_pct_of_one_core"]
        out["floors"] = base
        out["floors_cpu_pct_sum"] = round(a + b, 2)
        out["ratio_cpu_over_floors_sum"] = round(cpu / (a + b), 2) if a + b else None
        out["ratio_cpu_over_mqtt_floor"] = round(cpu / a, 2) if a else None
        out["ratio_cpu_over_sse_floor"] = round(cpu / b, 2) if b else None
        rss_floor = max(base["mqtt_asyncio_aiomqtt"]["rss_mb_peak"], base["sse_bare_uvicorn"]["rss_mb_peak"])
        out["ratio_rss_over_larger_floor"] = round(run["rss_mb_peak"] / rss_floor, 2)
    out["target"] = TARGET
    out["met"] = {
        "rss": run["rss_mb_peak"] <= TARGET["rss_mb"],
        "cpu": run["cpu_pct_of_one_core"] <= TARGET["cpu_pct"],
        "ready": bool(http) and statistics.median(http) <= TARGET["ready_s"],
    }
    print(json_line(out))


if __name__ == "__main__":
    main()
