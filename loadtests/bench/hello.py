"""The reference: a bare aiohttp + uvloop "hello" handler, served like the queue service
(one process, no access log). `python -m loadtests.bench.hello PORT`."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/readyz", hello)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
