"""`python -m gateway` and the `share-gateway` command."""

from __future__ import annotations

import signal
import sys


def main() -> int:
    # Wherever it stands (`--config F serve` too); another command that merely holds the word
    # ignores a hang-up for as long as it runs, which is harmless.
    if "serve" in sys.argv[1:]:
        # A reload request (SIGHUP) while the gateway starts would end it (Python's default):
        # ignored until `serve` handles it, before the contracts are read.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Imported only now: the import alone takes long enough for a signal to arrive during it.
    from gateway.cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
