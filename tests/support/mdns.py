"""Helpers for mDNS tests: a third-party browser process speaking JSON lines."""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

# A browser no one here wrote: python-zeroconf's own threaded ServiceBrowser,
# in another process, pinned to loopback.
THIRD_PARTY_BROWSER = textwrap.dedent(
    """
    import json, sys
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    def say(**event):
        print(json.dumps(event), flush=True)

    def on_change(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            say(event="removed", name=name)
            return
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is not None:
            say(event=state_change.name.lower(), name=name, addresses=info.parsed_addresses(),
                port=info.port, server=info.server,
                props={k.decode(): (v or b"").decode() for k, v in info.properties.items()})

    zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
    browsers = [ServiceBrowser(zc, t, handlers=[on_change]) for t in sys.argv[2:]]
    say(event="browsing")
    sys.stdin.read()  # run until the test closes our stdin
    for b in browsers:
        b.cancel()
    zc.close()
    """
)


class BrowserProcess:
    """A line-oriented browser subprocess: ``await expect(...)`` reads until a match."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, *argv: str) -> BrowserProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def expect(self, timeout: float = 8.0, **fields: object) -> dict[str, Any]:
        """An event (seen already or next to come) whose fields equal ``fields``."""
        for event in self.events:  # events may arrive in any order
            if all(event.get(k) == v for k, v in fields.items()):
                return event
        try:
            return await asyncio.wait_for(self._next_matching(fields), timeout)
        except TimeoutError:
            raise AssertionError(f"browser never said {fields}; it said: {self.events}") from None

    async def _next_matching(self, fields: dict[str, object]) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                raise AssertionError(f"browser exited; it said: {self.events}")
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                event = {"event": "output", "text": raw.decode(errors="replace")}
            self.events.append(event)
            if all(event.get(k) == v for k, v in fields.items()):
                return event

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
