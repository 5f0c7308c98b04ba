"""Helpers for mDNS tests: a third-party browser process speaking JSON lines."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Callable
from typing import Any

# A browser no one here wrote: python-zeroconf's own threaded ServiceBrowser,
# in another process, pinned to loopback.
THIRD_PARTY_BROWSER = textwrap.dedent(
    """
    import json, sys
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    def say(**event):
        # One write per event: zeroconf calls back from several threads, and
        # print() writes the text and the newline separately.
        sys.stdout.write(json.dumps(event) + "\\n")
        sys.stdout.flush()

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


# How long a peer may take to say something. Generous: a peer is a fresh Python
# (zeroconf, aiohttp, pydantic to import) and mDNS probing, and on a loaded
# machine its start alone took more than 8 s. A peer that never says it still
# fails the test, only later.
PEER_TIMEOUT_S = 30.0


class PeerProcess:
    """A peer subprocess speaking JSON lines: ``await expect(event=...)`` waits for one."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls, *argv: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> PeerProcess:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def expect(
        self,
        timeout: float = PEER_TIMEOUT_S,
        where: Callable[[dict[str, Any]], bool] | None = None,
        **fields: object,
    ) -> dict[str, Any]:
        """An event (seen already or next to come) whose fields equal ``fields``
        and for which ``where`` (if given) is true."""

        def matches(event: dict[str, Any]) -> bool:
            if not all(event.get(k) == v for k, v in fields.items()):
                return False
            return where is None or where(event)

        for event in self.events:  # events may arrive in any order
            if matches(event):
                return event
        try:
            return await asyncio.wait_for(self._next_matching(matches), timeout)
        except TimeoutError:
            raise AssertionError(f"peer never said {fields}; it said: {self.events}") from None

    async def _next_matching(self, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                raise AssertionError(f"peer exited; it said: {self.events}")
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                event = {"event": "output", "text": raw.decode(errors="replace")}
            self.events.append(event)
            if matches(event):
                return event

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                # an advertiser says goodbye on the way out: give it time to
                await asyncio.wait_for(self.proc.wait(), PEER_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# A gateway advertising in its own process (e.g. inside a network namespace):
# an aiohttp app with discovery_ctx, announced once the site listens, the way
# `outpost-gateway run` does it. argv[1] is a JSON GatewayConfig; it prints
# JSON lines and withdraws (goodbye) when its stdin closes.
ADVERTISER = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiohttp import web
    from gateway.config import GatewayConfig
    from gateway.mdns_advertiser import DISCOVERY_KEY, async_announce, discovery_ctx

    def say(**event):
        print(json.dumps(event), flush=True)

    async def index(request):
        return web.Response(text="outpost web app")

    async def main():
        config = GatewayConfig.model_validate(json.loads(sys.argv[1]))
        app = web.Application()
        app.router.add_get("/", index)
        app.cleanup_ctx.append(discovery_ctx(config))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, config.lan.host, config.lan.port)
        await site.start()
        port = runner.addresses[0][1]
        await async_announce(app, port)
        advertiser = app[DISCOVERY_KEY]
        await advertiser.async_wait_announced(30)
        say(event="announced", port=port, names=list(advertiser.service_names),
            addresses=list(advertiser.addresses))

        async def watch():  # each re-announcement done, with what it announced
            seen = advertiser.addresses
            while True:
                await asyncio.sleep(0.05)
                if advertiser.addresses != seen:
                    seen = advertiser.addresses
                    say(event="addresses", addresses=list(seen))

        watching = asyncio.create_task(watch())
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        watching.cancel()
        await runner.cleanup()
        say(event="stopped")

    asyncio.run(main())
    """
)
