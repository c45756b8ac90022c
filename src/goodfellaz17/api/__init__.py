"""The HTTP API (FastAPI): orders, admin, internal, health, metrics, console."""
