"""B4's stable figure: instructions of daemon work per simulated second, counted by callgrind.

    python bench/callgrind.py                                  # this venv's daemon, --mqtt none, then MQTT
    python bench/callgrind.py --python /tmp/before/.venv/bin/python --label "before: bf8810e"
    python bench/callgrind.py --mqtt private --seconds 60 --top 20 --keep /tmp/cg

Wall-clock CPU shares move with whatever else the machine runs; the instructions a process
executes hardly do, so this is the figure to compare two trees on a shared, noisy machine. A real
``retrotread run --driver 'sim://motorized?rate_hz=R&seed=S' --mode reverse`` (the retrotread
installed for ``--python``, through a one-line shim: see ``SHIM``) runs under
``valgrind --tool=callgrind``. The bench waits for ``READY=1`` on a notify socket and dumps the
counters (start-up: exec → ready), starts a session over HTTP, opens one SSE client, waits for
the belt to move, zeroes the counters, lets ``--seconds`` of wall time pass and dumps again (the
window). Under callgrind the daemon runs 50-100 times slower, so the simulated seconds of the
window are counted from what it did, not from the clock: the samples it took (its own
``retrotread_samples_total`` on ``/metrics``, read just before the zero and just after the dump)
divided by the rate; what the SSE client and the broker heard is printed beside it. Printed per run: Ir to
ready, Ir in the window, the simulated seconds, **Ir per simulated second**, ``kept_up`` (samples
over rate × wall seconds: below about 0.95 the daemon fell behind under valgrind, its evaluations
skipped beats, and the per-second figure undercounts; run it on a quieter machine or lower
``--rate-hz``), and the top functions by self cost with the shared objects' shares (C level:
Python code shows as the interpreter's eval loop).

``--mqtt``: ``none`` (``--mqtt none``), ``private`` (a private Mosquitto on a free loopback port;
the run fails unless the daemon's retained status there says ``online`` and its telemetry
arrived), ``both`` (default). Prints one JSON line. Needs valgrind and mosquitto.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Mosquitto,
    MqttTap,
    NotifySocket,
    SseReader,
    free_port,
    json_line,
    machine,
    now,
    stopped_at_exit,
    wait_http,
)

PLAN = "1x30m/0s,countdown=0s"  # one long set: the belt runs through the whole window
READY_WITHIN_S = 900.0  # start-up is 50-100 times slower under callgrind
# Valgrind keeps SIGRTMAX for itself, and the daemon refuses to start when it cannot catch every
# process-ending signal (api/compose.py: RuntimeError "sig 64 cannot be caught"). The daemon runs
# through this shim, which leaves that one signal out of signal.valid_signals() and changes nothing
# else; both trees measured get the same shim.
SHIM = (
    "import signal, sys; valid = signal.valid_signals; "
    "signal.valid_signals = lambda: valid() - {signal.SIGRTMAX}; "
    "sys.argv[0] = 'retrotread'; from retrotread.api.cli import main; sys.exit(main())"
)


def run_once(args: argparse.Namespace, mqtt: str, tmp: Path) -> dict[str, Any]:
    python = str(Path(args.python).absolute())
    port = free_port()
    state = tmp / f"state-{mqtt}"
    state.mkdir()
    broker = Mosquitto() if mqtt == "private" else None
    url = broker.url if broker is not None else "none"
    notify = NotifySocket(str(state))
    out = tmp / f"cg-{mqtt}.out"
    cmd = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", "--collect-jumps=no",
        python, "-c", SHIM, "run", "--driver", f"sim://motorized?rate_hz={args.rate_hz:g}&seed={args.seed}",
        "--mode", "reverse", "--http", f"127.0.0.1:{port}", "--mqtt", url,
    ]  # fmt: skip
    env = {**os.environ, "RETROTREAD_DAEMON__STATE_DIR": str(state), "NOTIFY_SOCKET": notify.path}
    tap = MqttTap(url, "retrotread/#") if broker is not None else None
    t_exec = now()
    log = tmp / f"daemon-{mqtt}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)
    sse: SseReader | None = None
    try:
        with stopped_at_exit(proc):
            base = f"http://127.0.0.1:{port}"
            deadline = now() + READY_WITHIN_S
            while notify.first("READY=1") is None:
                if proc.poll() is not None:
                    sys.stderr.write(log.read_text(errors="replace")[-3000:])
                    raise SystemExit(f"bench: the daemon under callgrind exited ({proc.returncode}) before READY=1")
                if now() > deadline:
                    raise SystemExit("bench: no READY=1 under callgrind")
                time.sleep(0.05)
            ready_s = (notify.first("READY=1") or t_exec) - t_exec
            control(proc.pid, "--dump=startup")
            wait_http(base, "/api/v1/state", 120, proc)
            token = (state / "token").read_text().strip()
            import httpx

            with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
                resp = http.post("/api/v1/session", json={"plan": PLAN})
                if resp.status_code != 201:
                    raise SystemExit(f"bench: the session did not start: {resp.status_code} {resp.text}")
                sse = SseReader(base)
                wait_moving(sse, within=300)
                time.sleep(2.0)  # the belt at speed, the SSE client fed: steady state
                seen0 = samples_seen(http)
                control(proc.pid, "--zero")
                t0 = now()
                time.sleep(args.seconds)
                control(proc.pid, "--dump=window")
                t1 = now()
                seen1 = samples_seen(http)
                running = http.get("/api/v1/state").json().get("session") or {}
            # The samples the daemon took in the window, by its own counter (read just outside it: a
            # sample or two of slack in 300); what the SSE client and the broker got, as a check.
            samples = seen1 - seen0
            sse_telemetry = sum(1 for _t, kind, _d in sse.between(t0, t1) if kind == "telemetry")
            mqtt_telemetry = None
            online = None
            if tap is not None:
                status = tap.last("status", before=t1)
                online = status is not None and status.payload.strip() == b"online"
                telemetry = [h for h in tap.between(t0, t1) if h.topic.endswith("/telemetry")]
                mqtt_telemetry = len(telemetry)
                if not online or not telemetry:
                    raise SystemExit(
                        f"bench: the MQTT bridge did not connect to {url}: status "
                        f"{status.payload if status else None!r}, {len(telemetry)} telemetry messages in the window"
                    )
    finally:
        if sse is not None:
            sse.close()
        if tap is not None:
            tap.close()
        notify.close()
        if broker is not None:
            broker.close()
    startup = dumped(out, "startup")
    window = dumped(out, "window")
    wall = t1 - t0
    simulated = samples / args.rate_hz
    ir = window["total"]
    return {
        "mqtt": "private Mosquitto " + (broker.version if broker else "") if mqtt == "private" else "none",
        "mqtt_online": online,
        "ready_s_under_callgrind": round(ready_s, 1),
        "ir_to_ready": startup["total"],
        "window_wall_s": round(wall, 1),
        "samples": samples,
        "telemetry_heard": {"sse": sse_telemetry, "mqtt": mqtt_telemetry},
        "simulated_s": round(simulated, 1),
        "kept_up": round(samples / (args.rate_hz * wall), 3) if wall else None,
        "session_phase_at_end": running.get("phase"),
        "ir_window": ir,
        "ir_per_simulated_s": round(ir / simulated) if simulated else None,
        "ir_per_sample": round(ir / samples) if samples else None,
        "top_self": window["top"][: args.top],
        "objects": window["objects"],
    }


def control(pid: int, what: str) -> None:
    """``callgrind_control`` on the daemon: dump (then zero) or zero its counters."""
    done = subprocess.run(
        ["callgrind_control", what, str(pid)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"bench: callgrind_control {what} failed: {done.stdout} {done.stderr}")


def samples_seen(http: Any) -> int:
    """The daemon's own count of belt samples taken (``retrotread_samples_total`` on /metrics)."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("retrotread_samples_total"):
            return int(float(line.rsplit(" ", 1)[1]))
    raise SystemExit("bench: /metrics has no retrotread_samples_total")


