"""Test-only helpers (order and fleet helpers); the services come from simulators.harness."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
