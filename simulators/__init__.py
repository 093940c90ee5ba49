"""Sensor simulators for sensord: protocol-v1 payloads, publishers, scenarios."""
