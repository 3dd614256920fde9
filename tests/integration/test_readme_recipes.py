"""The README's recipes "Add eventseam to a Django project" and "... to a Flask app", replayed verbatim.

Every block of a recipe follows a marker ``<!-- recipe: NAME ACTION[=PATH] -->``; every fenced
block of the section up to the last marker must have one, so no step the reader sees goes
untested. The actions, replayed in order in a temporary directory as in a terminal:

    install           not run (no network): eventseam is importable as its wheel ships it
    run / try         bash -e, in the directory the previous block left; ``try`` places an order
    write=PATH        the block is the whole file PATH (its directory must exist already)
    append=PATH       the block is added at the end of PATH
    serve / request   the development server and a curl to it, on a free port (the only change)
    relay             the relay with ``--bundled-broker``, until SIGTERM
    relay-production  the relay on named brokers, the names replaced by a bundled broker's address

The commands find the venv's ``python``, ``django-admin`` and ``flask`` first on PATH; PYTHONPATH
holds only ``engine`` and ``outbox`` (what ``pip install eventseam`` installs). Checks read the
recipe's SQLite database and the Kafka topic with clients of their own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import pytest

from outbox.bundled_broker import free_port
from tests.kafka_broker import read_topic, start_broker

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
README: Final = REPO_ROOT / "README.md"
#: The venv's bin directory: its python, django-admin and flask come first on the recipes' PATH.
BIN: Final = Path(sys.executable).parent
TOPIC: Final = "eventseam.shop"
WAIT_SECONDS: Final = 60.0
MARKER: Final = re.compile(
    r"<!-- recipe: (?P<recipe>[a-z]+) (?P<action>[a-z-]+)(?:=(?P<argument>\S+))? -->"
)
ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
ACTIONS: Final = (
    "install",
    "run",
    "write",
    "append",
    "try",
    "serve",
    "request",
    "relay",
    "relay-production",
)
PRODUCTION_BROKERS: Final = "kafka-1:9092,kafka-2:9092"


@dataclass(frozen=True, slots=True)
class Recipe:
    """A README recipe and what the test needs to know about the project it builds."""

    name: str
    heading: str
    database: str  # the SQLite file, relative to the project directory
    orders_table: str
    port: int  # the development server's default port, as the request block names it
    serve_options: tuple[str, ...]  # appended to the serve command ({port}: a free port)


RECIPES: Final = (
    Recipe(
        "django",
        "## Add eventseam to a Django project",
        "db.sqlite3",
        "shop_order",
        8000,
        ("127.0.0.1:{port}",),
    ),
    Recipe(
        "flask",
        "## Add eventseam to a Flask app",
        "instance/shop.db",
        '"order"',
        5000,
        ("--port", "{port}"),
    ),
)


@dataclass(frozen=True, slots=True)
class Block:
    """One marked fenced block of a recipe."""

    action: str
    argument: str | None
    text: str


def section(readme: str, heading: str) -> list[str]:
    """The lines of the README section under ``heading`` (up to the next ``## `` heading)."""
    lines = readme.splitlines()
    assert heading in lines, f"README.md has no section {heading!r}"
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def recipe_blocks(recipe: Recipe) -> list[Block]:
    """The marked blocks of ``recipe``, in order; fails on a marker without a block after it."""
    lines = section(README.read_text(encoding="utf-8"), recipe.heading)
    found: list[tuple[re.Match[str] | None, str]] = []
    marker: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if match := MARKER.fullmatch(line.strip()):
            assert match["recipe"] == recipe.name, line
            assert match["action"] in ACTIONS, line
            marker = match
        elif line.startswith("```"):
            end = lines.index("```", index + 1)
            found.append((marker, "\n".join(lines[index + 1 : end]) + "\n"))
            marker, index = None, end
        else:
            assert not (line.strip() and marker), f"{marker} is not followed by a block"
        index += 1
    last = max(i for i, (match, _) in enumerate(found) if match is not None)
    assert all(match is not None for match, _ in found[:last]), "an unmarked block in the recipe"
    return [Block(m["action"], m["argument"], text) for m, text in found if m is not None]


def recipe_env(site: Path) -> dict[str, str]:
    """A clean environment: the venv first on PATH, eventseam's packages alone on PYTHONPATH."""
    skipped = ("EVENTSEAM_", "DJANGO_", "FLASK_", "PYTHON")
    env = {key: value for key, value in os.environ.items() if not key.startswith(skipped)}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(site),
        PYTHONUNBUFFERED="1",  # handler output shows as it is printed, as in a terminal
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@dataclass
class Background:
    """A command running in the background, its output in a file."""

    command: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything it printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Wait until its output matches ``pattern``; fail when it exits first or never does."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.output()):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no {pattern!r} in the output of {self.command!r}:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM to its process group (as Ctrl-C reaches a terminal's); its exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(WAIT_SECONDS)
                pytest.fail(f"{self.command!r} ignored SIGTERM:\n{self.output()}")
        return self.process.returncode


@dataclass
class Terminal:
    """A newcomer's terminal: blocks run one after the other, ``cd`` carrying over."""

    root: Path
    env: dict[str, str]
    cwd: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cwd = self.root

    def run(self, script: str) -> str:
        """Run ``script`` with ``bash -e``; its standard output (it must exit 0)."""
        where = self.root / ".cwd"
        result = subprocess.run(
            ["bash", "-e", "-c", f"{script}\npwd > {shlex.quote(str(where))}"],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS * 2,
            check=False,
        )
        assert result.returncode == 0, f"$ {script}\n{result.stdout}{result.stderr}"
        self.cwd = Path(where.read_text().strip())
        return result.stdout

    @contextmanager
    def background(self, command: str, *options: str) -> Iterator[Background]:
        """Run one command line (``NAME=value`` prefixes allowed) until the block ends."""
        env, words = dict(self.env), shlex.split(command, comments=True)
        while words and ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        log = self.root / f"{words[0]}-{time.monotonic_ns()}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*words, *options],
                cwd=self.cwd,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = Background(" ".join([*words, *options]), process, log)
        try:
            yield running
        finally:
            running.stop()


def wait_for_port(server: Background, port: int) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail(f"the development server never listened on {port}:\n{server.output()}")


@dataclass
class Replay:
    """Replays a recipe's blocks and checks what each one should have done."""

    recipe: Recipe
    terminal: Terminal
    orders: int = 0  # orders placed so far (their ids are 1..orders)
    relayed: int = 0  # orders already forwarded to Kafka
    try_block: str = ""
    server: tuple[Background, int] | None = None
    done: list[str] = field(default_factory=list)
    #: What outlives its block (the development server until the request block), closed last.
    stack: ExitStack = field(default_factory=ExitStack)

    def block(self, block: Block) -> None:
        """Replay ``block``."""
        getattr(self, "step_" + block.action.replace("-", "_"))(block)
        self.done.append(block.action)

    # -- the database -------------------------------------------------------------------------

    def query(self, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the recipe's SQLite database."""
        path = self.terminal.cwd / self.recipe.database
        assert path.is_file(), f"no database {path}"
        with closing(sqlite3.connect(path, timeout=30)) as connection:
            return connection.execute(sql, parameters).fetchall()

    def wait_until_relayed(self) -> None:
        """Wait until the outbox holds no pending row (the relay deletes the rows it sent)."""
        deadline = time.monotonic() + WAIT_SECONDS
        sql = "SELECT count(*) FROM eventseam_outbox WHERE status = 'pending'"
        while self.query(sql) != [(0,)]:
            assert time.monotonic() < deadline, "the relay did not send the pending rows"
            time.sleep(0.05)

    # -- the steps ----------------------------------------------------------------------------

    def step_install(self, block: Block) -> None:
        """Not run: the packages are importable already; the block names the right extras."""
        assert f"pip install 'eventseam[{self.recipe.name},kafka]'" in block.text

    def step_run(self, block: Block) -> None:
        """Shell commands."""
        self.terminal.run(block.text)

    def target(self, block: Block) -> Path:
        """The file a block writes: its marker's path, which its first line shows the reader."""
        assert block.argument is not None, "write= and append= name a file"
        first = block.text.splitlines()[0]
        assert first.startswith("# "), f"{first!r}: the block should open with its file's path"
        assert block.argument in first, f"{first!r} names another file than {block.argument!r}"
        return self.terminal.cwd / block.argument

    def step_write(self, block: Block) -> None:
        """The whole file, in an existing directory (a newcomer's editor makes none)."""
        path = self.target(block)
        assert path.parent.is_dir(), f"{block.argument}: no such directory yet"
        path.write_text(block.text, encoding="utf-8")

    def step_append(self, block: Block) -> None:
        """Lines added at the end of an existing file."""
        path = self.target(block)
        assert path.is_file(), f"{block.argument}: no such file yet"
        path.write_text(path.read_text(encoding="utf-8") + "\n" + block.text, encoding="utf-8")

    def step_try(self, block: Block) -> None:
        """An order placed: the handler ran, the order and its pending outbox row committed."""
        self.try_block = block.text
        self.place_order(block.text)

    def place_order(self, script: str) -> None:
        """Run the ``try`` block: one more order of alice's, for 4200 cents."""
        output = self.terminal.run(script)
        self.orders += 1
        number = self.orders
        assert f"receipt: order {number}, 4200 cents" in output, output
        assert f"{{'order_id': {number}}}" in output, output
        table = self.recipe.orders_table
        rows = self.query(f"SELECT customer, total_cents FROM {table} WHERE id = ?", number)
        assert rows == [("alice", 4200)]
        columns = "aggregatetype, type, status"
        rows = self.query(f"SELECT {columns} FROM eventseam_outbox WHERE aggregateid = ?", number)
        assert rows == [("shop", "shop.OrderPlaced", "pending")]

    def step_serve(self, block: Block) -> None:
        """The development server, on a free port, kept running for the request block."""
        assert len(block.text.strip().splitlines()) == 1, "serve is one command line"
        port = free_port()
        options = [option.format(port=port) for option in self.recipe.serve_options]
        server = self.stack.enter_context(self.terminal.background(block.text, *options))
        wait_for_port(server, port)
        self.server = (server, port)

    def step_request(self, block: Block) -> None:
        """curl places an order; the server's handler prints its receipt; the server stops."""
        assert self.server is not None, "request before serve"
        server, port = self.server
        default = f"localhost:{self.recipe.port}/"
        assert default in block.text
        output = self.terminal.run(block.text.replace(default, f"localhost:{port}/"))
        self.orders += 1
        assert json.loads(output) == {"order_id": self.orders}
        server.wait_for(rf"receipt: order {self.orders}, 999 cents")
        server.stop()
        self.server = None

    def step_relay(self, block: Block) -> None:
        """The relay starts the bundled broker and forwards every pending order to the topic."""
        with self.terminal.background(block.text) as relay:
            bootstrap = relay.wait_for(r"bootstrap_servers=(\S+)")[1]
            self.check_forwarded(relay, bootstrap)
        # The bundled broker refuses idempotent producers: the relay does not ask (no noise).
        assert "idempotence" not in relay.output(), relay.output()

    def step_relay_production(self, block: Block) -> None:
        """The relay on named brokers (a bundled broker's address) forwards a new order."""
        self.place_order(self.try_block)
        assert PRODUCTION_BROKERS in block.text
        broker = start_broker()
        try:
            command = block.text.replace(PRODUCTION_BROKERS, broker.bootstrap_servers)
            with self.terminal.background(command) as relay:
                self.check_forwarded(relay, broker.bootstrap_servers)
        finally:
            broker.stop()

    def check_forwarded(self, relay: Background, bootstrap: str) -> None:
        """The orders not relayed yet are on the topic; the relay exits 0 on SIGTERM."""
        self.wait_until_relayed()
        expected = range(self.relayed + 1, self.orders + 1)
        read = functools.partial(read_topic, expected=len(expected))
        records = anyio.run(read, bootstrap, TOPIC)
        assert sorted(record.key or b"" for record in records) == [
            str(n).encode() for n in expected
        ]
        assert {record.header("ce_type") for record in records} == {b"shop.OrderPlaced"}
        assert {json.loads(record.value)["order_id"] for record in records} == set(expected)
        assert relay.stop() == 0, relay.output()
        output = relay.output()
        assert "relay.stopped" in output, output
        assert "Traceback" not in output, output
        self.relayed = self.orders


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A PYTHONPATH directory holding what eventseam's wheel installs: engine and outbox."""
    path = tmp_path / "site-packages"
    path.mkdir()
    for package in ("engine", "outbox"):
        (path / package).symlink_to(REPO_ROOT / package, target_is_directory=True)
    return path


@pytest.mark.broker
@pytest.mark.parametrize("recipe", RECIPES, ids=[recipe.name for recipe in RECIPES])
def test_recipe_works_verbatim(recipe: Recipe, site: Path, tmp_path: Path) -> None:
    """Every block of the recipe, replayed in order, builds a project whose order reaches Kafka."""
    work = tmp_path / "work"
    work.mkdir()
    replay = Replay(recipe, Terminal(work, recipe_env(site)))
    with replay.stack:
        for block in recipe_blocks(recipe):
            replay.block(block)
    for action in ("install", "try", "serve", "request", "relay", "relay-production"):
        assert replay.done.count(action) == 1, f"the recipe has no single {action!r} block"
