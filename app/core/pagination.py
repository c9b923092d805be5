"""One convention for every list the API answers: `{items, total, limit, offset}`.

`PageParams` is the route's dependency (`?limit=&offset=`, each with its bounds: a value outside them is a 422
naming the bound); `fetch_page` runs a repository's SELECT as two queries, a COUNT for `total` and the page by
LIMIT/OFFSET, so no list is ever read whole. The SELECT must carry an ORDER BY that ends in a unique column
(newest first, then id): with ties left to the database, a row could appear on two pages and another on none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Past this an offset only costs the database a long scan; 64-bit overflow (a 500 from PostgreSQL) is far beyond.
MAX_OFFSET = 10_000_000

T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    """A page of a list: `items` in the list's order, `total` across all pages, the `limit` and `offset` asked."""

    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class PageParams:
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def page(self, items: Sequence[T], total: int) -> Page[T]:
        return Page(items=list(items), total=total, limit=self.limit, offset=self.offset)


def page_params(
    limit: Annotated[
        int,
        Query(
            ge=1, le=MAX_LIMIT, description=f"Items per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."
        ),
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int,
        Query(
            ge=0, le=MAX_OFFSET, description="Items to skip: the first page is 0, the next `offset + limit`."
        ),
    ] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


def fetch_page(
    session: Session, stmt: Select[Any], params: PageParams, row: Callable[[Any], R]
) -> tuple[list[R], int]:
    """`stmt`'s rows on the page `params` asks for, each made by `row` from a result row, and how many rows
    `stmt` selects in all (a COUNT over it without its ORDER BY)."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = session.execute(stmt.limit(params.limit).offset(params.offset))
    return [row(r) for r in rows], total
