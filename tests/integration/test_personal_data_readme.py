"""The README's personal-data worked example, replayed command by command in a shell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HEADING: Final = "### Personal data and erasure"
#: A sealed value in the transcript (random nonce and ciphertext each run).
SEALED: Final = re.compile(r"pd1\.1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,}")


def console_block() -> list[str]:
    """The lines of the first ```console block under the personal-data heading."""
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("```console", lines.index(HEADING)) + 1
    return lines[start : lines.index("```", start)]


def test_readme_erasure_session_replays(tmp_path: Path) -> None:
    """Every command of the README session prints what the README shows (ciphertexts aside)."""
    block = console_block()
    script = ["set -e"]
    for line in block:
        if line.startswith("$ "):
            command = line[2:]
            script.append(f"echo {_quote(line)}")
            script.append(command)
    shutil.copy(REPO_ROOT / "docs" / "examples" / "crm.py", tmp_path / "crm.py")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EVENTSEAM_")  # the session sets its own
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    transcript = done.stdout.splitlines()
    assert len(transcript) == len(block), done.stdout
    for expected, got in zip(block, transcript, strict=True):
        assert SEALED.sub("<sealed>", got) == SEALED.sub("<sealed>", expected)
    assert sum("<sealed>" in SEALED.sub("<sealed>", line) for line in transcript) == 2
    assert "@example.com" not in (tmp_path / "crm.db").read_bytes().decode("latin-1")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
