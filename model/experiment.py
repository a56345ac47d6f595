"""A/B experiments: a stable split of leads between the champion and a challenger.

A lead's arm is a pure function of the experiment's salt and the value hashed (the lead id,
or a profile attribute such as an account id, so that one account sees one model): the same
lead gets the same arm from every worker, across restarts and rebalances, for the life of
the experiment. A new experiment has a new salt, so its split is independent of the last.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from leadscore.model.exceptions import RegistryError

Arm = Literal["champion", "challenger"]
_SCALE = float(2**64)


@dataclass(frozen=True, slots=True)
class Experiment:
    id: str
    version: str
    """The challenger's model version."""
    share: float
    """Share of leads (or of ``by`` values) scored by the challenger."""
    salt: str
    by: str = "lead_id"
    """``lead_id``, or the profile attribute whose value is hashed."""
    started_at: str = ""

    @classmethod
    def new(cls, version: str, share: float, by: str = "lead_id") -> Experiment:
        if not 0.0 < share < 1.0:
            raise RegistryError(f"--share must be between 0 and 1 (exclusive), got {share}")
        now = datetime.now(UTC)
        salt = secrets.token_hex(8)
        return cls(
            id=f"ab-{now:%Y%m%d-%H%M%S}-{salt[:6]}",
            version=version,
            share=share,
            salt=salt,
            by=by,
            started_at=now.isoformat(timespec="seconds"),
        )

    @classmethod
    def from_dict(cls, d: Any) -> Experiment:
        try:
            exp = cls(
                id=str(d["id"]),
                version=str(d["version"]),
                share=float(d["share"]),
                salt=str(d["salt"]),
                by=str(d.get("by", "lead_id")),
                started_at=str(d.get("started_at", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"the experiment pointer is malformed: {exc}") from exc
        if not 0.0 < exp.share < 1.0 or not exp.salt or not exp.version:
            raise RegistryError("the experiment pointer is malformed: share, salt or version")
        return exp

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def arm(self, value: str) -> Arm:
        """The arm of a lead whose hashed attribute is ``value``.

        >>> e = Experiment("ab-1", "v2", 0.5, "salt")
        >>> e.arm("L-000001") == e.arm("L-000001")
        True
        """
        digest = hashlib.blake2b(f"{self.salt}\x00{value}".encode(), digest_size=8).digest()
        return "challenger" if int.from_bytes(digest, "big") / _SCALE < self.share else "champion"
