"""Simulated belts and devices, shipped in the product like any driver.

``sim://motorized`` and ``sim://manual`` (``sims.driver``) run belt physics in process; the serial
and Bluetooth device simulators speak the real bytes. Faults are injected with ``fault=KIND@SECONDS``.
Imports ``drivers`` (types, codecs) and nothing above it.
"""
