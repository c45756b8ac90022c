"""A Procrastinate worker for the peer benchmark: one no-op task.

Run as `python -m bench.procrastinate_worker URL --concurrency N`; stops
gracefully on SIGTERM (Procrastinate's own signal handling). Settings are
Procrastinate's documented knobs: `concurrency` (its way to run several
jobs at once in one worker), LISTEN/NOTIFY on, finished jobs kept (its
default), and a connection pool big enough for every concurrent job.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import procrastinate

TASK_NAME = "bench_noop"
QUEUE = "bench"


def build_app(url: str, pool_size: int) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=min(pool_size, 4), max_size=pool_size
        )
    )

    @app.task(name=TASK_NAME, queue=QUEUE)
    async def noop() -> None:
        return None

    return app


async def serve(url: str, concurrency: int, delete_jobs: str) -> None:
    app = build_app(url, pool_size=concurrency + 2)
    async with app.open_async():
        await app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            wait=True,
            listen_notify=True,
            delete_jobs=delete_jobs,
            install_signal_handlers=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--delete-jobs", choices=("never", "successful", "always"), default="never")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.url, args.concurrency, args.delete_jobs))


if __name__ == "__main__":
    main()
