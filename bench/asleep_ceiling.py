"""The ceiling of the `asleep` target (issue 15) for any server on one asyncio loop.

The leanest server the workload allows: a bare asyncio protocol on uvloop, no HTTP parser, no
ASGI, one canned response, `await asyncio.sleep(0.010)` per request in its own task, one thread.
Whatever it reaches at c256 is what the loop's timers and one Python thread leave on this machine;
a real server can only add to its cost. Run it pinned as `bench/driver.py` pins a server:

    taskset -c 0 bench/.venv/bin/python bench/asleep_ceiling.py PORT &
    taskset -c 1 wrk -t1 -c256 -d8s --latency http://127.0.0.1:PORT/

It answers `GET` requests without a body only (what wrk sends); it is a measurement, not a server.
"""

import asyncio
import sys

import uvloop

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
            b"slept 10 ms\n")


class Sleeper(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            asyncio.get_running_loop().create_task(self.answer())

    async def answer(self):
        await asyncio.sleep(0.010)
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)


async def main(port):
    server = await asyncio.get_running_loop().create_server(
        Sleeper, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
