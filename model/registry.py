"""The model registry: immutable version directories under ``MODEL_DIR`` and a champion pointer.

Layout::

    MODEL_DIR/
      CHAMPION                 the champion's version id (replaced atomically)
      SHADOW                   a version scored beside the champion, never sent to CRMs
      EXPERIMENT               the running A/B experiment (JSON: challenger, share, salt)
      HISTORY.jsonl            every champion change (promote, rollback), oldest first
      DECISIONS.jsonl          every promotion decision, promoted or not, with its reason
      lgbm-20261127-1a2b3c/    one immutable directory per version
        model.txt  meta.json  card.json  holdout.csv  report.html ...

A version directory is written under a temporary name and renamed into place, so a reader
never sees half a model; the champion pointer is swapped with ``os.replace`` for the same
reason. Every version carries ``SHA256SUMS`` of its files, and ``promote`` refuses a version
that fails the checks a worker makes before loading it (:mod:`leadscore.model.integrity`). Workers
poll the pointer and hot-swap (see ``leadscore.streamer.models``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leadscore.model.exceptions import (
    ModelError,
    ModelIntegrityError,
    ModelNotFoundError,
    RegistryError,
)
from leadscore.model.experiment import Experiment
from leadscore.model.integrity import check_in_child, read_meta, verify_checksums, write_checksums
from leadscore.model.stores import open_store

CHAMPION_FILE = "CHAMPION"
HISTORY_FILE = "HISTORY.jsonl"
DECISIONS_FILE = "DECISIONS.jsonl"
CARD_FILE = "card.json"
SHADOW_FILE = "SHADOW"
EXPERIMENT_FILE = "EXPERIMENT"
#: The registry's files besides its versions: pointers (each replaced whole) and logs
#: (appended to), what a backup holds beside every version.
POINTER_FILES = (CHAMPION_FILE, SHADOW_FILE, EXPERIMENT_FILE)
LOG_FILES = (HISTORY_FILE, DECISIONS_FILE)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    path: Path
    meta: dict[str, Any]
    champion: bool
    problem: str = ""
    """Why the version can't be used (unreadable metadata), or empty."""


