"""The cyclic garbage collector, set for a long-running gateway."""

from __future__ import annotations

import gc
from typing import Final

# A share's objects are freed by reference counting the moment it ends: they hold no cycles.
# With the default thresholds the collector still ran a young collection every few dozen
# shares, and every few thousand a full one, which walks every long-lived object (modules,
# settings, the compiled contract set): tens of milliseconds with the event loop stopped, and
# every share in flight waiting. Such objects are frozen once the gateway runs, out of the
# collector's walks, and collections are made rare: the few cycles a running gateway makes are
# still collected, only later.
THRESHOLDS: Final = (50_000, 20, 100)


def settle() -> None:
    """Freeze what is alive now and set `THRESHOLDS`: once started, and after each reload.

    What a reload replaced is back in the collector's reach first (unfreeze), so that any
    cycles among it are freed rather than kept frozen for the life of the process.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
