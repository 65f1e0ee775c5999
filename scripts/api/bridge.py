#!/usr/bin/env python3
"""Bridges a loopback TCP port to pv-vmm's API Unix socket, byte for byte, so that HTTP
tools that only speak TCP (schemathesis) can reach the API.

Usage: bridge.py UNIX_SOCKET [PORT]   (PORT 0 or absent: any free port)

Listens on 127.0.0.1 only, prints the port it got on stdout ("PORT <n>") and then copies
each accepted connection to a new connection on UNIX_SOCKET until either side closes.
Stops on SIGTERM or SIGINT.
"""

import asyncio
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a socket the peer already closed
            pass


async def serve(unix_path: str, port: int) -> None:
    async def handle(tcp_reader, tcp_writer):
        try:
            unix_reader, unix_writer = await asyncio.open_unix_connection(unix_path)
        except OSError as e:
            print(f"bridge: connecting to {unix_path}: {e}", file=sys.stderr, flush=True)
            tcp_writer.close()
            return
        await asyncio.gather(pipe(tcp_reader, unix_writer), pipe(unix_reader, tcp_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    port = int(sys.argv[2]) if len(sys.argv) == 3 else 0
    asyncio.run(serve(sys.argv[1], port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
