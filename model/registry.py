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
import os
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

CHAMPION_FILE = "CHAMPION"
HISTORY_FILE = "HISTORY.jsonl"
DECISIONS_FILE = "DECISIONS.jsonl"
CARD_FILE = "card.json"
SHADOW_FILE = "SHADOW"
EXPERIMENT_FILE = "EXPERIMENT"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    path: Path
    meta: dict[str, Any]
    champion: bool
    problem: str = ""
    """Why the version can't be used (unreadable metadata), or empty."""


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"can't create model directory {self.root}: {exc}") from exc

    def path(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ModelNotFoundError(f"{version!r} is not a valid model version")
        return self.root / version

    def save(self, version: str, write: Callable[[Path], None], *, promote: bool = False) -> Path:
        """Create version ``version`` by calling ``write(tmp_dir)``, then rename it into place."""
        self._ensure_root()
        final = self.path(version)
        if final.exists():
            raise RegistryError(f"model version {version} already exists in {self.root}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root))
        try:
            write(tmp)
            if not (tmp / "meta.json").exists() or not (tmp / "model.txt").exists():
                raise RegistryError("a model version needs model.txt and meta.json")
            write_checksums(tmp)
            os.rename(tmp, final)
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
            raise RegistryError(f"{self.root / CHAMPION_FILE} does not hold a version id")
        return text

    def verify(self, version: str, *, in_child: bool = True) -> None:
        """The checks a worker makes before loading ``version``: checksums, ``meta.json``,
        and (``in_child``) LightGBM loading the model in a child process.

        Raises :class:`ModelIntegrityError` (or :class:`ModelNotFoundError`).
        """
        d = self.path(version)
        if not (d / "meta.json").exists():
            raise ModelNotFoundError(
                f"model version {version} is not in {self.root}; see `leadscore models list`"
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
            (self.root / name).unlink(missing_ok=True)
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{name.lower()}.", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / name)

    def _read_pointer(self, name: str) -> str | None:
        try:
            text = (self.root / name).read_bytes().decode("utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"can't read {self.root / name}: {exc}") from exc
        return text or None

    def shadow(self) -> str | None:
        """The shadow model's version, or None."""
        text = self._read_pointer(SHADOW_FILE)
        if text is not None and ("\n" in text or not text.isprintable()):
            raise RegistryError(f"{self.root / SHADOW_FILE} does not hold a version id")
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
            raise RegistryError(f"{self.root / EXPERIMENT_FILE} is not valid JSON: {exc}") from exc
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
        """One JSON line appended (and flushed to disk) to a registry log."""
        line = json.dumps({"at": _now(), **record}, default=str) + "\n"
        with open(self.root / name, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _read_log(self, name: str) -> list[dict[str, Any]]:
        try:
            lines = (self.root / name).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"can't read {self.root / name}: {exc}") from exc
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
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
                f"no earlier champion to roll back to in {self.root} "
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

    def card(self, version: str) -> dict[str, Any] | None:
        """The model card written with ``version`` (its promotion decision), if any."""
        p = self.path(version) / CARD_FILE
        try:
            card = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{p} is not valid JSON: {exc}") from exc
        return card if isinstance(card, dict) else None

    def meta(self, version: str) -> dict[str, Any]:
        p = self.path(version) / "meta.json"
        try:
            meta = json.loads(p.read_bytes().decode("utf-8"))
        except FileNotFoundError as exc:
            raise ModelNotFoundError(
                f"model version {version} is not in {self.root}; see `leadscore models list`"
            ) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{p} is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict):
            raise RegistryError(f"{p} is not a JSON object")
        return meta

    def list(self) -> list[VersionInfo]:
        """All versions, oldest first."""
        if not self.root.exists():
            return []
        try:
            champ = self.champion()
        except RegistryError:
            champ = None
        out = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and (d / "meta.json").exists():
                try:
                    meta, problem = self.meta(d.name), ""
                except ModelError as exc:
                    meta, problem = {}, str(exc)
                out.append(VersionInfo(d.name, d, meta, d.name == champ, problem))
        out.sort(key=lambda v: (str(v.meta.get("created_at", "")), v.version))
        return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
