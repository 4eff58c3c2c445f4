"""The obvious aiohttp pass-through proxy the gateway is measured against.

What a team would write in an afternoon: parse the body, keep the allowed top-level keys, post
them on through one shared ClientSession, return the partner's JSON. No authentication, no
contract, no share record, no uvloop. Its access log is off, as the gateway's is, so the two
differ only in the work each does. Run ``python bench/naive_proxy.py --port N --upstream URL``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import ClientSession, web

ALLOWED = frozenset({"applicant", "loan_amount", "loan_term_months"})
SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def assess(request: web.Request) -> web.Response:
    document = await request.json()
    kept = {key: value for key, value in document.items() if key in ALLOWED}
    async with request.app[SESSION].post(request.app[UPSTREAM], json=kept) as response:
        answer = await response.json()
        return web.json_response(answer, status=response.status)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    async with ClientSession() as session:
        app[SESSION] = session
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the partner's base URL")
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/") + "/v1/assess"
    app.cleanup_ctx.append(client_session)
    app.router.add_post("/bench-credit/v1/assess", assess)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