def wait_moving(sse: SseReader, within: float) -> None:
    deadline = now() + within
    while now() < deadline:
        for _t, kind, data in list(sse.frames):
            if kind == "state" and (json.loads(data).get("belt") or {}).get("moving"):
                return
        time.sleep(0.2)
    raise SystemExit("bench: the belt did not start moving under callgrind")


def dumped(out: Path, label: str) -> dict[str, Any]:
    """The dump whose trigger names ``label``: its total Ir, top functions and shared objects."""
    parts = sorted(out.parent.glob(out.name + ".*"), key=lambda f: int(f.suffix[1:]))
    for path in parts:
        if f"Trigger: dump {label}\n" in path.read_text(errors="replace"):
            return self_costs([*parts[: parts.index(path)], path])
    raise SystemExit(f"bench: no callgrind dump labelled {label!r} (files: {[p.name for p in parts]})")


_NAME = re.compile(r"^(ob|fl|fi|fe|fn|cob|cfi|cfl|cfn)=\((\d+)\)(?: (.*))?$")
_TABLE = {
    "ob": "ob",
    "cob": "ob",
    "fl": "fl",
    "fi": "fl",
    "fe": "fl",
    "cfi": "fl",
    "cfl": "fl",
    "fn": "fn",
    "cfn": "fn",
}


