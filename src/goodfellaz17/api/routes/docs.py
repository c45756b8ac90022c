"""The API's own documentation: /openapi.json, /docs (Swagger UI) and /redoc.

Who may read them is GOODFELLAZ17_API_DOCS: `public` (the development
default), `key` (a read key in X-Api-Key; the production default, so the
route map is not handed to whoever reaches the port) or `off` (404). The
routes exist in every mode, so the route table never depends on settings.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse

from goodfellaz17.api.deps import Context, api_key_header, authorize
from goodfellaz17.settings import Role

OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


async def docs_visible(
    request: Request, ctx: Context, presented: Annotated[str | None, Depends(api_key_header)]
) -> None:
    access = ctx.settings.api_docs_access
    if access == "off":
        raise HTTPException(404, detail={"message": "the API docs are off", "field": "path"})
    if access == "key":
        authorize(request, ctx, presented, Role.READ)


router = APIRouter(include_in_schema=False, dependencies=[Depends(docs_visible)])


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
    )


@router.get(OAUTH2_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - ReDoc")
