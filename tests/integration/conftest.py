"""Fixtures shared by the console's tests: the app (no worker, lifespan
included) and an httpx client on it from a loopback address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from goodfellaz17.api.app import create_app
from goodfellaz17.settings import Settings
from tests.integration.console_helpers import client_for


@pytest.fixture
async def app(settings: Settings, db_url: str) -> AsyncIterator[Any]:
    application = create_app(settings, db_url, run_worker=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    async with client_for(app) as c:
        yield c