def self_costs(paths: list[Path]) -> dict[str, Any]:
    """Self cost per function of the last of ``paths`` (callgrind's format read directly: the
    cost lines of each function, less the inclusive cost lines that follow its ``calls=``).

    callgrind_annotate is not used: on a dump taken mid-run it counts the functions on the stack
    at the dump (main, the eval loop's outer frames) with their inclusive cost. The earlier parts
    are read for the compressed names (``fn=(12) name`` once, ``fn=(12)`` after) they define.
    """
    names: dict[str, dict[str, str]] = {"ob": {}, "fl": {}, "fn": {}}
    costs: dict[tuple[str, str], int] = {}
    for path in paths:
        costs = {}
        ob = fn = ""
        after_calls = False
        for line in path.read_text(errors="replace").splitlines():
            m = _NAME.match(line)
            if m:
                key, num, name = m.groups()
                table = names[_TABLE[key]]
                if name is not None:
                    table[num] = name
                if key == "ob":
                    ob = table.get(num, f"({num})")
                elif key == "fn":
                    fn = table.get(num, f"({num})")
                continue
            if line.startswith("calls="):
                after_calls = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_calls:
                    after_calls = False  # the call's inclusive cost: the callee's, not this function's
                    continue
                fields = line.split()
                if len(fields) >= 2:
                    costs[(fn, ob)] = costs.get((fn, ob), 0) + int(fields[1])
    total = sum(costs.values())
    objects: dict[str, int] = {}
    for (_fn, ob), ir in costs.items():
        objects[Path(ob).name or "?"] = objects.get(Path(ob).name or "?", 0) + ir
    top = sorted(costs.items(), key=lambda kv: -kv[1])[:40]
    return {
        "total": total,
        "top": [
            {"fn": fn, "obj": Path(ob).name, "ir": ir, "pct": round(100 * ir / total, 2) if total else None}
            for (fn, ob), ir in top
        ],
        "objects": {k: round(100 * v / total, 1) for k, v in sorted(objects.items(), key=lambda kv: -kv[1])[:8]}
        if total
        else {},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=sys.executable, help="the venv python whose retrotread is measured")
    p.add_argument("--seconds", type=float, default=30.0, help="wall seconds counted after the belt is at speed")
    p.add_argument("--rate-hz", type=float, default=10.0, help="the simulated belt's sample rate (B4: 10)")
    p.add_argument("--seed", type=int, default=1, help="the simulator's noise seed")
    p.add_argument("--mqtt", choices=("none", "private", "both"), default="both")
    p.add_argument("--top", type=int, default=12, help="functions listed by self cost")
    p.add_argument("--keep", type=Path, help="copy the callgrind files here (for kcachegrind, callgrind_annotate)")
    p.add_argument("--label", help="a note printed with the figure, e.g. the tree's commit")
    args = p.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed (apt install valgrind)")
    modes = ("none", "private") if args.mqtt == "both" else (args.mqtt,)
    with tempfile.TemporaryDirectory(prefix="retrotread-callgrind-") as tmp:
        runs = [run_once(args, mqtt, Path(tmp)) for mqtt in modes]
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in Path(tmp).glob("cg-*"):
                shutil.copy(f, args.keep / f.name)
    version = subprocess.run(
        [args.python, "-c", "import importlib.metadata as m; print(m.version('retrotread'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        json_line(
            {
                **machine("B4-callgrind"),
                "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
                "label": args.label,
                "python_measured": str(Path(args.python).absolute()),
                "retrotread_version": version or None,
                "driver": f"sim://motorized?rate_hz={args.rate_hz:g}&seed={args.seed}",
                "plan": PLAN,
                "sse_clients": 1,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
