"""``sensord registry import DIR | export DIR | show ID``: the housing registry's command line.

Files are read and written here; validation and diffing are the core's
(``core/registry``), the SQL is the store's (``adapters/registry_store``).
Names and phones are masked in everything printed unless ``--unmask``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sensord import exits
from sensord.cli.common import guarded, print_json
from sensord.config import Settings
from sensord.core.privacy import mask_name, mask_phone
from sensord.core.registry.csvfiles import ParsedFile, RowError, parse_file, render
from sensord.core.registry.rows import ENTITY_BY_FILE

NAME = "registry"


def register(subparsers: Any) -> None:
    """Add ``registry`` and its subcommands to the ``sensord`` subparsers."""
    registry = subparsers.add_parser(NAME, help="import, export and look up the housing registry")
    sub = registry.add_subparsers(dest="registry_command", required=True)
    load = sub.add_parser(
        "import",
        help="validate DIR's CSV files and apply them in one transaction (all or nothing)",
    )
    load.add_argument("directory", type=Path, help="directory of registry CSV files")
    load.add_argument("--dry-run", action="store_true", help="validate and count; change nothing")
    dump = sub.add_parser("export", help="write every registry table as CSV files into DIR")
    dump.add_argument("directory", type=Path)
    show = sub.add_parser("show", help="the panoramic view of a device or an address")
    show.add_argument("ident", metavar="ID", help="a device_id or an address_id")
    show.add_argument("--json", action="store_true", help="print as JSON")
    show.add_argument("--unmask", action="store_true", help="show names and phones in full")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen ``registry`` subcommand; the process exit status."""
    from sensord.adapters.database import conninfo

    handlers = {"import": _import, "export": _export, "show": _show}
    handler = handlers[args.registry_command]
    return guarded(
        "sensord registry",
        lambda: handler(conninfo(settings.database, "sensord-registry"), args),
        schema_behind="no registry tables; run `sensord migrate` first",
    )


# --- import -----------------------------------------------------------------------


def read_directory(directory: Path) -> tuple[dict[str, ParsedFile[Any]], list[RowError]]:
    """Every registry CSV file in ``directory``, parsed; and errors for stray CSV files."""
    files: dict[str, ParsedFile[Any]] = {}
    strays: list[RowError] = []
    for path in sorted(directory.glob("*.csv")):
        entity = ENTITY_BY_FILE.get(path.name)
        if entity is None:
            strays.append(RowError(path.name, None, None, "not a registry file (misspelt?)"))
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")  # a BOM is how spreadsheets mark UTF-8
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            files[entity.name] = ParsedFile(
                entity, unreadable=True, errors=[RowError(path.name, line, None, "not UTF-8")]
            )
            continue
        files[entity.name] = parse_file(entity, text)
    return files, strays


def _import(conninfo: str, args: argparse.Namespace) -> int:
    from sensord.adapters.registry_store import RegistryRejected, run_import

    directory: Path = args.directory
    if not directory.is_dir():
        print(f"sensord registry import: {directory} is not a directory", file=sys.stderr)
        return exits.USAGE
    started = time.monotonic()
    files, strays = read_directory(directory)
    if not files and not strays:
        expected = ", ".join(ENTITY_BY_FILE)
        print(
            f"sensord registry import: no registry files in {directory} ({expected})",
            file=sys.stderr,
        )
        return exits.FAILED
    try:
        plan = run_import(conninfo, files, dry_run=args.dry_run or bool(strays))
    except RegistryRejected as exc:
        print(f"sensord registry import: {exc}", file=sys.stderr)
        return exits.FAILED
    errors = sorted([*strays, *plan.errors], key=RowError.sort_key)
    if errors:
        for error in errors:
            print(error, file=sys.stderr)
        bad_rows = len({(error.file, error.line) for error in errors})
        print(
            f"sensord registry import: {len(errors)} errors in {bad_rows} rows or files; "
            "nothing was applied",
            file=sys.stderr,
        )
        return exits.FAILED
    print(f"{'file':<22} {'inserted':>9} {'updated':>9} {'unchanged':>9} {'deleted':>9}")
    for name, change in plan.changes.items():
        print(
            f"{name + '.csv':<22} {change.inserted:>9} {change.updated:>9} "
            f"{change.unchanged:>9} {change.deleted:>9}"
        )
    elapsed = time.monotonic() - started
    if args.dry_run:
        print(f"dry run, nothing applied ({elapsed:.2f} s)")
    elif any(change.upserts or change.deletes for change in plan.changes.values()):
        print(f"applied in {elapsed:.2f} s")
    else:
        print(f"nothing to change ({elapsed:.2f} s)")
    return exits.OK


