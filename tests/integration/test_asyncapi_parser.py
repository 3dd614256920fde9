"""Generated AsyncAPI documents pass the official AsyncAPI parser (``@asyncapi/parser``, node).

The parser lives in ``tools/`` (package.json + package-lock.json). The first test run installs it
with ``npm ci --ignore-scripts`` into ``tools/node_modules`` (gitignored) and later runs reuse it
until package-lock.json changes. node and npm are required: missing, these tests fail in CI and
skip loudly elsewhere (tests.conftest.require_service).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from app.bootstrap import CONTEXTS
from engine.contexts import BoundedContext, ContextMap
from engine.contracts import DocumentInfo, render_contracts, write_contracts
from engine.events import DomainEvent
from engine.settings import RelaySettings
from outbox.topics import TopicNamer
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
COMMITTED = ROOT / "docs" / "contracts" / "asyncapi.json"
NPM_TIMEOUT_SECONDS = 600
VALIDATE_TIMEOUT_SECONDS = 120


class Item(BaseModel):
    """A nested model."""

    sku: str
    quantity: int
    tags: list[str] = []


class CrateLoaded(DomainEvent, name="yard.CrateLoaded", version=3):
    """Nested models, decimals, UUIDs, optional and tuple fields."""

    crate_id: uuid.UUID
    items: list[Item]
    value: Decimal
    seal: str | None = None
    position: tuple[int, int] = (0, 0)


class CrateChecked(DomainEvent, name="yard.CrateChecked", version=1):
    """A second event on another topic."""

    crate_id: uuid.UUID


yard = BoundedContext("yard", owns=[CrateLoaded])
gate = BoundedContext("gate", owns=[CrateChecked])


@gate.handler(CrateLoaded, CrateChecked, name="check_crate_on_crate_loaded")
def check_crate_on_crate_loaded(event: DomainEvent) -> None:
    """Reads two topics."""


@pytest.fixture(scope="session")
def validator() -> list[str]:
    """The command validating AsyncAPI files: ``node tools/asyncapi-validate.mjs --strict``."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require_service("node/npm", "the AsyncAPI parser runs on node (tools/package.json)")
    assert node is not None
    assert npm is not None
    installed = TOOLS / "node_modules" / ".package-lock.json"
    lock = TOOLS / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=TOOLS,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_SECONDS,
            env={**os.environ, "SCARF_ANALYTICS": "false"},
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return [node, str(TOOLS / "asyncapi-validate.mjs"), "--strict"]


def validate(validator: list[str], *files: Path) -> subprocess.CompletedProcess[str]:
    """Run the validator on ``files``."""
    return subprocess.run(
        [*validator, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=VALIDATE_TIMEOUT_SECONDS,
        check=False,
    )


def dump(directory: Path, contexts: ContextMap, relay: RelaySettings | None = None) -> Path:
    """Write the contracts of ``contexts`` to ``directory``; the AsyncAPI file's path."""
    files = render_contracts(
        contexts,
        topic_of=TopicNamer(relay or RelaySettings()),
        group_of=lambda name: f"eventseam.{name}",
        info=DocumentInfo(title="test"),
    )
    write_contracts(directory, files)
    return directory / "asyncapi.json"


def test_example_monolith_document_is_valid(validator: list[str], tmp_path: Path) -> None:
    """The example monolith's generated document parses without errors or warnings."""
    done = validate(validator, dump(tmp_path, ContextMap(CONTEXTS)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid (" in done.stdout


def test_committed_document_is_valid(validator: list[str]) -> None:
    """docs/contracts/asyncapi.json parses without errors or warnings."""
    done = validate(validator, COMMITTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_nested_models_and_topics_per_event_type_are_valid(
    validator: list[str], tmp_path: Path
) -> None:
    """Component schemas of nested models, several channels per context, multi-topic handlers."""
    relay = RelaySettings(topic_template="{prefix}{context}.{event_type}")
    path = dump(tmp_path, ContextMap([yard, gate]), relay)
    document = json.loads(path.read_text())
    assert "yard.CrateLoaded.v3.Item" in document["components"]["schemas"]
    done = validate(validator, path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_validator_rejects_a_broken_document(validator: list[str], tmp_path: Path) -> None:
    """A dangling channel reference makes the validator exit 1 and say where."""
    document = json.loads(COMMITTED.read_text())
    document["operations"]["orders.send"]["channel"]["$ref"] = "#/channels/nowhere"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    done = validate(validator, broken)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "operations.orders.send.channel" in done.stdout
    assert "INVALID" in done.stdout
