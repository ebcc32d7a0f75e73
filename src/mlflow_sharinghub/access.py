"""Access levels and what they allow.

SharingHub reports an *access level* from 0 to 4. Levels 1 and 2 may read,
3 and 4 may read and write; anonymous callers (served through SharingHub's
default token) are capped at read whatever level SharingHub reports.
"""

from __future__ import annotations

from mlflow_sharinghub.errors import PermissionDenied
from mlflow_sharinghub.policy import Action

LEVEL_NAMES = {
    0: "no access",
    1: "guest",
    2: "read-only",
    3: "contributor",
    4: "administrator",
}
READ_LEVEL = 1
WRITE_LEVEL = 3


def effective_level(*, access_level: int, anonymous: bool) -> int:
    """The level a caller acts with: anonymous callers never exceed read-only."""
    return min(access_level, 2) if anonymous else access_level


def can_read(*, level: int) -> bool:
    return level >= READ_LEVEL


def can_write(*, level: int) -> bool:
    return level >= WRITE_LEVEL


def require(action: Action, *, level: int, project: str, anonymous: bool) -> None:
    """Raise PermissionDenied unless ``level`` allows ``action`` on ``project``."""
    if action is Action.WRITE and not can_write(level=level):
        if anonymous:
            hint = "Set MLFLOW_TRACKING_TOKEN to a GitLab token of a developer."
        else:
            hint = "Writing needs the Developer or Maintainer role in GitLab."
        raise PermissionDenied(
            f"Permission denied: writing to project '{project}' needs contributor "
            f"access; you have {LEVEL_NAMES.get(level, str(level))} access. {hint}"
        )
    if action is Action.REFUSED:
        raise PermissionDenied(
            f"Permission denied: this route is not offered for '{project}'."
        )
    if action is Action.READ and not can_read(level=level):
        raise PermissionDenied(
            f"Permission denied: you cannot read project '{project}'."
        )
