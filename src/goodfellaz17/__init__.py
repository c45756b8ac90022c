"""goodfellaz17: a durable order delivery engine on PostgreSQL."""

__version__ = "0.1.0"
