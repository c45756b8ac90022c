"""Every command of docs/RUNBOOK.md, run against a live server and database.

The rules (the runbook's appendix tells its readers the same):

1. A fenced block's language is the first word of its info string. ```bash
   blocks run with `bash -euo pipefail` and must exit 0; ```sql blocks run in
   `psql "$DATABASE_URL"` with ON_ERROR_STOP and must not fail.
2. Placeholders. bash blocks read $BASE_URL, $GOODFELLAZ17_API_KEY (an
   operator key), $DATABASE_URL, $ORDER_ID, $WORKER_ID and $NODE_ID from the
   environment; in sql blocks `{orderId}` and `{workerId}` are replaced. Before
   every block, fresh objects are created for them (see `Fixtures`), so a
   destructive procedure (drain, cancel, force-complete) always meets an order
   in the state it is written for, whatever ran before it.
3. Blocks of any other language (```console for Kubernetes or commands that
   never end, ```text) are not run. Each one is listed in SKIPPED_BLOCKS with
   its reason, and the list must match the runbook exactly: a new block that is
   not run fails the test until someone lists it here on purpose.
4. `kubectl` appears only in skipped blocks; streaming commands (`watch`,
   `tail -f`, `--follow`) too. Every `curl` in a run block uses `-f` or
   `--fail-with-body`, so an HTTP status >= 400 fails the block.
5. Blocks run in document order against one server, so whatever a block
   switches on (the emergency brake's pause) a later block must switch off:
   afterwards chaos injection must be off and every invariant must hold.

Also checked without a server: every alert in deploy/prometheus/alerts.yml has
its section at its runbook_url anchor (as GitHub renders headings), every
link inside the runbook resolves, and the contract's section-6 SQL appears
verbatim in its sql blocks.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import runbook_sql
from tests.conftest import OPERATOR_KEY
from tests.e2e.procs import Proc, service_env
from tests.helpers import free_port, health_is_up, insert_order, violations, wait_until
from tests.observability import ROOT, alert_rules

RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
RUN_LANGUAGES = {"bash", "sql"}
SQL_PLACEHOLDERS = {"{orderId}": "order_id", "{workerId}": "worker_id"}
BLOCK_TIMEOUT_SECONDS = 180

# Blocks the test does not run, by (language, first line), with the reason.
SKIPPED_BLOCKS: dict[tuple[str, str], str] = {
    (
        "console",
        "kubectl port-forward svc/goodfellaz17 8080:8080 >/dev/null &",
    ): "needs a Kubernetes cluster",
    (
        "console",
        "kubectl get pods -l app.kubernetes.io/name=goodfellaz17 -o wide",
    ): "needs a Kubernetes cluster",
    (
        "console",
        "kubectl logs -l app.kubernetes.io/name=goodfellaz17 --prefix --since=15m --tail=-1 \\",
    ): "needs a Kubernetes cluster",
    (
        "console",
        "kubectl get pods -l app.kubernetes.io/name=goodfellaz17   # RESTARTS",
    ): "needs a Kubernetes cluster",
    ("console", 'watch -n 10 goodfellaz17 orders progress "$ORDER_ID"'): "runs until Ctrl-C",
    ("console", "kubectl set env deployment/goodfellaz17 GOODFELLAZ17_WORKER_ENABLED=false"): (
        "needs a Kubernetes cluster"
    ),
    ("console", "kubectl scale deployment/goodfellaz17 --replicas=0"): "needs a Kubernetes cluster",
    (
        "console",
        "GOODFELLAZ17_WORKER_ENABLED=false goodfellaz17 serve --host 0.0.0.0 --port 8080",
    ): ("a server that runs until stopped"),
    ("console", "kubectl set env deployment/goodfellaz17 GOODFELLAZ17_WORKER_ENABLED=true"): (
        "needs a Kubernetes cluster"
    ),
    ("console", "kubectl rollout history deployment/goodfellaz17"): "needs a Kubernetes cluster",
    ("console", "goodfellaz17 nodes add --provider webhook --identifier hook-eu-2 \\"): (
        "registers an external endpoint: the test's webhook orders would be sent to it"
    ),
    (
        "console",
        "kubectl scale deployment/goodfellaz17-worker --replicas=4",
    ): "needs a Kubernetes cluster",
}


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    line: int  # of the opening fence, 1-based

    @property
    def first_line(self) -> str:
        return next((ln for ln in self.body.splitlines() if ln.strip()), "")

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str
    line: int


FENCE = re.compile(r"^( *)(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def parse(text: str) -> tuple[list[Block], list[Heading]]:
    """Fenced blocks and headings (none inside a block), in document order."""
    blocks: list[Block] = []
    headings: list[Heading] = []
    seen: Counter[str] = Counter()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            indent, marks, info = len(fence.group(1)), fence.group(2), fence.group(3)
            body: list[str] = []
            j = i + 1
            while j < len(lines):
                close = FENCE.match(lines[j])
                if close and close.group(2).startswith(marks) and not close.group(3).strip():
                    break
                body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
                j += 1
            else:
                raise AssertionError(f"RUNBOOK.md:{i + 1}: unclosed code fence")
            language = info.strip().split()[0].lower() if info.strip() else ""
            blocks.append(Block(language, "\n".join(body) + "\n", i + 1))
            i = j + 1
            continue
        heading = HEADING.match(lines[i])
        if heading:
            anchor = github_anchor(heading.group(2))
            # GitHub suffixes repeated anchors with -1, -2, ...
            unique = anchor if not seen[anchor] else f"{anchor}-{seen[anchor]}"
            seen[anchor] += 1
            headings.append(Heading(len(heading.group(1)), heading.group(2), unique, i + 1))
        i += 1
    return blocks, headings


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook() -> tuple[str, list[Block], list[Heading]]:
    text = RUNBOOK.read_text()
    blocks, headings = parse(text)
    return text, blocks, headings


def section(text: str, headings: list[Heading], anchor: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = next(h for h in headings if h.anchor == anchor)
    later = [h.line for h in headings if h.line > start.line and h.level <= start.level]
    end = later[0] - 1 if later else len(lines)
    return "\n".join(lines[start.line : end])


def logical_lines(body: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    return body.replace("\\\n", " ").splitlines()


# ---------------------------------------------------------------- static checks


def test_parser_finds_blocks_and_github_anchors() -> None:
    sample = (
        "# Top\n\n## Alert: DeadLetterQueueHigh\n```bash extra words\n# not a heading\n"
        "echo hi\n```\n## 5.2 A worker was killed (deploy, OOM)\n## Top\n"
    )
    blocks, headings = parse(sample)
    assert [(b.language, b.body, b.line) for b in blocks] == [
        ("bash", "# not a heading\necho hi\n", 4)
    ]
    assert [h.anchor for h in headings] == [
        "top",
        "alert-deadletterqueuehigh",
        "52-a-worker-was-killed-deploy-oom",
        "top-1",
    ]


def test_every_alert_has_a_section_at_its_runbook_url() -> None:
    text, blocks, headings = runbook()
    anchors = {h.anchor for h in headings}
    rules = alert_rules()
    assert rules, "no alert rules found"
    for rule in rules:
        name = rule["alert"]
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/RUNBOOK.md", f"{name}: runbook_url {url!r}"
        assert anchor == f"alert-{name.lower()}", f"{name}: runbook_url {url!r}"
        assert anchor in anchors, f"{name}: no heading renders to #{anchor}"
        body = section(text, headings, anchor)
        severity = rule["labels"]["severity"]
        assert f"**{severity}" in body, f"{name}: the section does not state {severity}"
        for part in ("**Fires when**", "**Diagnose", "**Resolve", "**Escalate"):
            assert part in body, f"{name}: the section has no {part}"
        start = next(h.line for h in headings if h.anchor == anchor)
        end = start + len(body.splitlines())
        assert any(b.runs and start < b.line <= end for b in blocks), (
            f"{name}: the section has no command the test runs"
        )
    documented = {h.text.removeprefix("Alert: ") for h in headings if h.text.startswith("Alert: ")}
    assert documented == {r["alert"] for r in rules}, "alert sections and alerts.yml differ"


def test_every_link_inside_the_runbook_resolves() -> None:
    text, _, headings = runbook()
    anchors = {h.anchor for h in headings}
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    links = re.findall(r"\]\(#([^)]+)\)", prose)
    assert links
    assert sorted({a for a in links if a not in anchors}) == []


def test_contract_sql_appears_verbatim_in_sql_blocks() -> None:
    _, blocks, _ = runbook()
    sql_text = "".join(b.body for b in blocks if b.language == "sql")
    missing = [name for name, stmt in runbook_sql.ALL.items() if stmt not in sql_text]
    assert missing == []


def test_contract_emergency_brake_commands_appear_verbatim() -> None:
    text, blocks, _ = runbook()
    commands = "".join(b.body for b in blocks)
    for command in (
        "kubectl set env deployment/goodfellaz17 GOODFELLAZ17_WORKER_ENABLED=false",
        "kubectl scale deployment/goodfellaz17 --replicas=0",
    ):
        assert command in commands, command
    assert "`GOODFELLAZ17_WORKER_ENABLED=false`" in text


def test_only_the_listed_blocks_are_not_run() -> None:
    _, blocks, _ = runbook()
    skipped = Counter((b.language, b.first_line) for b in blocks if not b.runs)
    assert all(n == 1 for n in skipped.values()), "two skipped blocks start alike"
    assert set(skipped) == set(SKIPPED_BLOCKS), (
        "not run but not listed: "
        f"{sorted(set(skipped) - set(SKIPPED_BLOCKS))}; "
        f"listed but gone: {sorted(set(SKIPPED_BLOCKS) - set(skipped))}"
    )
    assert all(reason for reason in SKIPPED_BLOCKS.values())
    assert sum(b.runs for b in blocks) >= 40, "most of the runbook should run"


def test_run_blocks_follow_the_rules() -> None:
    _, blocks, _ = runbook()
    problems: list[str] = []
    for b in (b for b in blocks if b.runs):
        where = f"RUNBOOK.md:{b.line}"
        if re.search(r"\bkubectl\b", b.body):
            problems.append(f"{where}: kubectl in a {b.language} block")
        if re.search(r"(^|\s)(watch\s|tail\s+-f|--follow\b)", b.body):
            problems.append(f"{where}: a streaming command in a {b.language} block")
        if b.language == "sql":
            unknown = set(re.findall(r"\{[A-Za-z]+\}", b.body)) - set(SQL_PLACEHOLDERS)
            if unknown:
                problems.append(f"{where}: unknown placeholders {sorted(unknown)}")
            continue
        if re.search(r"\{[A-Za-z]+\}", b.body.replace('{"', "")):
            problems.append(f"{where}: a {{placeholder}} in a bash block (use $ORDER_ID...)")
        for line in logical_lines(b.body):
            for call in re.finditer(r"\bcurl\b([^|;&\n]*)", line):
                args = call.group(1)
                if "--version" in args:
                    continue
                if not re.search(r"(^|\s)(-[a-zA-Z]*f[a-zA-Z]*|--fail(-with-body)?)(\s|$)", args):
                    problems.append(f"{where}: curl without -f: {line.strip()[:80]}")
    assert problems == []


# ---------------------------------------------------------------- live run


@dataclass
class Fixtures:
    """Fresh objects for the placeholders, made before each block."""

    order_id: str
    worker_id: str
    node_id: str

    @classmethod
    def create(cls, conn: psycopg.Connection[Any], n: int) -> Fixtures:
        # An order 3 hours old, PROCESSING, on a backend with no node, so
        # nothing but the runbook moves its tasks: 10 COMPLETED, 4 dead
        # letters and 4 retrying (a node answered 503), 20 PENDING.
        order_id = insert_order(conn, quantity=15_000, target=f"runbook-{n}", backend="webhook")
        conn.execute(
            "UPDATE orders SET created_at = now() - interval '3 hours' WHERE id = %s", (order_id,)
        )
        conn.execute(
            """UPDATE order_tasks SET
                   status = CASE WHEN seq < 10 THEN 'COMPLETED'
                                 WHEN seq < 14 THEN 'FAILED_PERMANENT'
                                 ELSE 'FAILED_RETRYING' END,
                   attempts = CASE WHEN seq < 10 THEN 1 WHEN seq < 14 THEN 5 ELSE 2 END,
                   retry_after = CASE WHEN seq >= 14 THEN now() + interval '1 hour' END,
                   last_error = CASE WHEN seq >= 10 THEN 'HTTP 503 from node hook-eu-1' END,
                   executed_at = now() - interval '2 hours'
               WHERE order_id = %s AND seq < 18""",
            (order_id,),
        )
        # A dead worker (no heartbeat for 10 minutes) still holding the
        # EXECUTING tasks of another order. Their leases outlast the test, so
        # only the runbook's "hand them to the rescuer" makes them orphans.
        worker_id = f"goodfellaz17-7c9f8d6b5-dead{n}-1-0f{n % 256:02x}00"
        conn.execute(
            """INSERT INTO workers (id, hostname, pid, started_at, last_heartbeat_at)
               VALUES (%s, %s, 1, now() - interval '1 hour', now() - interval '10 minutes')""",
            (worker_id, worker_id.rsplit("-", 2)[0]),
        )
        held = insert_order(conn, quantity=1_200, target=f"runbook-held-{n}", backend="webhook")
        conn.execute(
            """UPDATE order_tasks SET status = 'EXECUTING', attempts = 1, lease_owner = %s,
                   lease_expires_at = now() + interval '1 hour',
                   fencing_token = nextval('order_tasks_fencing_token_seq'),
                   started_at = now() - interval '6 minutes'
               WHERE order_id = %s""",
            (worker_id, held),
        )
        row = conn.execute(
            """INSERT INTO nodes (provider, node_identifier, capacity_per_hour)
               VALUES ('simulated', %s, 360000) RETURNING id""",
            (f"sim-runbook-{n}",),
        ).fetchone()
        assert row is not None
        return cls(str(order_id), worker_id, str(row[0]))


def pg_bin_dir() -> Path:
    """The psql shipped inside the pgserver package (no system client needed)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / "pginstall" / "bin"
    assert (path / "psql").exists(), f"no psql in {path}"
    return path


