"""What the documentation names in backticks, and where each name must exist.

README.md and docs/*.md name the code in inline code spans: settings,
tables, columns, functions, named queries, modules, files, commands, routes,
metrics. tests/unit/test_architecture_doc.py checks the names it can check
without a database; tests/integration/test_docs_name_real_things.py checks
the rest against a migrated database. A failure names the document, the line
and the name. This module only reads; it never decides that a name is fine
because it is hard to check.

What counts as a name in a span (everything else is prose, a value, an
example or another product's syntax and is not checked):

- `GOODFELLAZ17_*` anywhere in a span: a setting's variable (a Settings field),
  unless the docs define it themselves as a shell variable (`export X=...`);
  `_SUFFIX` alone: the end of a setting's variable.
- `goodfellaz17 <command> ...` anywhere, or a span starting with a top-level
  command (`orders cancel ID [--force]`): the command path and its `--options`
  must exist in the CLI; a span that is a log event of the package
  (`chaos enabled`) is one of those instead.
- `make <target>`: a target of the Makefile.
- `/path` or `METHOD /path` whose first segment the app serves: a route of
  the app (`{param}` names and `[?query]` parts ignored).
- `module::test`: a test in tests/.
- `svc/name`, `deployment/name`, ...: a resource in deploy/k8s.
- a path (`db/queries.sql`, `deploy/k8s/`, `cli.py`): a file or folder of the
  repository (relative to the root, to src/goodfellaz17, or the end of a
  longer path), or one .gitignore names (generated);
  `package/module.attribute`: that attribute of that module.
- `name.attribute` (`orders.delivered`, `hmac.compare_digest`): a table's
  column, or a module's attribute.
- a lone identifier: snake_case with an underscore, UPPER_SNAKE, PascalCase or
  camelCase (single plain words like `status` are English as often as code,
  and are not checked);
- inside any other span (SQL, PromQL, shell): every snake_case word with an
  underscore outside quotes (`lease_expires_at < now()`).
  A lone identifier or such a word must be a named query, a database object
  or setting, an exported metric, a Python name in the package or in tests/,
  a key in deploy/, a name the docs define themselves (a SQL `AS alias`, a
  `$SHELL_VARIABLE`), or one of EXTERNAL_NAMES.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import goodfellaz17
from goodfellaz17.settings import Settings
from tests.deploy_manifests import K8S, ROOT, load_manifests

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "src" / "goodfellaz17"

SNAKE = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+"
UPPER_SNAKE = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"
PASCAL = r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+"
CAMEL = r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+"
IDENTIFIER = re.compile(rf"\$?(?:{SNAKE}|{UPPER_SNAKE}|{PASCAL}|{CAMEL})")
SETTING = re.compile(r"\bGOODFELLAZ17_[A-Z0-9_]*[A-Z0-9]")
FILE_SUFFIXES = {
    "cfg", "css", "csv", "html", "in", "ini", "js", "json", "jsonl", "lock", "md", "py", "sh",
    "sql", "svg", "toml", "txt", "yaml", "yml",
}  # fmt: skip
K8S_KINDS = {
    "svc": "Service", "service": "Service", "deployment": "Deployment", "deploy": "Deployment",
    "configmap": "ConfigMap", "secret": "Secret", "servicemonitor": "ServiceMonitor",
}  # fmt: skip
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Names of other software the docs explain, with where they come from.
EXTERNAL_NAMES = {
    "max_prepared_statements": "a PgBouncer setting",
    "ignore_startup_parameters": "a PgBouncer setting",
    "ignored_auth": "a schemathesis check",
    "ON_ERROR_STOP": "a psql variable",
    "HttpOnly": "a cookie attribute",
    "pg_ctl": "a PostgreSQL program",
}


@dataclass(frozen=True)
class Mention:
    """One inline code span of one document."""

    doc: str  # relative to the repository root
    line: int
    text: str  # whitespace collapsed

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


@dataclass(frozen=True)
class Name:
    """Something a mention names, to be found where its kind says."""

    # setting, setting-suffix, command, make, route, test, k8s, path, module, dotted, name
    kind: str
    value: str
    mention: Mention

    def __str__(self) -> str:
        shown = "" if self.value == self.mention.text else f" ({self.value})"
        return f"{self.mention}{shown}"


# ---------------------------------------------------------------- reading the docs


def _without_fenced_blocks(text: str) -> str:
    """Fenced blocks blanked line for line, so line numbers stay right."""
    return re.sub(
        r"^```.*?^```[^\n]*$",
        lambda m: "\n" * m.group(0).count("\n"),
        text,
        flags=re.DOTALL | re.MULTILINE,
    )


def mentions() -> list[Mention]:
    found = []
    for doc in DOCS:
        text = _without_fenced_blocks(doc.read_text())
        for m in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, flags=re.DOTALL):
            line = text.count("\n", 0, m.start()) + 1
            found.append(Mention(str(doc.relative_to(ROOT)), line, " ".join(m.group(2).split())))
    return found


@functools.cache
def names_the_docs_define() -> frozenset[str]:
    """Shell variables (`export X=`, `$X`) and SQL aliases (`AS x`) of the docs'
    own examples: they exist because the docs say so."""
    text = "\n".join(doc.read_text() for doc in DOCS)
    shell = re.findall(r"\$\{?([A-Za-z_]\w*)", text)
    assigned = re.findall(r"^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=", text, flags=re.MULTILINE)
    aliases = re.findall(r"\bAS\s+([a-z_][a-z0-9_]*)", text, flags=re.IGNORECASE)
    return frozenset([*shell, *assigned, *aliases])


def links() -> list[Mention]:
    """Relative Markdown links, `[text](target)`: a mention of their target."""
    found = []
    for doc in DOCS:
        text = _without_fenced_blocks(doc.read_text())
        for m in re.finditer(r"\]\(([^()\s]+)\)", text):
            if not re.match(r"[a-z]+:", m.group(1)):  # http:, https:, mailto:
                line = text.count("\n", 0, m.start()) + 1
                found.append(Mention(str(doc.relative_to(ROOT)), line, m.group(1)))
    return found


def heading_anchors(doc: Path) -> set[str]:
    """The anchors GitHub makes of a document's headings."""
    headings = re.findall(r"^#+ (.+)$", _without_fenced_blocks(doc.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def link_problem(link: Mention) -> str | None:
    path, _, anchor = link.text.partition("#")
    target = (ROOT / link.doc).parent / path if path else ROOT / link.doc
    if not target.exists():
        return "no such file"
    if anchor and anchor not in heading_anchors(target):
        return f"{target.name} has no heading #{anchor}"
    return None


# ---------------------------------------------------------------- what a span names


@functools.cache
def names() -> tuple[Name, ...]:
    return tuple(name for mention in mentions() for name in names_in(mention))


def names_in(mention: Mention) -> list[Name]:
    text = mention.text
    found = [Name("setting", v, mention) for v in SETTING.findall(text)]
    if re.fullmatch(r"_[A-Z][A-Z0-9_]*", text):
        return [Name("setting-suffix", text, mention)]
    if command := _command_in(text):
        return [*found, Name("command", command, mention)]
    if re.fullmatch(r"make [a-z][\w-]*(?: .*)?", text):
        return [*found, Name("make", text.split()[1], mention)]
    if re.fullmatch(rf"(?:(?:{'|'.join(METHODS)}) )?/\S*", text):
        return [*found, Name("route", text, mention)]
    if re.search(r"\s", text) or not re.fullmatch(r"[\w$./:-]+", text):
        return found + [Name("name", word, mention) for word in _words_in_code(text)]
    return found + _name_of_one_token(text, mention)


def _name_of_one_token(text: str, mention: Mention) -> list[Name]:
    if "::" in text:
        return [Name("test", text, mention)]
    kind, _, rest = text.partition("/")
    if kind in K8S_KINDS and re.fullmatch(r"[a-z0-9-]+", rest):
        return [Name("k8s", text, mention)]
    if ":" in text:  # a URL, an image tag, key:role: not ours to look up
        return []
    dotted = re.fullmatch(r"([A-Za-z_][\w/]*)\.([A-Za-z_]\w*)", text)
    if dotted and dotted.group(2) not in FILE_SUFFIXES and "/" in dotted.group(1):
        return [Name("module", text.replace("/", "."), mention)]
    if "/" in text or ("." in text and text.rpartition(".")[2] in FILE_SUFFIXES):
        return [Name("path", text, mention)]
    if re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", text):
        return [Name("dotted", text, mention)]
    if IDENTIFIER.fullmatch(text) and not text.lstrip("$").startswith("GOODFELLAZ17_"):
        return [Name("name", text.lstrip("$"), mention)]
    return []


def _words_in_code(text: str) -> list[str]:
    """snake_case words of a code fragment, outside quotes and <placeholders>."""
    code = re.sub(r"<[^>]*>", " ", text)
    code = re.sub(r"'[^']*'|\"[^\"]*\"", " ", code)
    words = re.findall(r"[A-Za-z_][\w.]*", code)
    return [part for word in words for part in word.split(".") if re.fullmatch(SNAKE, part)]


def _command_in(text: str) -> str | None:
    """`goodfellaz17 orders list` → 'orders list ...'; a span that starts with a
    top-level command counts too (`dlq drain ID`)."""
    found = re.search(r"(?:^|\s)goodfellaz17 ([a-z].*)", text)
    if found:
        return found.group(1)
    words = text.split()
    starts_a_command = len(words) > 1 and words[0] in cli_tree().commands
    if starts_a_command and re.fullmatch(r"[a-z][a-z-]*|--[a-z-]+|\[.*|[A-Z_]+", words[1]):
        return text
    return None


# ---------------------------------------------------------------- what exists, without a database


@functools.cache
def cli_tree() -> Any:
    """The click command tree of the `goodfellaz17` command line."""
    import typer

    cli = importlib.import_module("goodfellaz17.cli")
    app = next(v for v in vars(cli).values() if isinstance(v, typer.Typer))
    return typer.main.get_command(app)


def command_problem(usage: str) -> str | None:
    """Why `usage` (the words after `goodfellaz17`) is not a command, or None."""
    node, path = cli_tree(), []
    words = usage.replace("[", " ").replace("]", " ").replace("|", " ").split()
    for word in words:
        commands = getattr(node, "commands", None)
        if commands is None or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        if word not in commands:
            return f"`goodfellaz17 {' '.join(path)}` has no command `{word}`".replace("  ", " ")
        node, path = commands[word], [*path, word]
    options = {opt for param in getattr(node, "params", []) for opt in param.opts} | {"--help"}
    unknown = [w.split("=")[0] for w in words if w.startswith("--")]
    missing = [w for w in unknown if w not in options]
    if missing:
        return f"`goodfellaz17 {' '.join(path)}` has no option {', '.join(missing)}"
    return None


@functools.cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE))


