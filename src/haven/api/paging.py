"""The query parameters and headers every paged list shares (``services/paging.py`` makes the pages)."""

from typing import Annotated

from fastapi import Query, Request, Response

__all__ = ["Limit", "Cursor", "PAGED", "paged"]

Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many rows in the page.")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=600, description="The X-Next-Cursor of the previous page.")]

#: the OpenAPI description of a paged answer's headers
PAGED = {200: {"description": "A page of the list. When there is more, X-Next-Cursor and Link (rel=next) say where.",
               "headers": {
                   "X-Next-Cursor": {"description": "Pass as ?cursor= for the next page; absent on the last page.",
                                     "schema": {"type": "string"}},
                   "Link": {"description": "The next page's URL, rel=\"next\"; absent on the last page.",
                            "schema": {"type": "string"}}}}}


def paged(request: Request, response: Response, page: tuple[list, str | None]) -> list:
    """The page's rows; the cursor of the next one in X-Next-Cursor and Link when there is more."""
    rows, following = page
    if following:
        response.headers["X-Next-Cursor"] = following
        response.headers["Link"] = f'<{request.url.include_query_params(cursor=following)}>; rel="next"'
    return rows
