"""Benchmarks of goodfellaz17 (issue 7): figures, not tests.

`make bench` runs `python -m bench`: one embedded PostgreSQL (pgserver, with
its durability defaults: fsync and synchronous_commit stay on), every
system measured on it in interleaved rounds, one table printed and
bench/results.json written. See bench/README.md for what each figure means.

Nothing here may change the engine's behaviour: the engine runs as shipped
(`goodfellaz17 worker`, `goodfellaz17 serve` subprocesses), configured only
through its documented environment variables.
"""
