"""A migration that has run somewhere never changes.

db/migrations/frozen.toml holds the sha256 of every migration but the newest.
The manifest check runs everywhere (a tarball, a shallow CI clone); the
history check, where git history is at hand, proves the manifest itself was
not rewritten along with a migration: each listed hash is the file's first
committed version (or, for the one documented exception, its version when
the next migration was added).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from goodfellaz17.db.migrate import migrations_dir

MIGRATIONS = Path(migrations_dir())
MANIFEST = MIGRATIONS / "frozen.toml"


def manifest() -> dict[str, Any]:
    return tomllib.loads(MANIFEST.read_text(encoding="utf-8"))


def migration_files() -> list[str]:
    return sorted(p.name for p in MIGRATIONS.glob("*.sql") if not p.name.endswith(".rollback.sql"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(MIGRATIONS), *args], capture_output=True, check=False, timeout=30
    )


def has_full_history() -> bool:
    if shutil.which("git") is None:
        return False
    shallow = git("rev-parse", "--is-shallow-repository")
    return shallow.returncode == 0 and shallow.stdout.strip() == b"false"


def first_commit_adding(name: str) -> str | None:
    log = git("log", "--diff-filter=A", "--reverse", "--format=%H", "--", name)
    commits = log.stdout.decode().split()
    return commits[0] if commits else None


def committed_bytes(commit: str, name: str) -> bytes:
    shown = git("show", f"{commit}:./{name}")
    assert shown.returncode == 0, shown.stderr.decode()
    return shown.stdout


def test_every_migration_but_the_newest_is_frozen_in_the_manifest() -> None:
    frozen: dict[str, str] = manifest()["sha256"]
    files = migration_files()
    unlisted = [name for name in files[:-1] if name not in frozen]
    assert not unlisted, "list these in db/migrations/frozen.toml: " + ", ".join(
        f'"{n}" = "{sha256((MIGRATIONS / n).read_bytes())}"' for n in unlisted
    )
    missing = sorted(set(frozen) - set(files))
    assert not missing, f"frozen migrations were deleted: {missing}"


@pytest.mark.parametrize("name", sorted(manifest()["sha256"]))
def test_a_frozen_migration_is_byte_identical_to_the_manifest(name: str) -> None:
    frozen: dict[str, str] = manifest()["sha256"]
    actual = sha256((MIGRATIONS / name).read_bytes())
    assert actual == frozen[name], (
        f"{name} was edited after it was frozen; revert it and add a new migration instead"
    )


def test_exceptions_are_listed_migrations_with_a_reason() -> None:
    data = manifest()
    for name, reason in data["frozen_when_next_was_added"].items():
        assert name in data["sha256"]
        assert len(reason.split()) > 10, f"say why {name} is an exception"


@pytest.mark.parametrize("name", sorted(manifest()["sha256"]))
def test_a_frozen_migration_is_its_first_committed_version(name: str) -> None:
    if not has_full_history():
        pytest.skip("no git history here (a shallow clone or no checkout): manifest check only")
    added = first_commit_adding(name)
    if added is None:
        pytest.skip(f"{name} is not committed yet: its first commit will be checked")
    files = migration_files()
    if name in manifest()["frozen_when_next_was_added"]:
        following = files[files.index(name) + 1] if name != files[-1] else None
        added_next = first_commit_adding(following) if following else None
        if added_next is None:
            pytest.skip(f"{name} may change until the next migration is committed")
        version, which = committed_bytes(added_next, name), f"at {added_next[:12]}"
    else:
        version, which = committed_bytes(added, name), f"first committed in {added[:12]}"
    assert sha256(version) == manifest()["sha256"][name], (
        f"frozen.toml's hash of {name} is not its version {which}: "
        "a migration and its manifest entry were changed together"
    )
