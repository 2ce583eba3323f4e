"""The order service: order lifecycle, pre-trade risk, paper and real brokers, outbox worker.

Pure modules (``model``, ``lifecycle``, ``risk``, ``fills``, ``reservations``) hold the
rules and do no I/O; ``storage``, ``placing``, ``processing`` and ``routes`` are the edges.
"""
