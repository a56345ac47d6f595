"""``leadscore backup`` and ``restore-models``: the feature state's snapshot with its offsets,
and the model registry."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from leadscore.cli.common import emit, say
from leadscore.settings import Settings


def register(sub: Any) -> None:
    b = sub.add_parser(
        "backup",
        help="back up the Redis feature state (with its offsets) and the model registry",
        description="Writes into DIR: offsets.json (the worker group's committed offsets, "
        "read before the snapshot), redis/dump.rdb (a snapshot fetched over the network as "
        "a replica would get it; one per master on a Redis Cluster), models/ (every version "
        "and the registry's pointers and logs) and manifest.json (settings, every file's "
        "size and sha256). Safe while the workers score. Restore: docs/runbook.md, "
        "'Backup and restore'.",
    )
    b.add_argument("dir", type=Path, metavar="DIR", help="where the backup goes (created)")
    b.add_argument(
        "--force", action="store_true", help="replace the backup in a DIR that is not empty"
    )
    b.add_argument(
        "--no-redis",
        action="store_true",
        help="no Redis snapshot (a managed Redis without SYNC: take the provider's snapshot "
        "right after this, the offsets stay valid for it)",
    )
    b.add_argument("--no-models", action="store_true", help="leave out the model registry")
    b.add_argument(
        "--verify",
        action="store_true",
        help="take no backup: check every file of the backup in DIR against its manifest",
    )
    b.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    b.set_defaults(func=cmd_backup)

    r = sub.add_parser(
        "restore-models",
        help="restore the model registry from a backup (`leadscore backup`)",
        description="Checks every model file of the backup against its manifest, then puts "
        "the versions, the logs and the pointers (CHAMPION last) into the registry "
        "(LEADSCORE_MODEL_REGISTRY, else LEADSCORE_MODEL_DIR, or --model-dir). What is "
        "already there, the same, is left alone, so running it again changes nothing. A "
        "pointer that differs from the backup's is a conflict and nothing is written, "
        "unless --force; a version that exists with other files is always refused.",
    )
    r.add_argument("dir", type=Path, metavar="DIR", help="the backup's directory")
    r.add_argument("--model-dir", help="the registry to restore into (a directory or a URL)")
    r.add_argument("--force", action="store_true", help="the backup's pointers and logs win")
    r.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    r.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    r.set_defaults(func=cmd_restore_models)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.jobs.backup import run_backup, verify_backup

    if args.verify:
        entries = verify_backup(args.dir)
        summary = {"dir": str(args.dir), "files": len(entries), "ok": True}
        if args.json:
            emit(summary)
        else:
            say(f"{len(entries)} files of the backup in {args.dir} match their checksums")
        return 0
    settings.require_kafka()
    settings.require_redis()
    manifest = run_backup(
        settings,
        args.dir,
        force=args.force,
        redis=not args.no_redis,
        models=not args.no_models,
        progress=say,
    )
    if args.json:
        emit(
            {
                "dir": str(args.dir),
                "seconds": manifest["seconds"],
                "generation": manifest["state"]["generation"],
                "committed_events": _committed(args.dir),
                "redis": [
                    {k: s[k] for k in ("node", "file", "size", "sha256")} for s in manifest["redis"]
                ],
                "model_versions": len(manifest["models"].get("versions", [])),
                "champion": manifest["models"].get("pointers", {}).get("CHAMPION"),
                "files": len(manifest["files"]),
                "bytes": sum(f["size"] for f in manifest["files"]),
            }
        )
    return 0


def _committed(dest: Path) -> int:
    import json

    from leadscore.jobs.backup import OFFSETS

    return sum(json.loads((dest / OFFSETS).read_text())["offsets"].values())


def cmd_restore_models(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.jobs.restore import restore_registry
    from leadscore.model.registry import Registry

    reg = Registry(args.model_dir or settings.registry_root)
    report = restore_registry(reg, args.dir, force=args.force, dry_run=args.dry_run, progress=say)
    if args.json:
        emit(report.as_dict())
    else:
        for item, action in sorted(report.actions.items()):
            say(f"  {item}: {'would be ' if args.dry_run and action == 'restored' else ''}{action}")
        for note in report.notes:
            say(f"  {note}")
    return 0