@functools.cache
def setting_variables() -> frozenset[str]:
    variables = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        variables.add(alias if isinstance(alias, str) else f"GOODFELLAZ17_{name.upper()}")
    return frozenset(variables)


def documented_defaults() -> list[tuple[Mention, str, str]]:
    """(where, variable, default) of each README settings row that gives one
    variable and one literal default, both in backticks."""
    text = (ROOT / "README.md").read_text()
    rows = re.finditer(r"^\| `(GOODFELLAZ17_[A-Z0-9_]+)` \| `([^`|]+)` \|", text, re.MULTILINE)
    return [
        (Mention("README.md", text.count("\n", 0, m.start()) + 1, m.group(1)), *m.groups())
        for m in rows
        if not re.fullmatch(UPPER_SNAKE, m.group(2))  # a default that names another variable
    ]


def default_problem(variable: str, documented: str) -> str | None:
    field = Settings.model_fields.get(variable.removeprefix("GOODFELLAZ17_").lower())
    if field is None:
        return "no such setting"
    default = field.default
    if isinstance(default, bool):
        actual = str(default).lower()
    elif isinstance(default, int | float):
        same = re.fullmatch(r"-?[\d.]+", documented) and float(documented) == default
        actual = documented if same else str(default)
    else:
        actual = str(getattr(default, "value", default))
    return None if actual == documented else f"the default is {actual}, not {documented}"


