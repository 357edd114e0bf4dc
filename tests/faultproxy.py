"""A TCP proxy that misbehaves on command, for putting a real database behind real faults.

It runs its own asyncio loop in a thread and forwards bytes both ways between each client and
the target, until told otherwise:

- ``refuse``: stop listening (connects are refused) and cut every open connection, as a
  database that went down does;
- ``hang``: accept connections but forward nothing, either way, on new or open connections,
  as a hung server or a network that swallows packets does;
- ``slow(seconds)``: forward every chunk that late;
- ``recover``: forward again (open connections cut while refusing stay cut).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    # --- control, from the test's thread ------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())
        self._call(self._set("pass"))

    def refuse(self) -> None:
        self._call(self._refuse())

    def hang(self) -> None:
        self._call(self._set("hang"))

    def slow(self, seconds: float) -> None:
        self.delay = seconds
        self._call(self._set("pass"))

    def recover(self) -> None:
        self.delay = 0.0
        self._call(self._recover())

    def stop(self) -> None:
        self._call(self._refuse())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    # --- inside the loop ------------------------------------------------------------------
    async def _set(self, mode: str) -> None:
        self.mode = mode
        if mode == "hang":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _refuse(self) -> None:
        self.mode = "refuse"
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._flowing.set()  # wake the pumps, which then find their sockets gone

    async def _recover(self) -> None:
        await self._listen()
        await self._set("pass")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            if self.mode == "refuse":
                return
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(target_writer)
        await asyncio.gather(self._pump(reader, target_writer), self._pump(target_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                await self._flowing.wait()
                if self.mode == "refuse":
                    break
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)


@contextmanager
def fault_proxy(host: str, port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(host, port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
