"""``batch``'s closing advice: rerunning is suggested only where it can help."""

from __future__ import annotations

import socket
from pathlib import Path

from _support_cli import orpheus_trio

RERUN = "run the same command again to retry only the failed items"


async def test_items_refused_for_good_are_not_sent_back_to_a_rerun(tmp_path: Path) -> None:
    (tmp_path / "items.txt").write_text("One line.\nAnother line.\n", encoding="utf-8")
    done = await orpheus_trio(
        "batch", tmp_path / "items.txt", "-d", tmp_path / "out", "--no-progress", "--voice", "nobody-here"
    )
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "400 invalid_param" in err
    assert "the service refused 2 item(s) as they are" in err
    assert RERUN not in err


async def test_failures_that_may_pass_next_time_suggest_a_rerun(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    (tmp_path / "items.txt").write_text("One line.\n", encoding="utf-8")
    done = await orpheus_trio("batch", tmp_path / "items.txt", "-d", tmp_path / "out", "--no-progress", "--url", url)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert RERUN in err
    assert "refused" not in err
