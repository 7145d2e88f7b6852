"""FastAPI dependencies shared by the gateway's routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from alphaswarm_gateway.core import Gateway


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
PageSize = Annotated[int, Query(ge=1, le=500, description="Maximum number of items to return.")]
