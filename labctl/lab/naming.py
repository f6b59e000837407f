"""Names of labs and of the objects they create.

Every object a lab creates carries the lab's name (or, where Linux limits names to 15 characters,
a short tag derived from it), so that two labs can run at once and `down` can tell its objects apart.
"""

from __future__ import annotations

import hashlib
import re

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,30}$"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-31 characters: lower-case letters, digits and '-', starting with a letter or digit"


def check_name(name: str, what: str = "lab name") -> str:
    """Return `name` when it is usable in namespace, file and container names; raise ValueError otherwise."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} {name!r}: expected {NAME_RULE}")
    return name


def lab_tag(lab: str) -> str:
    """Six hex characters standing for the lab in interface names (IFNAMSIZ leaves no room for the name)."""
    return hashlib.sha256(lab.encode()).hexdigest()[:6]