class Registry:
    """A registry on a local directory or an object-store URL (see
    :mod:`leadscore.model.stores`); ``cache`` is where an object store's versions are copied
    to be read (default: a directory under the system's temp directory)."""

    def __init__(self, root: str | Path, *, cache: Path | None = None) -> None:
        self._store = open_store(root, cache)
        self.location = self._store.location
        """The registry as given (a path or a URL), for messages."""
        self.root = self._store.local_root
        """The local directory versions are read from."""

    def _ensure_root(self) -> None:
        self._store.ensure()

    def path(self, version: str) -> Path:
        """The local directory of ``version`` (for an object store, its local copy, made
        when :meth:`verify` or :meth:`local` first needs it)."""
        if not version or "/" in version or version.startswith("."):
            raise ModelNotFoundError(f"{version!r} is not a valid model version")
        return self.root / version

    def local(self, version: str) -> Path:
        """:meth:`path`, with the files there (downloaded from an object store if needed)."""
        self.path(version)
        return self._store.fetch(version)

    def save(self, version: str, write: Callable[[Path], None], *, promote: bool = False) -> Path:
        """Create version ``version`` by calling ``write(tmp_dir)``, then publish it whole."""
        self._ensure_root()
        final = self.path(version)
        if self._store.has_version(version):
            raise RegistryError(f"model version {version} already exists in {self.location}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            write(tmp)
            if not (tmp / "meta.json").exists() or not (tmp / "model.txt").exists():
                raise RegistryError("a model version needs model.txt and meta.json")
            write_checksums(tmp)
            self._store.publish(version, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if promote:
            self.promote(version)
        return final

    def champion(self) -> str | None:
        """The champion's version, or None when nothing was promoted yet."""
        text = self._read_pointer(CHAMPION_FILE)
        if text is None:
            return None
        if "\n" in text or not text.isprintable():
            raise RegistryError(f"{f'{self.location}/{CHAMPION_FILE}'} does not hold a version id")
        return text

    def verify(self, version: str, *, in_child: bool = True) -> None:
        """The checks a worker makes before loading ``version``: checksums, ``meta.json``,
        and (``in_child``) LightGBM loading the model in a child process.

        Raises :class:`ModelIntegrityError` (or :class:`ModelNotFoundError`).
        """
        d = self.local(version)
        if not (d / "meta.json").exists():
            raise ModelNotFoundError(
                f"model version {version} is not in {self.location}; see `leadscore models list`"
            )
        verify_checksums(d)
        meta = read_meta(d)
        if meta["version"] != version:
            raise ModelIntegrityError(
                f"{d / 'meta.json'} names version {meta['version']!r}, not {version!r}"
            )
        if in_child:
            check_in_child(d, len(meta["features"]))

    def promote(self, version: str, *, action: str = "promote", note: str = "") -> None:
        """Make ``version`` the champion, once it passes :meth:`verify`; the change is
        appended to ``HISTORY.jsonl`` (what :meth:`rollback` walks back)."""
        self.verify(version)
        self._write_pointer(CHAMPION_FILE, version + "\n")
        self._append(HISTORY_FILE, {"version": version, "action": action, "note": note})

    def _write_pointer(self, name: str, text: str | None) -> None:
        """Replace (or, with None, remove) a pointer file atomically."""
        self._ensure_root()
        if text is None:
            self._store.remove(name)
        else:
            self._store.write(name, text.encode("utf-8"))

    def _read_pointer(self, name: str) -> str | None:
        raw = self._store.read(name)
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise RegistryError(f"can't read {self.location}/{name}: {exc}") from exc
        return text or None

    def shadow(self) -> str | None:
        """The shadow model's version, or None."""
        text = self._read_pointer(SHADOW_FILE)
        if text is not None and ("\n" in text or not text.isprintable()):
            raise RegistryError(f"{f'{self.location}/{SHADOW_FILE}'} does not hold a version id")
        return text

    def set_shadow(self, version: str | None) -> None:
        """Score ``version`` beside the champion (None: stop); it must pass :meth:`verify`."""
        if version is not None:
            self.verify(version)
        self._write_pointer(SHADOW_FILE, None if version is None else version + "\n")
        self._append(HISTORY_FILE, {"version": version, "action": "shadow", "note": ""})

    def experiment(self) -> Experiment | None:
        """The running A/B experiment, or None."""
        text = self._read_pointer(EXPERIMENT_FILE)
        if text is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"{f'{self.location}/{EXPERIMENT_FILE}'} is not valid JSON: {exc}"
            ) from exc
        return Experiment.from_dict(data)

    def start_experiment(self, version: str, share: float, by: str = "lead_id") -> Experiment:
        """Start an A/B experiment (idempotent for the same version, share and attribute).

        A running experiment's split is never changed: a lead would move between arms,
        which mixes the arms' outcomes. Stop it and start a new one (a new salt) instead.
        """
        running = self.experiment()
        if running is not None:
            if (running.version, running.share, running.by) == (version, share, by):
                return running
            raise RegistryError(
                f"experiment {running.id} is running ({running.version} on "
                f"{running.share:g} of leads by {running.by}); its split can't change: stop it "
                "with `leadscore models ab --stop` and start a new one"
            )
        self.verify(version)
        exp = Experiment.new(version, share, by)
        self._write_pointer(EXPERIMENT_FILE, json.dumps(exp.as_dict()) + "\n")
        self._append(HISTORY_FILE, {"version": version, "action": "ab_start", "note": exp.id})
        return exp

    def stop_experiment(self) -> Experiment | None:
        running = self.experiment()
        self._write_pointer(EXPERIMENT_FILE, None)
        if running is not None:
            self._append(
                HISTORY_FILE, {"version": running.version, "action": "ab_stop", "note": running.id}
            )
        return running

    def _append(self, name: str, record: dict[str, Any]) -> None:
        """One JSON line appended (durably) to a registry log."""
        line = json.dumps({"at": _now(), **record}, default=str) + "\n"
        self._store.append(name, line.encode("utf-8"))

    def _read_log(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self._store.read_log(name):
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a line cut by a crash mid-append; the others still count
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def history(self) -> list[dict[str, Any]]:
        """Every champion change, oldest first."""
        return self._read_log(HISTORY_FILE)

    def champion_stack(self) -> list[str]:
        """The champions in force, oldest first: a promotion pushes, a rollback pops."""
        stack: list[str] = []
        for rec in self.history():
            version = str(rec.get("version", ""))
            if rec.get("action") == "rollback":
                while stack and stack[-1] != version:
                    stack.pop()
                if not stack:
                    stack.append(version)
            elif rec.get("action") == "promote" and (not stack or stack[-1] != version):
                stack.append(version)
        return stack

    def rollback(self) -> tuple[str, str]:
        """Restore the champion before the current one; returns ``(from, to)``."""
        current = self.champion()
        stack = self.champion_stack()
        if current is None or not stack or stack[-1] != current:
            # A pointer written by hand (or before the history existed): start from it.
            stack = [*stack, current] if current else stack
        previous = stack[:-1]
        if not previous:
            raise RegistryError(
                f"no earlier champion to roll back to in {self.location} "
                "(see `leadscore models history`)"
            )
        target = previous[-1]
        self.promote(target, action="rollback", note=f"from {current}")
        return str(current), target

    def record_decision(self, record: dict[str, Any]) -> None:
        """Append one promotion decision (promoted or not) to ``DECISIONS.jsonl``."""
        self._ensure_root()
        self._append(DECISIONS_FILE, record)

    def decisions(self) -> list[dict[str, Any]]:
        return self._read_log(DECISIONS_FILE)

    # Backup and restore (leadscore.jobs.backup): the registry's files as they are stored,
    # through the same store, so a backup of a folder restores to S3 and back.

    def pointer_bytes(self, name: str) -> bytes | None:
        """A pointer file (:data:`POINTER_FILES`) as stored; None when absent."""
        return self._store.read(name)

    def restore_pointer(self, name: str, data: bytes) -> None:
        """Replace a pointer file whole (atomically, as :meth:`promote` does)."""
        self._ensure_root()
        self._store.write(name, data)

    def log_lines(self, name: str) -> list[bytes]:
        """A log's (:data:`LOG_FILES`) records as stored, oldest first, without newlines."""
        return [line.rstrip(b"\n") for line in self._store.read_log(name) if line.strip()]

    def append_lines(self, name: str, lines: list[bytes]) -> None:
        """Append records (each one line, without its newline) to a log."""
        self._ensure_root()
        for line in lines:
            self._store.append(name, line + b"\n")

    def import_version(self, version: str, source: Path) -> None:
        """Publish a copy of ``version`` from the directory ``source`` (a backup's copy):
        its files as they are, the whole version at once, as :meth:`save` publishes."""
        self._ensure_root()
        self.path(version)
        if self._store.has_version(version):
            raise RegistryError(f"model version {version} already exists in {self.location}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            for f in sorted(source.iterdir()):
                if f.is_file():
                    shutil.copyfile(f, tmp / f.name)
            self._store.publish(version, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _json(self, version: str, name: str) -> Any:
        """A version's JSON file, parsed (None if it has no such file)."""
        self.path(version)
        raw = self._store.read(f"{version}/{name}")
        if raw is None:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(
                f"{self.location}/{version}/{name} is not valid JSON: {exc}"
            ) from exc

    def card(self, version: str) -> dict[str, Any] | None:
        """The model card written with ``version`` (its promotion decision), if any."""
        card = self._json(version, CARD_FILE)
        return card if isinstance(card, dict) else None

    def meta(self, version: str) -> dict[str, Any]:
        meta = self._json(version, "meta.json")
        if meta is None:
            raise ModelNotFoundError(
                f"model version {version} is not in {self.location}; see `leadscore models list`"
            )
        if not isinstance(meta, dict):
            raise RegistryError(f"{self.location}/{version}/meta.json is not a JSON object")
        return meta

    def list(self) -> list[VersionInfo]:
        """All versions, oldest first."""
        try:
            champ = self.champion()
        except RegistryError:
            champ = None
        out = []
        for name in self._store.versions():
            try:
                meta, problem = self.meta(name), ""
            except ModelError as exc:
                meta, problem = {}, str(exc)
            out.append(VersionInfo(name, self.path(name), meta, name == champ, problem))
        out.sort(key=lambda v: (str(v.meta.get("created_at", "")), v.version))
        return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