# --- export -----------------------------------------------------------------------


def _export(conninfo: str, args: argparse.Namespace) -> int:
    from sensord.adapters.registry_store import read_all

    directory: Path = args.directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tables = read_all(conninfo)
    for file, entity in ENTITY_BY_FILE.items():
        rows = tables[entity.name]
        path = directory / file
        temporary = path.with_name(f".{file}.tmp")
        write_private(temporary, render(entity, rows.values()).encode("utf-8"))
        os.replace(temporary, path)  # a reader never sees half a file
        print(f"{file:<22} {len(rows):>9} rows")
    return exits.OK


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` readable by its owner only (names and phones): created 0600, never
    chmod-ed later, so there is no moment at which another user could open it."""
    path.unlink(missing_ok=True)  # a leftover of a killed export
    # O_EXCL: never through a symlink or into a file someone else created in between.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


# --- show -------------------------------------------------------------------------


def _show(conninfo: str, args: argparse.Namespace) -> int:
    from sensord.adapters.registry_store import read_panorama

    view = read_panorama(conninfo, args.ident)
    if view is None:
        print(f"sensord registry show: no device or address {args.ident!r}", file=sys.stderr)
        return exits.FAILED
    if not args.unmask:
        view = masked(view)
    if args.json:
        print_json(view)
    else:
        print(describe(view))
    return exits.OK


def masked(view: dict[str, Any]) -> dict[str, Any]:
    """The view with every person's name and phone masked."""
    people = {
        section: [
            {
                **person,
                "name": mask_name(person["name"]),
                "phone": person["phone"] and mask_phone(person["phone"]),
            }
            for person in view[section]
        ]
        for section in ("residents", "staff")
    }
    return {**view, **people}


def describe(view: dict[str, Any]) -> str:
    """The panoramic view as text for a terminal."""
    lines: list[str] = []
    if view["device_id"]:
        lines.append(f"device      {view['device_id']} ({view['kind']})")
    if view["place_type"] is None:
        lines.append(f"place       none registered; street {view['street_id']}")
    else:
        floor = f", floor {view['floor']}" if view["floor"] is not None else ""
        lines.append(
            f"place       {view['address_id']} {view['place_type']}: {view['label']}{floor}"
        )
        building = view["building"]
        compound = view["compound"]
        where = f"{compound['compound_id']} {compound['name']}"
        if building:
            floors = f", {building['floors']} floors" if building["floors"] else ""
            where = f"{building['building_id']} {building['name']}{floors}, in {where}"
        lines.append(f"{'building' if building else 'compound':<12}{where}")
        lines.append(
            "grid        " + " > ".join(f"{u['grid_id']} {u['name']}" for u in view["grid_chain"])
        )
    lines.append("responsible")
    lines += [
        f"  {r['role']:<11} {r['org_id']} {r['org_name']} ({r['org_type']}; "
        f"{r['category']} in {r['scope_type']} {r['scope_id']})"
        for r in view["responsible"]
    ] or ["  none"]
    lines.append("staff")
    lines += [
        f"  {s['role']:<16} {s['staff_id']} {s['name']} {s['phone'] or '-'} "
        f"({s['org_id']}; covers {', '.join(s['covers'])})"
        for s in view["staff"]
    ] or ["  none"]
    scope = {
        "floor": " on this floor",
        "building": " of the building",
        "building_group": " of the building group",
    }.get(view["residents_of"], "")
    lines.append(f"residents{scope} ({len(view['residents'])})")
    lines += [
        f"  {r['resident_id']} {r['name']} {r['phone'] or '-'} "
        f"[{', '.join(r['tags']) or 'no tags'}] at {r['address_id']}"
        for r in view["residents"]
    ]
    lines.append("devices")
    lines += [
        f"  {d['device_id']} {d['kind']} {d['model'] or ''} heartbeat {d['heartbeat_s']} s, "
        f"inspection due {d['inspection_due'] or '-'}; last reading: "
        + (json.dumps(d["last_reading"], ensure_ascii=False) if d["last_reading"] else "none")
        for d in view["devices"]
    ] or ["  none"]
    return "\n".join(lines)
