"""FastAPI dependencies shared by the gateway's routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AfterValidator

from alphaswarm_gateway.core import Gateway


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
PageSize = Annotated[int, Query(ge=1, le=500, description="Maximum number of items to return.")]


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains an unpaired surrogate at character {exc.start}") from None
    return value


ProtoText = Annotated[str, AfterValidator(_valid_unicode)]
"""A string a proto `string` field can hold (valid Unicode: no lone surrogate)."""
