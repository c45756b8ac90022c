"""The Node peers: graphile-worker and pg-boss draining no-op jobs on the
same server as the engine, measured by the same busy window.

Both are installed from npm, pinned, into bench/peers (package.json and
package-lock.json; `make bench` runs `npm ci` there), with a Node 22 binary
from npm beside them (both need Node >= 22; the system's may be older).
bench/peers/*.mjs is each peer's small driver: `setup` installs its schema,
`enqueue` adds the jobs through its own bulk API in one call (one
transaction), `work` runs one worker process until SIGTERM.

One run: a fresh database (new relations, nothing carried over), the peer's
schema, VACUUM ANALYZE and CHECKPOINT as for every system, then every job
queued in one transaction *before* the worker starts; the worker is then
started and the busy window (bench/window.py) opens at the first job it
finishes, so its start-up is not measured. Afterwards every job must have
succeeded exactly as the peer records success. Settings are each peer's
documented throughput settings (bench/README.md says which and where from).

Never measures anything but no-op jobs: what is compared is the queue.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.config import BenchConfig
from bench.pg import BenchServer, PostgresCpu, peak_rss_bytes
from bench.procs import clean_env, start, stop
from bench.window import DrainProbe, watch_drain

PEERS_DIR = Path(__file__).parent / "peers"
NODE = PEERS_DIR / "node_modules" / ".bin" / "node"
COMMAND_TIMEOUT = 180.0


class PeerFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class NodePeer:
    section: str  # the --only name
    label: str
    package: str  # npm package, pinned in bench/peers/package.json
    script: str  # driver in bench/peers
    database: str
    probe: DrainProbe
    succeeded: str  # SQL: jobs that finished successfully, given %(total)s
    work_options: Callable[[BenchConfig], dict[str, float]]
    settings: Callable[[BenchConfig], str]  # how it was run, for the table

    def version(self) -> str:
        manifest = PEERS_DIR / "node_modules" / self.package / "package.json"
        return str(json.loads(manifest.read_text())["version"])


# graphile-worker deletes a job once it succeeds; a failed job stays (with
# its error) for a retry. Finished = gone.
GRAPHILE = NodePeer(
    section="graphile",
    label="graphile-worker",
    package="graphile-worker",
    script="graphile_worker.mjs",
    database="bench_graphile",
    probe=DrainProbe(
        finished="SELECT %(total)s - count(*), clock_timestamp() "
        "FROM graphile_worker._private_jobs",
        any_left="SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs), clock_timestamp()",
    ),
    succeeded="SELECT %(total)s - count(*) FROM graphile_worker._private_jobs",
    work_options=lambda cfg: {
        "concurrency": cfg.node_concurrency,
        "local-queue": cfg.graphile_local_queue,
        "refetch-ms": cfg.graphile_refetch_ms,
    },
    settings=lambda cfg: (
        f"1 process x {cfg.node_concurrency}, localQueue {cfg.graphile_local_queue} "
        f"(refetch {cfg.graphile_refetch_ms} ms), batch delays 0, "
        f"pool {max(10, cfg.node_concurrency + 2)}"
    ),
)

# pg-boss keeps completed jobs (state 'completed') until its retention ends;
# open jobs are found through its own partial index of jobs in created,
# retry, active or failed state (job_common_i14 in v12).
_PGBOSS_OPEN = (
    "FROM pgboss.job WHERE name = 'bench_noop' AND state IN ('created', 'retry', 'active')"
)
PGBOSS = NodePeer(
    section="pgboss",
    label="pg-boss",
    package="pg-boss",
    script="pg_boss.mjs",
    database="bench_pgboss",
    probe=DrainProbe(
        finished=f"SELECT %(total)s - count(*), clock_timestamp() {_PGBOSS_OPEN}",
        any_left=f"SELECT EXISTS (SELECT 1 {_PGBOSS_OPEN}), clock_timestamp()",
    ),
    succeeded="SELECT count(*) FROM pgboss.job WHERE name = 'bench_noop' AND state = 'completed'",
    work_options=lambda cfg: {
        "concurrency": cfg.node_concurrency,
        "batch": cfg.pgboss_batch,
        "poll-seconds": cfg.pgboss_poll_seconds,
    },
    settings=lambda cfg: (
        f"1 process, localConcurrency {cfg.node_concurrency}, batchSize {cfg.pgboss_batch}, "
        f"burstWhenBatchFull, poll {cfg.pgboss_poll_seconds:g} s"
    ),
)

NODE_PEERS = (GRAPHILE, PGBOSS)


def missing_install() -> str | None:
    """Why the Node peers cannot run here, or None when they can."""
    if not NODE.exists():
        return f"{NODE} is missing: run `make bench` (it runs npm ci in {PEERS_DIR})"
    for peer in NODE_PEERS:
        if not (PEERS_DIR / "node_modules" / peer.package / "package.json").exists():
            return f"npm package {peer.package} is not installed in {PEERS_DIR}"
    return None


def _argv(peer: NodePeer, command: str, url: str, options: dict[str, float]) -> list[str]:
    argv = [str(NODE), str(PEERS_DIR / peer.script), command, url]
    for name, value in options.items():
        argv += [f"--{name}", f"{value:g}"]
    return argv


def _env() -> dict[str, str]:
    # NO_LOG_SUCCESS: graphile-worker's own switch for its line per job.
    return clean_env({"NO_LOG_SUCCESS": "1", "NODE_ENV": "production"})


def _command(peer: NodePeer, command: str, url: str, **options: float) -> dict[str, Any]:
    done = subprocess.run(
        _argv(peer, command, url, options),
        env=_env(),
        cwd=PEERS_DIR,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise PeerFailed(
            f"{peer.label} {command} exited with {done.returncode}:\n{done.stderr[-2000:]}"
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise PeerFailed(f"{peer.label} {command} printed no result:\n{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def prepare_database(server: BenchServer, peer: NodePeer) -> str:
    """A fresh database with the peer's schema, vacuumed, analyzed and
    checkpointed: the same starting line as every other system."""
    url = server.recreate_database(peer.database)
    _command(peer, "setup", url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    return url


def run_node_peer(
    cfg: BenchConfig,
    server: BenchServer,
    peer: NodePeer,
    cpu: PostgresCpu,
    tag: str,
) -> dict[str, Any]:
    jobs = cfg.node_job_count
    url = prepare_database(server, peer)
    with psycopg.connect(url, autocommit=True) as admin:
        queued = _command(peer, "enqueue", url, jobs=jobs)
        if int(queued.get("enqueued", -1)) != jobs:
            raise PeerFailed(f"{peer.label} queued {queued}, expected {jobs}")
        worker = start(
            f"{tag}-{peer.section}",
            _argv(peer, "work", url, peer.work_options(cfg)),
            _env(),
            cfg.out_dir / "logs",
        )
        try:
            busy = watch_drain(
                admin,
                peer.probe,
                total=jobs,
                items=jobs,
                cpu=cpu,
                worker_pids=[worker.pid],
                children=[worker],
                timeout=cfg.run_timeout,
            )
            rss = peak_rss_bytes(worker.pid)
        finally:
            stop([worker])
        row = admin.execute(peer.succeeded, {"total": jobs}).fetchone()
    assert row is not None
    if int(row[0]) != jobs:
        raise PeerFailed(f"{peer.label}: {row[0]} of {jobs} jobs succeeded")
    return {
        "peer": peer.section,
        "label": peer.label,
        "version": peer.version(),
        "settings": peer.settings(cfg),
        "jobs": jobs,
        "worker_peak_rss_mb": rss / 2**20,
        **busy.as_dict(),
    }