def block_env(base_url: str, db_url: str, fixtures: Fixtures, data_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GOODFELLAZ17_") and k not in ("DATABASE_URL", "PGPASSWORD")
    }
    path = [str(pg_bin_dir()), str(Path(sys.executable).parent), env.get("PATH", "")]
    env.update(
        {
            "PATH": os.pathsep.join(path),
            "BASE_URL": base_url,
            "GOODFELLAZ17_API_KEY": OPERATOR_KEY,
            "DATABASE_URL": db_url,
            "ORDER_ID": fixtures.order_id,
            "WORKER_ID": fixtures.worker_id,
            "NODE_ID": fixtures.node_id,
            "GOODFELLAZ17_DATA_DIR": str(data_dir),  # never used: DATABASE_URL is set
            "PGCONNECT_TIMEOUT": "10",
        }
    )
    return env


def run_block(block: Block, fixtures: Fixtures, env: dict[str, str], cwd: Path) -> str | None:
    """Run one block; None when it worked, else what went wrong."""
    if block.language == "bash":
        command = ["bash", "--noprofile", "--norc", "-e", "-u", "-o", "pipefail", "-c", block.body]
        stdin = None
    else:
        command = ["psql", env["DATABASE_URL"], "-X", "-v", "ON_ERROR_STOP=1"]
        stdin = block.body
        for placeholder, attribute in SQL_PLACEHOLDERS.items():
            stdin = stdin.replace(placeholder, getattr(fixtures, attribute))
    try:
        done = subprocess.run(
            command,
            input=stdin,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {BLOCK_TIMEOUT_SECONDS} s"
    if done.returncode != 0:
        out, err = done.stdout[-2000:], done.stderr[-2000:]
        return f"exit {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    return None


def orphans_settled(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING' AND lease_expires_at < now()"
    ).fetchone()
    return row == (0,)


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = service_env(db_url, port=port, worker_poll_interval_seconds=1)
    proc = Proc(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"serve exited {proc.popen.returncode}:\n{proc.output()}")
        return health_is_up(base_url, timeout=5)

    try:
        wait_until(ready, within=60, what="serve answering /actuator/health")
        yield base_url
        assert proc.popen.poll() is None, f"serve died during the runbook:\n{proc.output()}"
        assert proc.terminate() == 0, proc.output()[-5000:]
    except BaseException:
        print(proc.output()[-5000:])
        raise
    finally:
        proc.close()


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_every_runbook_block_runs_against_a_live_server(
    live_server: str, db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    _, blocks, _ = runbook()
    to_run = [b for b in blocks if b.runs]
    workdir = tmp_path / "oncall"
    workdir.mkdir()
    failures: list[str] = []
    durations: list[tuple[float, int]] = []
    started = time.monotonic()
    for n, block in enumerate(to_run):
        fixtures = Fixtures.create(sql, n)
        env = block_env(live_server, db_url, fixtures, tmp_path / "cli-data")
        block_started = time.monotonic()
        problem = run_block(block, fixtures, env, workdir)
        durations.append((time.monotonic() - block_started, block.line))
        if problem:
            failures.append(f"RUNBOOK.md:{block.line} ({block.language}): {problem}")
        # Orphans a block made (5.2) are the rescuer's to settle before the next.
        wait_until(lambda: orphans_settled(sql), within=30, what="orphans rescued")
    elapsed = time.monotonic() - started
    slowest = ", ".join(f"line {line}: {d:.1f} s" for d, line in sorted(durations)[-5:])
    print(f"ran {len(to_run)} runbook blocks in {elapsed:.0f} s (slowest: {slowest})")
    assert failures == [], "\n\n".join(failures)

    # The runbook leaves the system as it found it, with every unit accounted for.
    chaos = sql.execute(
        "SELECT enabled AND (expires_at IS NULL OR expires_at > now()) FROM chaos_settings"
    ).fetchone()
    assert chaos == (False,), "a block switched chaos injection on and none switched it off"
    wait_until(lambda: violations(sql) == [], within=30, what="every invariant holding")
    # The operator actions were really carried out, not just accepted.
    actions = {r[0] for r in sql.execute("SELECT DISTINCT action FROM operator_actions")}
    assert {"retry_now", "drain_dead_letters", "cancel", "force_complete"} <= actions
    forced = sql.execute(
        "SELECT count(*) FROM orders WHERE target LIKE 'runbook-%' AND status = 'COMPLETED'"
    ).fetchone()
    assert forced is not None
    assert forced[0] >= 3, "CLI, HTTP and SQL force-complete"
