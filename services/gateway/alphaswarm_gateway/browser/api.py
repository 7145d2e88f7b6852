"""REST routes the Strategy Browser needs beyond the resource API (`/browser/...`).

* `GET /browser/session`: who the caller is and which role it holds, so the page
  shows only the actions the role allows (the API still checks every call).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from alphaswarm_common.auth import ADMIN, RESEARCHER, VIEWER, role_allows
from alphaswarm_gateway import auth

__all__ = ["router"]

router = APIRouter(prefix="/browser", tags=["browser"])


@router.get("/session", operation_id="get_browser_session", summary="The caller's identity and role")
async def get_session() -> dict[str, Any]:
    who = auth.caller()
    return {
        "subject": who.subject,
        "role": who.role,
        "via": who.via,
        "can": {
            "view": role_allows(who.role, VIEWER),
            "submit": role_allows(who.role, RESEARCHER),
            "admin": role_allows(who.role, ADMIN),
        },
    }
