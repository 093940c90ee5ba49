"""SIGHUP (systemd ExecReload): reload rules, routing and registry; never stop the daemon.

A file that does not load is refused: logged, counted, and the running set stays.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client import Counter

from sensord.adapters.directory import RegistryDirectory
from sensord.adapters.metrics import Metrics
from sensord.adapters.rule_files import load_policy, load_rules
from sensord.config import Settings
from sensord.errors import RuleError
from sensord.paths import policy_file, rules_directory
from sensord.services.alerts import AlertPipeline
from sensord.services.dispatcher import Dispatcher

log = logging.getLogger("sensord.reload")
T = TypeVar("T")


def install_reload(
    loop: asyncio.AbstractEventLoop,
    directory: RegistryDirectory,
    settings: Settings,
    alerts: AlertPipeline | None,
    dispatcher: Dispatcher | None,
    metrics: Metrics,
) -> None:
    """Make SIGHUP reload what is running (replaces the start-up handler)."""
    pending: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        log.info("SIGHUP: reloading", extra={"what": "rules, routing, registry"})
        if alerts is not None:
            reload_rules(settings, alerts, metrics)
        if dispatcher is not None:
            reload_policy(settings, dispatcher, metrics)
        task = loop.create_task(directory.reload("sighup"), name="sensord.reload")
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)


def reload_rules(settings: Settings, alerts: AlertPipeline, metrics: Metrics) -> None:
    """Swap in the rule files as they are now, unless they are invalid."""
    rules = _refusing("rule", rules_directory(settings), load_rules, metrics.rule_reloads)
    if rules is not None:
        alerts.swap_rules(rules)  # between two batches: the loop runs one thing at a time
        log.info("rules reloaded", extra={"rules": len(rules.rules), "files": list(rules.sources)})


def reload_policy(settings: Settings, dispatcher: Dispatcher, metrics: Metrics) -> None:
    """Swap in the dispatch policy as it is now, unless it is invalid."""
    policy = _refusing("routing", policy_file(settings), load_policy, metrics.policy_reloads)
    if policy is not None:
        dispatcher.policy = policy  # new orders only: running ones keep their SLA
        log.info("routing policy reloaded", extra={"routes": len(policy.routes)})


def _refusing(what: str, path: Path, load: Callable[[Path], T], counter: Counter) -> T | None:
    """Load for a reload; a failure is logged and counted and leaves the running set."""
    try:
        loaded = load(path)
    except Exception as exc:  # a signal handler is a loop boundary: log, count, keep running
        counter.labels("error").inc()
        problems = exc.problems if isinstance(exc, RuleError) else [f"{type(exc).__name__}: {exc}"]
        log.error(
            f"{what} reload refused; the running {what} set stays",
            extra={"path": str(path), "problems": problems},
        )
        return None
    counter.labels("ok").inc()
    return loaded
