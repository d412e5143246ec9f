"""``retrotread demo``'s broker choice: given, already listening on loopback, embedded, or off."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import aiomqtt
import pytest
from helpers import free_port
from mqtt_broker import Mosquitto

from retrotread.api.broker import demo_broker, subscribe_hint
from retrotread.api.mqtt import MqttBridge
from retrotread.daemon.controller import Controller
from retrotread.drivers import open_driver


async def test_none_turns_mqtt_off_and_a_given_url_is_used() -> None:
    async with demo_broker("none") as choice:
        assert (choice.url, choice.source) == (None, "off")
    async with demo_broker("mqtt://u:secret@broker.lan") as choice:
        assert (choice.url, choice.source) == ("mqtt://u:secret@broker.lan", "given")
        assert "secret" not in choice.note


async def test_a_broker_already_listening_on_loopback_is_used(tmp_path: Path) -> None:
    local = Mosquitto(tmp_path)
    await local.start()
    try:
        async with demo_broker(None, port=local.port) as choice:
            assert (choice.url, choice.source) == (f"mqtt://127.0.0.1:{local.port}", "local")
    finally:
        await local.stop()


async def test_without_the_extra_mqtt_is_off_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_amqtt(name: str, package: str | None = None) -> ModuleType:
        if name.startswith("amqtt"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_amqtt)
    async with demo_broker(None, port=free_port()) as choice:
        assert choice.url is None and choice.source == "off"
        assert "pip install 'retrotread[broker]'" in choice.note and "mosquitto" in choice.note


async def test_s16_the_embedded_loopback_broker_carries_the_bridge() -> None:
    pytest.importorskip("amqtt.broker")
    port = free_port()
    async with demo_broker(None, port=port) as choice:
        assert choice.source == "embedded" and choice.url is not None
        async with aiomqtt.Client("127.0.0.1", port, identifier="demo-watcher") as w:
            await w.publish("retrotread/demo/cmd/start", json.dumps({"speed_mph": 1.0}), qos=1, retain=True)
            async with Controller(open_driver("sim://motorized?rate_hz=20"), treadmill_id="demo") as controller:
                async with MqttBridge(controller, choice.url) as mqtt:
                    await mqtt.wait_connected(within=10)
                    await w.subscribe("retrotread/demo/#", qos=1)
                    await w.publish("retrotread/demo/cmd/stop", json.dumps({"id": "probe"}), qos=1)
                    seen: dict[str, bytes] = {}
                    async for m in w.messages:
                        seen[m.topic.value] = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                        if m.topic.value.endswith("cmd/result"):
                            break
                    assert seen["retrotread/demo/status"] == b"online"
                    assert json.loads(seen["retrotread/demo/cmd/result"])["id"] == "probe"
                    assert mqtt.retained_ignored == 1
                    assert controller.snapshot().target_mph is None


def test_subscribe_hint_never_shows_the_password() -> None:
    assert subscribe_hint("mqtt://127.0.0.1:1883", "gym-3") == (
        "mosquitto_sub -h 127.0.0.1 -p 1883 -t 'retrotread/gym-3/#' -v"
    )
    line = subscribe_hint("mqtts://me:secret@b.lan?ca=/etc/ca.pem", "gym-3")
    assert "secret" not in line and "-u me" in line and "--cafile /etc/ca.pem" in line
