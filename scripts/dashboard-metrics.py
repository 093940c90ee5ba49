#!/usr/bin/env python3
"""Check that the Grafana dashboard and the Prometheus files name only metrics sensord exports.

    scripts/dashboard-metrics.py [--promql-out FILE] DASHBOARD [FILE ...]
    scripts/dashboard-metrics.py --list

The known names are read from the code: every Counter/Gauge/Histogram/Info/...
(and *MetricFamily) declared with a literal name anywhere under sensord/,
expanded the way prometheus_client exposes them (``_total``, ``_bucket``,
``_sum``, ``_count``, ``_info``); plus the metrics announced for the work-order
service that may not be declared yet (ANNOUNCED), prometheus_client's
``process_*`` metrics and Prometheus's own ``up``/``scrape_*``. This file is the
one place that list lives; scripts/check-prometheus runs it.

DASHBOARD (Grafana JSON): its layout is checked (rows, datasource variable,
``instance`` variable, unique panel ids), every PromQL expression must name
only known metrics, each selector restricted to ``job="sensord"`` (and, in
panels, ``instance=~"$instance"``). With --promql-out, the expressions are
written as recording rules (Grafana variables replaced) for
``promtool check rules`` to parse. Each further FILE (alert rules, promtool
tests) may mention only known ``sensord_*``/``process_*`` names anywhere.
Only the standard library: runs with any python3.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Metrics of the work-order service (issue 5), by type, announced before they are
# declared in sensord/adapters/metrics.py. Once declared there, an entry here is
# redundant and can go.
ANNOUNCED = {
    "sensord_event_loop_lag_seconds": "Histogram",
    "sensord_orders": "Gauge",
    "sensord_orders_created": "Counter",
    "sensord_order_transitions": "Counter",
    "sensord_order_sla_breaches": "Counter",
    "sensord_order_escalations": "Counter",
    "sensord_order_deadlines_overdue": "Gauge",
    "sensord_order_deadline_audits": "Counter",
    "sensord_outbox_pending_messages": "Gauge",
    "sensord_outbox_oldest_age_seconds": "Gauge",
    "sensord_notifications_sent": "Counter",
    "sensord_notification_failures": "Counter",
    "sensord_order_commands": "Counter",
}
# prometheus_client's ProcessCollector, and what Prometheus adds to every target.
OTHER = {
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "CounterMetricFamily": ("_total",),
    "Gauge": ("",),
    "GaugeMetricFamily": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
    "Summary": ("", "_sum", "_count", "_created"),
    "SummaryMetricFamily": ("", "_sum", "_count"),
    "Info": ("_info",),
    "InfoMetricFamily": ("_info",),
    "Enum": ("",),
}
ROWS = ("Ingest", "Alerts", "Work orders & SLA", "Health")
PANEL_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, replaced for promtool's parser.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${instance}": ".+",
    "$instance": ".+",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r'\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\s*(\(|\x00(\d+)\x00)?")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_NAME_IN_TEXT = re.compile(r"\b(?:sensord|process)_[a-z0-9_]*[a-z0-9]")


def _exposed(kind: str, name: str) -> set[str]:
    base = name.removesuffix("_total") if kind.startswith("Counter") else name
    base = base.removesuffix("_info") if kind.startswith("Info") else base
    return {base + suffix for suffix in _SUFFIXES[kind]}


def declared_metrics(source_dir: Path = REPO / "sensord") -> set[str]:
    """Exposed names of every metric declared with a literal name under ``source_dir``."""
    names: set[str] = set()
    for path in sorted(source_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if kind not in _SUFFIXES:
                continue
            first = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg == "name"), None)
            )
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names |= _exposed(kind, first.value)
    return names


def known_metrics() -> set[str]:
    announced = {n for name, kind in ANNOUNCED.items() for n in _exposed(kind, name)}
    return declared_metrics() | announced | OTHER


def selectors(expr: str) -> Iterator[tuple[str, str | None]]:
    """(metric name, its matchers or None) for every metric a PromQL expression selects."""
    blocks: list[str] = []

    def hide(match: re.Match[str]) -> str:
        blocks.append(match.group(1))
        return f"\x00{len(blocks) - 1}\x00"

    text = _MATCHERS.sub(hide, expr)
    text = _STRING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    for match in _IDENT.finditer(text):
        name, follow, block = match.groups()
        if follow == "(" or name.lower() in _KEYWORDS:
            continue
        yield name, blocks[int(block)] if block is not None else None


class Check:
    """Collects problems; each is printed as 'where: what'."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.problems: list[str] = []
        self.rules: list[tuple[str, str]] = []  # (record name, expression for promtool)
        self.used: set[str] = set()

    def fail(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def expr(self, where: str, record: str, expr: str, *, in_panel: bool) -> None:
        if not expr.strip():
            self.fail(where, "empty expression")
            return
        found = False
        for name, matchers in selectors(expr):
            found = True
            self.used.add(name)
            if name not in self.known:
                self.fail(where, f"unknown metric {name}")
            if matchers is None or 'job="sensord"' not in matchers:
                self.fail(where, f'{name} is not restricted to job="sensord"')
            elif in_panel and 'instance=~"$instance"' not in matchers:
                self.fail(where, f'{name} ignores the instance variable (instance=~"$instance")')
        if not found:
            self.fail(where, f"selects no metric: {expr}")
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            self.fail(where, f"unknown Grafana variable in {expr}")
        self.rules.append((record, expr))

    def dashboard(self, path: Path) -> None:
        try:
            dash = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self.fail(str(path), f"not JSON: {exc}")
            return
        where = str(path)
        if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
            self.fail(where, "schemaVersion missing or older than 36 (Grafana 9)")
        if not dash.get("uid"):
            self.fail(where, "no uid")
        if "DS_PROMETHEUS" not in {i.get("name") for i in dash.get("__inputs", [])}:
            self.fail(where, "no DS_PROMETHEUS input")
        variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        source = variables.get("datasource", {})
        if source.get("type") != "datasource" or source.get("query") != "prometheus":
            self.fail(where, "no templating variable 'datasource' of type prometheus")
        instance = variables.get("instance", {})
        if instance.get("type") != "query" or instance.get("datasource") != PANEL_DATASOURCE:
            self.fail(where, "no templating variable 'instance' queried from ${datasource}")
        else:
            query = instance.get("query")
            query = query.get("query", "") if isinstance(query, dict) else str(query)
            values = re.fullmatch(r"label_values\((.*),\s*instance\)", query)
            if values is None:
                self.fail(where, f"instance variable: not label_values(..., instance): {query}")
            else:
                self.expr(
                    f"{where}: variable instance",
                    "dashboard:variable_instance",
                    values.group(1),
                    in_panel=False,
                )
        for i, note in enumerate(dash.get("annotations", {}).get("list", [])):
            if "expr" in note:
                self.expr(
                    f"{where}: annotation {note.get('name')!r}",
                    f"dashboard:annotation_{i}",
                    note["expr"],
                    in_panel=True,
                )
        self._panels(where, dash.get("panels", []))

    def _panels(self, where: str, panels: list[dict[str, object]]) -> None:
        ids: set[object] = set()
        rows: list[object] = []
        flat: list[dict[str, object]] = []
        for panel in panels:
            flat.append(panel)
            nested = panel.get("panels")
            flat.extend(nested if isinstance(nested, list) else [])
        for panel in flat:
            title = panel.get("title")
            here = f"{where}: panel {panel.get('id')} {title!r}"
            if panel.get("id") in ids or not isinstance(panel.get("id"), int):
                self.fail(here, "panel id missing or not unique")
            ids.add(panel.get("id"))
            grid = panel.get("gridPos")
            if not isinstance(grid, dict) or not 0 < grid.get("w", 0) <= 24 - grid.get("x", 0):
                self.fail(here, f"bad gridPos {grid}")
            if panel.get("type") == "row":
                rows.append(title)
                continue
            if not title:
                self.fail(here, "no title")
            if panel.get("datasource") != PANEL_DATASOURCE:
                self.fail(here, f"datasource is not {PANEL_DATASOURCE}")
            targets = panel.get("targets")
            if not isinstance(targets, list) or not targets:
                self.fail(here, "no queries")
                continue
            for target in targets:
                ref = target.get("refId")
                if target.get("datasource", PANEL_DATASOURCE) != PANEL_DATASOURCE:
                    self.fail(f"{here} {ref}", f"datasource is not {PANEL_DATASOURCE}")
                self.expr(
                    f"{here} {ref}",
                    f"dashboard:panel_{panel.get('id')}_{ref}",
                    str(target.get("expr", "")),
                    in_panel=True,
                )
        missing = [row for row in ROWS if row not in rows]
        if missing:
            self.fail(where, f"rows missing: {missing} (has {rows})")

    def text(self, path: Path) -> None:
        """Every sensord_*/process_* name mentioned in a rules or test file must exist."""
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in _NAME_IN_TEXT.findall(line):
                self.used.add(name)
                if name not in self.known:
                    self.fail(f"{path}:{number}", f"unknown metric {name}")

    def promql_rules(self) -> str:
        """The dashboard's expressions as recording rules, for `promtool check rules`."""
        lines = ["groups:", "  - name: dashboard-expressions", "    rules:"]
        for record, expr in self.rules:
            lines += [f"      - record: {record}", f"        expr: {json.dumps(expr)}"]
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard", nargs="?", type=Path)
    parser.add_argument("files", nargs="*", type=Path, help="rules or promtool test files")
    parser.add_argument("--promql-out", type=Path, help="write the expressions as recording rules")
    parser.add_argument("--list", action="store_true", help="print the known metric names")
    args = parser.parse_args(argv)
    known = known_metrics()
    if args.list:
        print("\n".join(sorted(known)))
        return 0
    if args.dashboard is None:
        parser.error("a dashboard is required")
    check = Check(known)
    check.dashboard(args.dashboard)
    for path in args.files:
        check.text(path)
    if args.promql_out:
        args.promql_out.write_text(check.promql_rules())
    for problem in check.problems:
        print(f"dashboard-metrics: {problem}", file=sys.stderr)
    if check.problems:
        return 1
    print(
        f"dashboard-metrics: {len(check.rules)} expressions, "
        f"{len(check.used)} metric names, all known"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
