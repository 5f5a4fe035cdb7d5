"""``GET /v1/users``: known users whose id starts with a prefix (how the demo page finds a user).

Known users are those of the bundle's users table; any other id is a cold start for
``POST /v1/recommend``, not an error, so this is the only way to tell them apart.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Query

from serving.deps import ModelDep
from serving.schemas import MAX_ID_LENGTH, ErrorResponse, UsersResponse
from serving.served_model import ServedModel

router = APIRouter(prefix="/v1", tags=["users"])
MAX_LIMIT = 100


class UserIndex:
    """Known user ids grouped by length, each group sorted: a prefix search is a few bisections.

    Shortest first puts ``19`` before ``190``..``199`` before ``1900``, the order a person
    expects of numeric ids, without scanning every match.
    """

    def __init__(self, ids: Iterable[str]) -> None:
        groups: dict[int, list[str]] = {}
        for user_id in ids:
            groups.setdefault(len(user_id), []).append(user_id)
        self.groups = [(length, sorted(group)) for length, group in sorted(groups.items())]

    def search(self, prefix: str, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` ids starting with ``prefix`` and how many there are in all."""
        found: list[str] = []
        total = 0
        n = len(prefix)

        def head(user_id: str) -> str:
            return user_id[:n]

        for length, ids in self.groups:
            if length < n:
                continue
            lo = bisect_left(ids, prefix, key=head)
            hi = bisect_right(ids, prefix, lo=lo, key=head)
            total += hi - lo
            found.extend(ids[lo : min(hi, lo + limit - len(found))])
        return found, total


_indexes: weakref.WeakKeyDictionary[ServedModel, UserIndex] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def user_index(model: ServedModel) -> UserIndex:
    """The model's index, built on first use (a reload brings a new model, hence a new index)."""
    with _lock:
        index = _indexes.get(model)
        if index is None:
            index = _indexes[model] = UserIndex(model.user_rows)
        return index


@router.get(
    "/users",
    response_model=UsersResponse,
    responses={
        422: {"model": ErrorResponse, "description": "prefix longer than an id may be, or limit out of range"},
        503: {"model": ErrorResponse, "description": "no model loaded"},
    },
)
async def find_users(
    model: ModelDep,
    prefix: Annotated[str, Query(max_length=MAX_ID_LENGTH, description="the start of the id (case-sensitive); "
                                 "empty: any known user")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many ids")] = 20,
) -> UsersResponse:
    """Known users (those the model was trained with) whose id starts with ``prefix``.

    Any other id is a cold start for ``POST /v1/recommend``: scored from the ``user_features``
    it sends (``GET /v1/model`` lists them as ``cold_start_features``).
    """
    users, total = user_index(model).search(prefix, limit)
    return UsersResponse(users=users, total=total)
