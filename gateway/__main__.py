"""`python -m gateway` and the `share-gateway` command."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    if _command(sys.argv[1:]) == "serve":
        # A reload request (SIGHUP) while the gateway starts would end it (Python's default):
        # ignored until `serve` handles it, before the contracts are read.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Imported only now: the import alone takes long enough for a signal to arrive during it.
    from gateway.cli import main as run

    return run()


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


if __name__ == "__main__":
    sys.exit(main())
