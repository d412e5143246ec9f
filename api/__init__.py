"""Faces: the FastAPI app (REST, SSE, dashboard) and the MQTT bridge. No rule, unit conversion or timer lives here."""
