"""A TCP relay that counts the bytes a client sends to a server: what the stub writes to MongoDB.

MongoDB-wire servers of the devstack keep no network counters, so the pipeline benchmark puts
this relay between the stub and the database and reads how many bytes went in. Requests that
only read are a few hundred bytes each; what grows with a document is the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

_CHUNK = 256 * 1024


class WireMeter:
    """Relays connections to `target_host:target_port`, counting client-to-server bytes."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.bytes_in = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        inbound = asyncio.create_task(self._pipe(reader, up_writer, count=True))
        outbound = asyncio.create_task(self._pipe(up_reader, writer, count=False))
        self._tasks |= {inbound, outbound}
        inbound.add_done_callback(self._tasks.discard)
        outbound.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if count:
                    self.bytes_in += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def metered_uri(uri: str, port: int) -> str:
    """`uri` (a single-host mongodb:// URI) pointed at the relay's port."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


@contextlib.asynccontextmanager
async def metering(uri: str) -> AsyncIterator[tuple[WireMeter, str]]:
    """A started relay in front of the server of `uri`, and the URI that goes through it."""
    parts = urlsplit(uri)
    meter = WireMeter(parts.hostname or "127.0.0.1", parts.port or 27017)
    await meter.start()
    try:
        yield meter, metered_uri(uri, meter.port)
    finally:
        await meter.stop()
