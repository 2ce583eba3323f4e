"""The collector's view of a long-running service's heap."""

from __future__ import annotations

import gc

_settled = False


def settle() -> None:
    """Move everything alive once a service has started out of the collector's reach
    (``gc.freeze``).

    Modules, settings, routers and clients live as long as the process; without this, every
    full collection scans them all again, on the thread that serves requests. Measured in
    ``bench/bench_orders.py``: an API process holds about 240,000 objects once started, and
    each full collection of them took about 110 ms of CPU, five or six times per 4,000
    orders (4-5 % of the process's CPU, each a pause in the middle of requests); frozen,
    what is left to scan is a few thousand objects. Collected first, so no garbage is
    frozen with them; objects freed later by reference counting are still freed.

    Once per process, from a service's own entry point (``starkmatter api``, ``gateway``,
    ``orders``, ``ingest``): dev mode and tests run services inside a bigger process whose
    heap, restarted services included, is not theirs to freeze.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
