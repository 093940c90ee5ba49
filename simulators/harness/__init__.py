"""The one harness: a private Mosquitto, a fresh database, ``sensord run`` as a child process,
a /metrics scrape and the MQTT v5 wire helpers, shared by the tests, the benchmarks and the demo.

It lives under ``simulators/`` rather than as a top-level package because the demo
(``simulators/demo.py``) ships in the wheel and needs it there too, and ``simulators`` is already
a shipped package: no new, generic top-level name (``harness``) lands in site-packages.
Nothing here is a test double: the broker is the Mosquitto binary, the database is a real one.
"""
