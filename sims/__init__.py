"""Simulated belts and devices, shipped in the product like any driver.

``sim://motorized`` and ``sim://manual`` (``sims.driver``) run belt physics in process; the serial
and Bluetooth device simulators speak the real bytes. Faults are injected with ``fault=KIND@SECONDS``:
one engine (``sims.faults.FaultSchedule``) times them for every device, and the link faults are
manipulators of a ``sims.link.FaultyLink`` around the device's transport.
Imports ``drivers`` (types, codecs) and nothing above it.
"""
