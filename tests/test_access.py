"""Access levels: what each of SharingHub's levels 0-4 lets a caller do."""

from __future__ import annotations

import pytest

from mlflow_sharinghub.access import can_read, can_write, effective_level, require
from mlflow_sharinghub.errors import PermissionDenied, RequestRefused
from mlflow_sharinghub.policy import Action

LEVELS = [0, 1, 2, 3, 4]
# The names of SharingHub's contract, which refusals quote back to the caller.
LEVEL_NAMES = ["no access", "guest", "read-only", "contributor", "administrator"]
LEVEL_IDS = [name.replace(" ", "-") for name in LEVEL_NAMES]
PROJECT = "eo/flood-model"


ANONYMOUS_LEVELS = [0, 1, 2, 2, 2]
CAPPED = [
    *(
        pytest.param(level, False, level, id=f"user-{name}")
        for level, name in zip(LEVELS, LEVEL_IDS, strict=True)
    ),
    *(
        pytest.param(level, True, capped, id=f"anonymous-{name}")
        for level, capped, name in zip(LEVELS, ANONYMOUS_LEVELS, LEVEL_IDS, strict=True)
    ),
]


@pytest.mark.parametrize(("reported", "anonymous", "expected"), CAPPED)
def test_effective_level_caps_anonymous_callers_at_read_only(
    reported: int, anonymous: bool, expected: int
) -> None:
    assert effective_level(access_level=reported, anonymous=anonymous) == expected


@pytest.mark.parametrize(
    ("level", "readable", "writable"),
    [
        (0, False, False),
        (1, True, False),
        (2, True, False),
        (3, True, True),
        (4, True, True),
    ],
    ids=LEVEL_IDS,
)
def test_what_each_level_allows(level: int, readable: bool, writable: bool) -> None:
    assert can_read(level=level) is readable
    assert can_write(level=level) is writable


@pytest.mark.parametrize("level", [1, 2, 3, 4], ids=LEVEL_IDS[1:])
def test_require_read_passes_from_guest_up(level: int) -> None:
    require(Action.READ, level=level, project=PROJECT, anonymous=False)


@pytest.mark.parametrize("level", [3, 4], ids=LEVEL_IDS[3:])
def test_require_write_passes_for_contributors_and_administrators(level: int) -> None:
    require(Action.WRITE, level=level, project=PROJECT, anonymous=False)


@pytest.mark.parametrize("level", LEVELS, ids=LEVEL_IDS)
def test_public_routes_need_no_level(level: int) -> None:
    require(Action.PUBLIC, level=level, project=PROJECT, anonymous=True)


def test_require_read_refuses_no_access_with_an_mlflow_error() -> None:
    with pytest.raises(PermissionDenied) as refused:
        require(Action.READ, level=0, project=PROJECT, anonymous=False)

    _assert_mlflow_refusal(refused.value, status=403, code="PERMISSION_DENIED")
    assert PROJECT in refused.value.message


@pytest.mark.parametrize("level", [0, 1, 2], ids=LEVEL_IDS[:3])
def test_require_write_refuses_below_contributor(level: int) -> None:
    with pytest.raises(PermissionDenied) as refused:
        require(Action.WRITE, level=level, project=PROJECT, anonymous=False)

    _assert_mlflow_refusal(refused.value, status=403, code="PERMISSION_DENIED")
    message = refused.value.message
    assert PROJECT in message
    assert "contributor" in message
    assert f"you have {LEVEL_NAMES[level]} access" in message
    assert "Developer" in message


def test_anonymous_writer_is_told_to_set_a_token() -> None:
    with pytest.raises(PermissionDenied) as refused:
        require(Action.WRITE, level=2, project=PROJECT, anonymous=True)

    _assert_mlflow_refusal(refused.value, status=403, code="PERMISSION_DENIED")
    assert "MLFLOW_TRACKING_TOKEN" in refused.value.message


def _assert_mlflow_refusal(error: RequestRefused, *, status: int, code: str) -> None:
    assert error.status == status
    assert error.error_code == code
    assert error.body().startswith(b"{")
    assert f'"error_code": "{code}"'.encode() in error.body()