@functools.cache
def repository_paths() -> frozenset[str]:
    """Every file and folder of the checkout, relative to its root."""
    skip = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
    found: set[str] = set()

    def walk(folder: Path) -> None:
        for entry in folder.iterdir():
            if entry.name in skip or entry.name.startswith(".pytest"):
                continue
            found.add(str(entry.relative_to(ROOT)))
            if entry.is_dir() and not entry.is_symlink():
                walk(entry)

    walk(ROOT)
    return frozenset(found)


def path_exists(text: str) -> bool:
    path = text.rstrip("/")
    paths = repository_paths()
    package = str(PACKAGE.relative_to(ROOT))
    if path in paths or f"{package}/{path}" in paths:
        return True
    if any(p.endswith("/" + path) for p in paths):
        return True
    ignored = [
        line.strip().strip("/")
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return path.split("/")[0] in ignored


def attribute_exists(dotted: str) -> bool:
    """`module.attr` in the package (`domain.states.TRANSITIONS`) or anywhere
    importable (`hmac.compare_digest`)."""
    parts = dotted.split(".")
    for prefix in ("goodfellaz17.", ""):
        for cut in range(len(parts) - 1, 0, -1):
            try:
                obj: Any = importlib.import_module(prefix + ".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for part in parts[cut:]:
                    obj = getattr(obj, part)
            except AttributeError:
                break
            return True
    return False


@functools.cache
def app_routes() -> frozenset[tuple[str, str]]:
    """(method, path) of every route and mount of the app, `{}` for parameters."""
    from goodfellaz17.api.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(None), "postgresql://unused", run_worker=False)
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str = "") -> None:
        for route in routes:
            path = re.sub(r"\{[^}]*\}", "{}", prefix + getattr(route, "path", ""))
            if hasattr(route, "methods"):  # an endpoint
                found.update((method, path) for method in route.methods)
                continue
            if hasattr(route, "app"):  # a mount: its own path, then what it serves
                found.add(("GET", path))
            # An included router (FastAPI >= 0.160 wraps them) or a mounted app.
            inner = getattr(getattr(route, "original_router", None), "routes", None)
            walk(inner if inner is not None else getattr(route, "routes", []), path)

    walk(app.routes)
    return frozenset(found)


