"""Use cases shared by the HTTP API and the CLI: one function per operation."""
