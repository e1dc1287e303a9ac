"""A registration site that knows nothing of Gelombang (no token check, no library): it answers
every request with what it received, so a test can see what the proxy in front of it let
through. `python -m tests.helpers.plain_origin --port N` (loopback only)."""

from __future__ import annotations

import argparse

from aiohttp import web


async def anything(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "origin": "plain",
            "path": request.path_qs,
            "subject": request.headers.get("X-Gelombang-Subject"),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
