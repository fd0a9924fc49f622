"""A TCP proxy in front of a real redis-server that can lose replies: the request reaches Redis and runs,
the answer never comes back and the connection drops (what a worker sees when Redis restarts or the
network fails mid-call). Runs in a thread of the test process, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from redis_server import free_port


class ReplyDroppingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.dropped = 0
        self._drops_wanted = 0
        self._needles: tuple[bytes, ...] = ()
        self._lock = threading.Lock()
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every connection not yet closed
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReplyDroppingProxy:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the proxy's loop did not stop within 30 s"
        self._loop.close()

    def lose_next_reply(self, *containing: bytes) -> None:
        """The next request holding one of ``containing`` (default: a script call, by ``EVALSHA`` or ``FCALL``) is
        delivered, and its reply lost with the connection."""
        with self._lock:
            self._drops_wanted += 1
            self._needles = containing or (b"EVALSHA", b"FCALL")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(self._loop), return_exceptions=True))
            self._loop.run_until_complete(server.wait_closed())
            # A handler cut short before its own close (cancelled at the wrong await, under load) left its
            # sockets open: closed here, while this loop still runs their callbacks. Else the garbage
            # collector frees them after the loop closed, in some later test (a loaded full run showed it).
            for writer in list(self._open):
                writer.transport.abort()
            self._loop.run_until_complete(asyncio.sleep(0.01))

    def _take_drop(self, chunk: bytes) -> bool:
        with self._lock:
            if self._drops_wanted and any(needle in chunk for needle in self._needles):
                self._drops_wanted -= 1
                self.dropped += 1
                return True
        return False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except BaseException:
            writer.close()
            self._open.discard(writer)
            raise
        self._open.add(up_writer)
        cut = asyncio.Event()

        async def upward() -> None:
            while chunk := await reader.read(65536):
                drop = self._take_drop(chunk)
                if drop:
                    cut.set()  # from here on nothing comes back: this request's reply is lost
                up_writer.write(chunk)
                await up_writer.drain()
                if drop:
                    await asyncio.sleep(0.1)  # let Redis run the request, then hang up on the client
                    return

        async def downward() -> None:
            while (chunk := await up_reader.read(65536)) and not cut.is_set():
                writer.write(chunk)
                await writer.drain()

        tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when stop() cancels this handler: a stream left open is closed only by the garbage
            # collector, after this loop has closed, and pytest reports its ResourceWarning in whichever
            # later test the collection happens to run (CI failed an unrelated worker test on it).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
                self._open.discard(w)
