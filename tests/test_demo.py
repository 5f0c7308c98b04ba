"""``make demo`` keeps working for a newcomer, and whatever ends it leaves nothing running.

One full run plays the crew's day, prints only links that open in a browser
(each is fetched, unauthenticated, as a browser would) with working
sign-ins, leaves one activity dispatched and unstarted, and is then ended
the way ``make demo | tee demo.log`` + Ctrl-C ends it: the pipe closes and
SIGINT reaches the whole process group. Shorter runs are ended by Ctrl-C in
the middle of the story, SIGTERM, a closed terminal (SIGHUP to the group) and
SIGKILL once everything is up. After each, no process of the demo is left.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from demo.__main__ import ADMIN, CREW, FOR_THE_NEWCOMER, SITE_LEAD

ROOT = Path(__file__).resolve().parent.parent
LAST_LINE = "Press Ctrl-C to stop."


class Demo:
    """``python -m demo`` in its own process group (as a terminal's foreground job)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "demo"
        env = {**os.environ, "OUTPOST_DEMO_DIR": str(self.dir)}
        env.pop("OUTPOST_DEMO_EXIT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
            if LAST_LINE in line:
                return  # leave the pipe alone, so that closing it really closes it
        self.lines.put(None)

    def wait_for(self, needle: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"the demo ended before {needle!r}:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if needle in line:
                return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in time:\n" + "\n".join(self.seen))

    def close_pipe(self) -> None:
        """What tee's death does to the demo: its stdout now leads nowhere."""
        assert self.proc.stdout is not None
        self._reader.join(10)  # it stopped after the last line: nobody reads any more
        assert not self._reader.is_alive()
        self.proc.stdout.close()

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def ended(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def left_running(self) -> list[str]:
        ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
        return [line for line in ps.splitlines() if str(self.dir) in line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    d = Demo(tmp_path)
    yield d
    d.kill()
    for line in d.left_running():  # never leave one behind, even when a test failed
        os.kill(int(line.split()[0]), signal.SIGKILL)


def nothing_left(d: Demo, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while d.left_running():
        assert time.monotonic() < deadline, f"left running: {d.left_running()}"
        time.sleep(0.1)


def fetch(url: str, body: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method="POST" if body else "GET")
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def test_the_demo_plays_the_day_prints_working_links_and_stops_on_a_closed_pipe(
    demo: Demo,
) -> None:
    demo.wait_for("defining the 'inspection' form")
    demo.wait_for("everything applied exactly once: envelopes applied 6")
    demo.wait_for("3 activities checked back in and online again")
    demo.wait_for(f"'{FOR_THE_NEWCOMER}' dispatched to site-a, not started")
    ready = demo.wait_for("Outpost is running (ready in")
    assert re.search(r"ready in \d+\.\d s", ready)
    demo.wait_for(LAST_LINE)
    out = "\n".join(demo.seen)
    assert "FAILED" not in out
    # Counts always say what they count.
    assert not re.search(r"(:|—) (applied|stored|queued|sent|rejected) \d", out), out

    # Every link printed for a browser opens without a token, as a browser would.
    links = out[out.index("Open in a browser:") : out.index("For scripts")]
    urls = re.findall(r"http://127\.0\.0\.1:\d+/\S*", links)
    assert len(urls) >= 3, links
    for url in urls:
        status, kind, _ = fetch(url)
        assert status == 200, (url, status)
        assert not kind.startswith("application/json"), (url, kind)
    assert "/api/v1/status" not in links  # a bearer-token API is not a browser link
    # The sign-in printed with the web app works, and the activity left for the newcomer is there.
    app = re.search(r"crews' web app\s+(http://\S+/)", links).group(1)  # type: ignore[union-attr]
    assert f"ana / {CREW['ana']}" in links
    status, _, raw = fetch(app + "api/v1/session", {"username": "ana", "password": CREW["ana"]})
    assert status == 200
    token = json.loads(raw)["token"]
    req = urllib.request.Request(app + "api/v1/activities")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        listed = json.loads(r.read())["activities"]
    assert [(a["title"], a["status"]) for a in listed] == [(FOR_THE_NEWCOMER, "not_started")]
    # The site lead's sign-in opens the Site screen's data; the platform's sign-in works.
    assert f"{SITE_LEAD} / {CREW[SITE_LEAD]}, then open Site" in links
    status, _, raw = fetch(
        app + "api/v1/session", {"username": SITE_LEAD, "password": CREW[SITE_LEAD]}
    )
    assert json.loads(raw)["user"]["site_lead"] is True
    req = urllib.request.Request(app + "api/v1/site")
    req.add_header("Authorization", f"Bearer {json.loads(raw)['token']}")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["envelopes"]["applied"] == 6
    platform = re.search(r"central platform\s+(http://\S+/)", links).group(1)  # type: ignore[union-attr]
    assert f"{ADMIN[0]} / {ADMIN[1]}" in links
    status, _, raw = fetch(
        platform + "api/v1/session", {"username": ADMIN[0], "password": ADMIN[1]}
    )
    assert status in (200, 201) and json.loads(raw)["role"] == "admin"

    # `make demo | tee demo.log`, then Ctrl-C: tee goes, then SIGINT reaches the group.
    demo.close_pipe()
    demo.signal_group(signal.SIGINT)
    assert demo.ended() == 0
    nothing_left(demo)
    log = (demo.dir / "demo.log").read_text()
    assert "stopping gateway, bridge and broker" in log
    assert "the terminal is gone" in log  # it did write into the closed pipe, and went on
    assert log.rstrip().endswith("everything stopped")


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("SIGINT", id="ctrl-c-mid-story"),
        pytest.param("SIGTERM", id="kill"),
        pytest.param("SIGHUP", id="terminal-closed"),
        pytest.param("SIGKILL", id="kill-9"),
    ],
)
def test_whatever_ends_the_demo_no_process_is_left(demo: Demo, how: str) -> None:
    demo.wait_for("are up")  # broker, bridge and gateway all running
    assert len(demo.left_running()) >= 3
    if how == "SIGINT":
        demo.wait_for("signed in on the gateway")  # in the middle of the story (asyncio)
        demo.signal_group(signal.SIGINT)
    elif how == "SIGTERM":
        os.kill(demo.proc.pid, signal.SIGTERM)  # `kill PID`: the demo alone
    elif how == "SIGHUP":
        demo.signal_group(signal.SIGHUP)  # a closed terminal: the foreground group
    else:
        os.kill(demo.proc.pid, signal.SIGKILL)  # no cleanup possible: its children go by themselves
    demo.ended()
    nothing_left(demo)
    if how != "SIGKILL":
        log = (demo.dir / "demo.log").read_text()
        assert f"{how} received" in log
        assert log.rstrip().endswith("everything stopped")
