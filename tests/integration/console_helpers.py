"""Helpers for the console tests: sign in through the login form, read the
CSRF token and the data-* values that the pages expose."""

from __future__ import annotations

import re
from typing import Any

import httpx

NONCE = re.compile(r'name="nonce" value="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def client_for(app: Any, base_url: str = "http://127.0.0.1", **transport: Any) -> Any:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False, **transport),
        base_url=base_url,
    )


def nonce_of(html: str) -> str:
    found = NONCE.search(html)
    assert found, "the login form carries a nonce"
    return found.group(1)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries a CSRF token"
    return found.group(1)


async def log_in(client: Any, key: str, next_url: str = "/console") -> httpx.Response:
    form = await client.get("/console/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/console/login",
        data={"api_key": key, "nonce": nonce_of(form.text), "next": next_url},
    )


async def signed_in(client: Any, key: str) -> str:
    """Sign in with `key`; the session's CSRF token."""
    response = await log_in(client, key)
    assert response.status_code == 303, response.text
    page = await client.get("/console")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def data_value(html: str, element_id: str) -> str:
    """The data-value of the first element inside the element with this id."""
    found = re.search(rf'id="{re.escape(element_id)}".*?data-value="([^"]*)"', html, re.S)
    assert found, f"no data-value under #{element_id}"
    return found.group(1)


def state_count(html: str, state: str) -> int:
    found = re.search(rf'data-state="{state}" data-value="(\d+)"', html)
    assert found, f"no count for {state}"
    return int(found.group(1))
