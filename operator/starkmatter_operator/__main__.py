"""`python -m starkmatter_operator`: run the operator (what the chart's Deployment runs)."""

from __future__ import annotations

import argparse
import logging
import os
import secrets

import kopf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="starkmatter-operator")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("STARKMATTER_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="URL the liveness endpoint listens on",
    )
    parser.add_argument(
        "--peering",
        default=os.environ.get("STARKMATTER_OPERATOR_PEERING", "starkmatter"),
        help="ClusterKopfPeering name shared by the replicas (only one of them is active)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(os.environ.get("STARKMATTER_OPERATOR_PRIORITY") or 0) or None,
        help="peering priority: the live replica with the highest one acts (default: random)",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="run without peering (a single replica)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    if not args.verbose:
        # One INFO line per handler run is noise at hundreds of objects; failures still log.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import starkmatter_operator.handlers  # noqa: F401  (registers the handlers)

    # With peering, the replica with the highest priority works and the others wait;
    # random priorities make exactly one of them win without any configuration. Two equal
    # priorities would make both wait (Kopf's rule), so the range is wide: a tie between
    # two replicas has odds of one in two billion.
    priority = args.priority or secrets.randbelow(2**31 - 2) + 1
    if not args.standalone:
        os.environ["STARKMATTER_OPERATOR_PEERING_NAME"] = args.peering
        os.environ["STARKMATTER_OPERATOR_PRIORITY"] = str(priority)
    kopf.run(
        clusterwide=True,
        liveness_endpoint=args.liveness,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=None if args.standalone else priority,
    )


if __name__ == "__main__":
    main()