def route_problem(text: str) -> str | None:
    """Why a documented route is not one of the app's, or None (also for
    paths outside the app's top-level segments, like /usr/bin/chromium)."""
    method, _, path = text.rpartition(" ")
    path = re.sub(r"\[.*?\]|\?.*$", "", path)
    path = re.sub(r"\{[^}]*\}", "{}", path).rstrip("/") or "/"
    routes = app_routes()
    if path.split("/")[1] not in {p.split("/")[1] for _, p in routes}:
        return None
    served = {m for m, p in routes if p == path}
    if not served:
        return "the app has no such route"
    if method and method not in served:
        return f"the route answers {', '.join(sorted(served))}, not {method}"
    return None


def pytest_node_exists(node: str) -> bool:
    module, _, function = node.partition("::")
    for path in (ROOT / "tests").rglob(f"{module.removesuffix('.py').split('/')[-1]}.py"):
        tree = ast.parse(path.read_text())
        if any(getattr(n, "name", None) == function for n in ast.walk(tree)):
            return True
    return False


def k8s_resource_exists(ref: str) -> bool:
    kind, _, name = ref.partition("/")
    manifests = load_manifests(*sorted(K8S.glob("*.yaml")))
    return any(m.kind == K8S_KINDS[kind] and m.name == name for m in manifests)


# ---------------------------------------------------------------- names the code holds


@functools.cache
def names_spelled_in_package() -> frozenset[str]:
    """Every identifier, argument, keyword, attribute and identifier-like or
    log-event-like string constant of the package's source."""
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name):
                found.add(node.id)
            elif isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node, ast.arg | ast.keyword) and node.arg:
                found.add(node.arg)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.add(node.name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(re.findall(r"^[\w:. -]{1,80}$", node.value))
    return frozenset(found)


@functools.cache
def package_names() -> frozenset[str]:
    """Names of the package: modules, their attributes and class members
    (incl. pydantic fields and their JSON aliases), and what the source spells
    (log event names and fields, JSON keys)."""
    found = set(names_spelled_in_package())
    for module_info in pkgutil.walk_packages(goodfellaz17.__path__, "goodfellaz17."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        found.add(module_info.name.rpartition(".")[2])
        for name, value in vars(module).items():
            found.add(name)
            if isinstance(value, type) and value.__module__.startswith("goodfellaz17"):
                found.update(_members(value))
    return frozenset(found)


def _members(cls: type) -> set[str]:
    members = set(dir(cls))
    if dataclasses.is_dataclass(cls):
        members.update(f.name for f in dataclasses.fields(cls))
    for name, field in getattr(cls, "model_fields", {}).items():
        members.add(name)
        members.update(a for a in (field.alias, field.serialization_alias) if a)
    return members


@functools.cache
def names_defined_in_tests() -> frozenset[str]:
    """Test modules, tests, helpers and constants of tests/: what they define,
    never what their strings say (a test may spell a name that must be gone)."""
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        found.add(path.stem)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(found)


@functools.cache
def deploy_words() -> frozenset[str]:
    """Keys and values of deploy/ (Kubernetes fields, alert annotations, ...)."""
    found: set[str] = set()
    for path in (ROOT / "deploy").rglob("*"):
        if path.suffix in {".yml", ".yaml", ".json"}:
            found.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", path.read_text()))
    return frozenset(found)


@functools.cache
def named_queries() -> frozenset[str]:
    from goodfellaz17.db.queries import load_queries

    return frozenset(load_queries())


def known_without_database() -> frozenset[str]:
    """Every name that resolves without the database's catalog or a scrape."""
    psycopg_errors = set(dir(importlib.import_module("psycopg.errors")))
    return frozenset(
        named_queries()
        | package_names()
        | names_defined_in_tests()
        | deploy_words()
        | names_the_docs_define()
        | psycopg_errors
        | set(EXTERNAL_NAMES)
    )
