"""Where a registry keeps its files: a local directory, or an object store (any fsspec URL,
e.g. ``s3://bucket/models``) that worker replicas, the API and a retrain job on other
machines share.

Both give the registry the same few operations. Their atomicity is what the registry relies
on: a pointer (``CHAMPION``, ``SHADOW``, ``EXPERIMENT``) is replaced whole (a rename on a
disk, a single PUT on an object store); a version appears once its ``meta.json`` does, which
is written last; a log record is appended whole (one line on a disk, one object per record
on an object store, which has no append). Versions are immutable, so an object store's
versions are read from a local copy made once (``cache``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from leadscore.model.exceptions import RegistryError


class Store(Protocol):
    location: str
    local_root: Path
    """Where version directories are read from (the registry itself, or the cache)."""

    def ensure(self) -> None: ...
    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def remove(self, name: str) -> None: ...
    def append(self, log: str, line: bytes) -> None: ...
    def read_log(self, log: str) -> list[bytes]: ...
    def versions(self) -> list[str]: ...
    def has_version(self, version: str) -> bool: ...
    def publish(self, version: str, tmp: Path) -> None: ...
    def fetch(self, version: str) -> Path: ...


def open_store(root: str | Path, cache: Path | None = None) -> Store:
    """A local store for a path, an object store for a URL (``file://`` counts as local)."""
    text = str(root)
    if "://" in text and not text.startswith("file://"):
        return ObjectStore(text, cache)
    return LocalStore(Path(text.removeprefix("file://")))


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.local_root = root
        self.location = str(root)

    def ensure(self) -> None:
        try:
            self.local_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"can't create model directory {self.local_root}: {exc}") from exc

    def read(self, name: str) -> bytes | None:
        try:
            return (self.local_root / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"can't read {self.local_root / name}: {exc}") from exc

    def write(self, name: str, data: bytes) -> None:
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=f".{name.lower()}.", dir=self.local_root)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.local_root / name)

    def remove(self, name: str) -> None:
        (self.local_root / name).unlink(missing_ok=True)

    def append(self, log: str, line: bytes) -> None:
        self.ensure()
        with open(self.local_root / log, "ab") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self, log: str) -> list[bytes]:
        data = self.read(log)
        return [] if data is None else data.splitlines()

    def versions(self) -> list[str]:
        if not self.local_root.exists():
            return []
        return sorted(
            d.name
            for d in self.local_root.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / "meta.json").exists()
        )

    def has_version(self, version: str) -> bool:
        return (self.local_root / version).exists()

    def publish(self, version: str, tmp: Path) -> None:
        os.rename(tmp, self.local_root / version)

    def fetch(self, version: str) -> Path:
        return self.local_root / version


class ObjectStore:
    def __init__(self, url: str, cache: Path | None = None) -> None:
        try:
            import fsspec
        except ImportError as exc:
            raise RegistryError(
                "a registry on an object store needs the s3 extra: pip install 'leadscore[s3]'"
            ) from exc
        try:
            # A fresh filesystem object: a cached one keeps the endpoint and credentials of
            # the environment it was made in.
            self.fs, base = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        except (ImportError, ValueError) as exc:
            raise RegistryError(f"can't open the model registry at {url!r}: {exc}") from exc
        self.base = str(base).rstrip("/")
        self.location = url
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        self.local_root = cache or Path(tempfile.gettempdir()) / "leadscore-registry" / digest

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def ensure(self) -> None:
        self.local_root.mkdir(parents=True, exist_ok=True)

    def read(self, name: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._key(name))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(f"can't read {self.location}/{name}: {exc}") from exc
        return data

    def write(self, name: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._key(name), data)
        except OSError as exc:
            raise RegistryError(f"can't write {self.location}/{name}: {exc}") from exc

    def remove(self, name: str) -> None:
        try:
            self.fs.rm_file(self._key(name))
        except FileNotFoundError:
            pass

    def append(self, log: str, line: bytes) -> None:
        # No append on an object store: one object per record, named so that a listing
        # gives them in order.
        self.write(f"{log}.d/{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", line)

    def _listing(self, pattern: str) -> list[str]:
        self.fs.invalidate_cache()  # other machines write here: never trust a cached listing
        try:
            return sorted(str(p) for p in self.fs.glob(self._key(pattern)))
        except FileNotFoundError:
            return []

    def read_log(self, log: str) -> list[bytes]:
        keys = self._listing(f"{log}.d/*")
        if not keys:
            return []
        got: dict[str, Any] = self.fs.cat(keys, on_error="omit")
        return [got[k] for k in keys if k in got]

    def versions(self) -> list[str]:
        return sorted(p.rsplit("/", 2)[-2] for p in self._listing("*/meta.json"))

    def has_version(self, version: str) -> bool:
        return self.read(f"{version}/meta.json") is not None

    def publish(self, version: str, tmp: Path) -> None:
        files = sorted(p for p in tmp.iterdir() if p.is_file())
        # meta.json last: a version is listed once it is there, so a reader never sees
        # half a version (and the checksums catch anything else).
        files.sort(key=lambda p: p.name == "meta.json")
        try:
            for p in files:
                self.fs.put_file(str(p), self._key(f"{version}/{p.name}"))
        except OSError as exc:
            raise RegistryError(f"can't upload {version} to {self.location}: {exc}") from exc
        final = self.local_root / version
        if final.exists():
            shutil.rmtree(final)  # a stale copy (another registry once had this URL)
        os.rename(tmp, final)

    def _fresh(self, version: str, local: Path) -> bool:
        """Whether a local copy is the version in the store: their checksum lists match (a
        bucket emptied and filled again can hold another model under the same name)."""
        try:
            mine = (local / "SHA256SUMS").read_bytes()
        except OSError:
            return False
        return self.read(f"{version}/SHA256SUMS") == mine

    def fetch(self, version: str) -> Path:
        """The version's local copy, downloaded once (versions never change)."""
        final = self.local_root / version
        if (final / "meta.json").exists() and self._fresh(version, final):
            return final
        self.ensure()
        keys = self._listing(f"{version}/*")
        if not any(k.endswith("/meta.json") for k in keys):
            return final  # not there (or still being uploaded): the caller reports it
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.local_root))
        try:
            for k in keys:
                self.fs.get_file(k, str(tmp / k.rsplit("/", 1)[-1]))
            if final.exists():
                shutil.rmtree(final)  # a copy cut short earlier, or stale
            if not final.exists():
                os.rename(tmp, final)
        except OSError as exc:
            if not (final / "meta.json").exists():  # else another process just made it
                raise RegistryError(
                    f"can't download {version} from {self.location}: {exc}"
                ) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
