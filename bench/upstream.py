"""The benchmark's stand-in partner: answers every POST with a fixed credit score, cheaply.

Run ``python bench/upstream.py --port N``. It reads each request body (as a real partner would)
and keeps the last one, which ``GET /_last`` returns so the benchmark can show what a partner
received through each proxy. It runs on uvloop so that it is never the bottleneck it measures.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

ANSWER = b'{"score": 712, "band": "B"}'
LAST = web.AppKey("last", list[bytes])


async def assess(request: web.Request) -> web.Response:
    request.app[LAST][0] = await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def last(request: web.Request) -> web.Response:
    return web.Response(body=request.app[LAST][0], content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app[LAST] = [b"{}"]
    app.router.add_get("/_last", last)
    app.router.add_post("/{tail:.*}", assess)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
