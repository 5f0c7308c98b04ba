"""``make demo``: a broker, the central bridge, a gateway and a crew's day.

Everything runs on this machine on free ports, with its files under
``var/demo/`` (removed and recreated on each run):

1. start Mosquitto, the bridge (SQLite) and a gateway as real processes;
2. as the central admin: an activity type, two crew members allowed to
   work offline, three activities approved and dispatched to the gateway;
3. as a crew member on the gateway's LAN API: sign in, drafts, completion;
4. the backhaul is cut (the broker stops), the crew keeps working: nothing
   is lost, envelopes wait on the gateway's disk;
5. the backhaul returns and everything is applied centrally, once;
6. one more activity is dispatched and left unstarted, for whoever runs the
   demo to open in the crews' web app;

then it prints the links to open in a browser (each with what to sign in
with) and runs until it is told to stop. Whatever ends it — Ctrl-C, SIGTERM,
a closed terminal (SIGHUP), a closed output pipe (``make demo | tee log``
then Ctrl-C) — it stops the gateway, the bridge and the broker before it
exits; its children also die with it if it is killed outright (SIGKILL).
Everything it says also goes to ``var/demo/demo.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp

from tests.support.broker import Broker, free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("OUTPOST_DEMO_DIR") or ROOT / "var" / "demo")
ADMIN_TOKEN = "demo-admin-token-" + uuid.uuid4().hex[:12]
GATEWAY_ID = "site-a"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "risk", "type": "choice", "options": ["low", "medium", "high"]},
        {"name": "photo", "type": "attachment"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}
CREW = {"ana": "correct horse battery", "ben": "staple gun lantern"}
SITE_LEAD = "ben"  # central makes ben site lead of site-a: he sees the Site screen
ADMIN = ("admin", "demo admin password")  # a person (role admin) for the platform's pages
FOR_THE_NEWCOMER = "Substation gate check"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Output:
    """What the demo says: to the terminal while it is there, and always to demo.log.

    A closed pipe (``| tee`` ended by the same Ctrl-C) or a closed terminal
    must not stop the cleanup: the terminal is dropped, the log goes on.
    """

    def __init__(self) -> None:
        self.log: IO[str] | None = None
        self.terminal = True

    def open_log(self, path: Path) -> None:
        self.log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - the demo's lifetime

    def line(self, text: str = "") -> None:
        if self.log is not None:
            self.log.write(text + "\n")
        if not self.terminal:
            return
        try:
            print(text, flush=True)
        except (BrokenPipeError, OSError):  # EPIPE, or EIO from a closed terminal
            self.drop_terminal()

    def drop_terminal(self) -> None:
        """Point stdout at /dev/null, so nothing (not even Python's exit flush) writes there."""
        self.terminal = False
        if self.log is not None:
            self.log.write("(the terminal is gone: what follows is written here only)\n")
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


out = Output()


def say(step: str, text: str = "") -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    out.line(f"[{stamp}] {step}{(' — ' + text) if text else ''}")


class DemoError(Exception):
    pass


class Stopped(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM, SIGHUP): unwind, then clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C (or a HUP after the terminal closed) waits its turn."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_us() -> list[str]:
    """A prefix that makes a child get SIGTERM if the demo dies (even by SIGKILL): Linux's
    parent-death signal, set by util-linux ``setpriv`` just before it execs the command."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class Api:
    """A small JSON client that turns error bodies into readable failures."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None):
        self.session = session
        self.base = base
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.content_length != 0 else None
            if r.status not in ok:
                raise DemoError(f"{method} {path} answered {r.status}: {data}")
            return data


def write_configs(broker: Broker, lan_port: int, admin_port: int) -> tuple[Path, Path]:
    bridge = VAR / "bridge.toml"
    bridge.write_text(
        f"""[central]
database_url = "sqlite:///{VAR / "central" / "central.db"}"
data_dir = "{VAR / "central"}"
[admin]
host = "127.0.0.1"
port = {admin_port}
token = "{ADMIN_TOKEN}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive = 10
"""
    )
    gateway = VAR / "gateway.toml"
    gateway.write_text(
        f"""[gateway]
id = "{GATEWAY_ID}"
site = "Demo substation"
data_dir = "{VAR / "gateway"}"
[lan]
host = "127.0.0.1"
port = {lan_port}
disk_free_floor_mb = 50
[mqtt]
host = "127.0.0.1"
port = {broker.port}
keepalive = 10
heartbeat_s = 10
[discovery]
enabled = true
interfaces = ["127.0.0.1"]
"""
    )
    return bridge, gateway


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
        # Its own session: a Ctrl-C in the terminal reaches the demo only, which
        # then stops its children in order (the gateway's last words reach central).
        return subprocess.Popen(
            die_with_us() + cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def envelope(
    activity: dict[str, Any],
    seq: int,
    status: str,
    record: dict[str, Any],
    readings: list[dict[str, Any]],
    attachments: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": activity["id"],
        "seq": seq,
        "base_version": activity["version"],
        "status": status,
        "created_at": datetime.now(UTC).isoformat(),
        "record": record,
        "tables": {"readings": readings},
        "attachments": attachments or [],
    }


async def counts(gw: Api) -> dict[str, int]:
    status = await gw.call("GET", "/api/v1/status")
    return dict(status["envelopes"])


def fmt(c: dict[str, int]) -> str:
    """'envelopes applied 3, stored 2': every count says what it counts."""
    shown = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if v)
    return f"envelopes {shown}" if shown else "no envelopes"


async def dispatch(central: Api, title: str) -> dict[str, Any]:
    act = await central.call(
        "POST", "/api/v1/activities", {"title": title, "type": "inspection", "responsible": "ana"}
    )
    await central.call("POST", f"/api/v1/activities/{act['id']}/approve", {"approver": "ana"})
    await central.call(
        "POST", f"/api/v1/activities/{act['id']}/dispatch", {"gateway_id": GATEWAY_ID}
    )
    return dict(act)


async def story(broker: Broker, lan: int, admin: int) -> None:
    async with aiohttp.ClientSession() as http:
        central = Api(http, f"http://127.0.0.1:{admin}", ADMIN_TOKEN)
        gw = Api(http, f"http://127.0.0.1:{lan}")

        say("central", "defining the 'inspection' form, the crew and an admin")
        await central.call(
            "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
        )
        for user, password in CREW.items():
            await central.call(
                "PUT",
                f"/api/v1/users/{user}",
                {
                    "password": password,
                    "offline": True,
                    "sites": [GATEWAY_ID],
                    "site_lead": [GATEWAY_ID] if user == SITE_LEAD else [],
                },
            )
        await central.call(
            "PUT", f"/api/v1/users/{ADMIN[0]}", {"password": ADMIN[1], "role": "admin"}
        )

        async def gateway_knows_users() -> bool:
            r = await http.post(
                f"http://127.0.0.1:{lan}/api/v1/session",
                json={"username": "ana", "password": CREW["ana"]},
            )
            ok = r.status == 201 or r.status == 200
            if ok:
                gw.token = (await r.json())["token"]
            r.release()
            return ok

        await wait_until("the gateway to receive the crew's credentials", gateway_knows_users)
        say("crew", "ana signed in on the gateway (offline credentials pushed from central)")

        titles = ("North fence inspection", "Transformer T2 readings", "Battery room check")
        acts = [await dispatch(central, title) for title in titles]
        say("central", f"{len(acts)} activities approved by ana and dispatched to {GATEWAY_ID}")

        async def offline(n: int) -> list[dict[str, Any]] | None:
            items = (await gw.call("GET", "/api/v1/activities"))["activities"]
            return items if len(items) >= n else None

        listed = await wait_until("the dispatches to reach the gateway", lambda: offline(len(acts)))
        say("gateway", f"ana sees {len(listed)} offline activities")
        by_id = {a["id"]: a for a in listed}

        a1, a2, a3 = (by_id[a["id"]] for a in acts)
        await gw.call("POST", "/api/v1/envelopes", envelope(a1, 1, "draft", {"site_ok": True}, []))
        await gw.call(
            "POST",
            "/api/v1/envelopes",
            envelope(
                a1,
                2,
                "draft",
                {"site_ok": True, "notes": "fence cut on north side"},
                [{"meter": "F1", "value": 1.0}],
            ),
        )
        say(
            "crew",
            f"two drafts saved on '{a1['title']}'; drafts stay on the gateway: "
            f"{fmt(await counts(gw))}",
        )
        await gw.call(
            "POST",
            "/api/v1/envelopes",
            envelope(
                a1,
                3,
                "completed",
                {"site_ok": False, "notes": "fence cut on north side", "risk": "high"},
                [{"meter": "F1", "value": 1.0}, {"meter": "F2", "value": 0.0}],
            ),
        )
        say("crew", f"'{a1['title']}' completed: it goes up with its drafts, in order")

        async def applied(n: int) -> bool:
            return (await counts(gw)).get("applied", 0) >= n

        await wait_until("the first activity to be applied centrally", lambda: applied(3))
        say("central", f"applied; the gateway now shows {fmt(await counts(gw))}")

        say("backhaul", "CUT — the satellite link drops (the broker stops)")
        broker.stop()
        await wait_until("the gateway to notice", lambda: link_is(gw, "down"), 30)
        photo = os.urandom(600 * 1024)  # stands in for a phone camera's JPEG
        sha = hashlib.sha256(photo).hexdigest()
        async with http.put(
            f"http://127.0.0.1:{lan}/api/v1/attachments/{sha}",
            data=photo,
            headers={"Authorization": f"Bearer {gw.token}"},
        ) as r:
            if r.status not in (200, 201):
                raise DemoError(f"photo upload answered {r.status}: {await r.text()}")
        say("crew", f"a {len(photo) // 1024} KiB photo of T2's nameplate uploaded to the gateway")
        for seq, status in ((1, "draft"), (2, "completed")):
            await gw.call(
                "POST",
                "/api/v1/envelopes",
                envelope(
                    a2,
                    seq,
                    status,
                    {"site_ok": True, "risk": "low", "photo": sha},
                    [{"meter": f"T2-{i}", "value": 230.0 + i} for i in range(5)],
                    [sha],
                ),
            )
        await gw.call(
            "POST", "/api/v1/envelopes", envelope(a3, 1, "completed", {"site_ok": True}, [])
        )
        say("crew", f"kept working while dark; safe on the gateway's disk: {fmt(await counts(gw))}")

        say("backhaul", "BACK — the link returns (the broker starts)")
        broker.start()
        await wait_until("the backlog to drain", lambda: applied(6), 60)
        say("central", f"everything applied exactly once: {fmt(await counts(gw))}")
        online = await central.call("GET", "/api/v1/activities?state=online")
        online = online["activities"] if isinstance(online, dict) else online
        say("central", f"{len(online)} activities checked back in and online again")
        record = await central.call("GET", f"/api/v1/activities/{a1['id']}/record")
        say("central", f"record of '{a1['title']}': {record.get('record', record)}")

        async def photo_at_central() -> bool:
            rec = await central.call("GET", f"/api/v1/activities/{a2['id']}/record")
            return rec.get("missing_attachments") == []

        await wait_until("the photo to reach central", photo_at_central, 60)
        async with http.get(
            f"http://127.0.0.1:{admin}/api/v1/attachments/{sha}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            held = await r.read()
        if hashlib.sha256(held).hexdigest() != sha:
            raise DemoError("the photo central holds does not match the one the crew took")
        say(
            "central",
            f"the photo arrived in resumable chunks and matches its SHA-256 "
            f"({len(held) // 1024} KiB at /api/v1/attachments/{sha[:12]}…)",
        )

        # Something left to do for whoever watches: open it in the web app.
        await dispatch(central, FOR_THE_NEWCOMER)
        await wait_until("the last dispatch to reach the gateway", lambda: offline(1))
        say("central", f"'{FOR_THE_NEWCOMER}' dispatched to {GATEWAY_ID}, not started: it is yours")


async def link_is(gw: Api, state: str) -> bool:
    status = await gw.call("GET", "/api/v1/status")
    backhaul = status.get("backhaul", {})
    return bool(backhaul.get("link") == state)


def print_links(lan: int, admin: int, ready_s: float) -> None:
    """Only what opens in a browser, each with what to sign in with."""
    app = f"http://127.0.0.1:{lan}/"
    platform = f"http://127.0.0.1:{admin}/"
    rows = [
        (
            "crews' web app",
            app,
            f"sign in as ana / {CREW['ana']}: '{FOR_THE_NEWCOMER}' waits for you",
        ),
        (
            "the site lead's screen",
            app,
            f"sign in as {SITE_LEAD} / {CREW[SITE_LEAD]}, then open Site",
        ),
        (
            "central platform",
            platform,
            f"sign in as {ADMIN[0]} / {ADMIN[1]} (or ana, to see her own records)",
        ),
        ("fleet page", f"{platform}fleet", f"the same sign-in ({ADMIN[0]})"),
        ("the gateway as a QR code", f"{app}qr.svg", "no sign-in"),
        ("gateway metrics", f"{app}metrics", "no sign-in (Prometheus text)"),
    ]
    out.line()
    out.line(f"Outpost is running (ready in {ready_s:.1f} s). Open in a browser:")
    for what, url, how in rows:
        out.line(f"  {what:<26}{url}")
        out.line(f"  {'':<26}{how}")
    out.line("For scripts (bearer tokens, not browser links):")
    out.line(
        f"  central admin API         curl -H 'Authorization: Bearer {ADMIN_TOKEN}' "
        f"http://127.0.0.1:{admin}/api/v1/gateways"
    )
    out.line(f"  logs and data             {VAR} (this output too: {VAR / 'demo.log'})")
    out.line("Press Ctrl-C to stop.")


def main() -> int:
    began = time.monotonic()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)
    if VAR.exists():
        shutil.rmtree(VAR)
    (VAR / "central").mkdir(parents=True)
    (VAR / "gateway").mkdir(parents=True)
    out.open_log(VAR / "demo.log")
    bin_dir = Path(sys.executable).parent
    broker = Broker(VAR / "broker", persistence=True, command_prefix=die_with_us())
    lan, admin = free_port(), free_port()
    bridge_cfg, gateway_cfg = write_configs(broker, lan, admin)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    exit_code = 0
    try:
        broker.start()
        say("broker", f"Mosquitto on 127.0.0.1:{broker.port}")
        for name, command in (
            ("bridge", [str(bin_dir / "outpost-bridge"), "run", "--config", str(bridge_cfg)]),
            ("gateway", [str(bin_dir / "outpost-gateway"), "run", "--config", str(gateway_cfg)]),
        ):
            procs.append((name, start(command, VAR / f"{name}.log")))
        for port, (name, proc) in zip((admin, lan), procs, strict=True):
            try:
                wait_port(port, timeout=30)
            except TimeoutError:
                raise DemoError(
                    f"the {name} did not start (exit {proc.poll()}); see {VAR}/{name}.log"
                ) from None
        say(
            "start",
            f"central bridge (admin API :{admin}) and gateway {GATEWAY_ID} (LAN API :{lan}) are up",
        )
        asyncio.run(story(broker, lan, admin))
        print_links(lan, admin, time.monotonic() - began)
        if os.environ.get("OUTPOST_DEMO_EXIT"):
            return 0
        while all(p.poll() is None for _, p in procs):
            time.sleep(0.5)
        for name, p in procs:
            if p.poll() is not None:
                say("stopped", f"the {name} exited with {p.returncode}; see {VAR}/{name}.log")
                exit_code = 1
    except DemoError as exc:
        say("FAILED", str(exc))
        exit_code = 1
    except Stopped as stopped:
        say("stop", f"{stopped} received")
    except KeyboardInterrupt:  # asyncio may turn our SIGINT into this
        say("stop", "SIGINT received")
    finally:
        with signals_ignored():
            say("stop", "stopping gateway, bridge and broker")
            for _, p in reversed(procs):
                stop(p)
            broker.stop()
            say("stop", "everything stopped")
            out.close()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
