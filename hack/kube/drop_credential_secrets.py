"""Filter for `helm template` output: drop the Secrets that carry credentials.

The plain install in manifests/ is committed to the repository, so it must hold no password;
manifests/create-secrets.sh creates these Secrets with random values instead. Reads YAML
documents on stdin, writes the others (comments and order kept) to stdout.
"""

from __future__ import annotations

import re
import sys

CREDENTIAL_SECRETS = frozenset(
    {"starkmatter-database", "starkmatter-postgresql", "starkmatter-redis",
     "starkmatter-redis-auth"}
)  # fmt: skip


def keep(document: str) -> bool:
    kind = re.search(r"^kind:\s*(\S+)", document, re.MULTILINE)
    name = re.search(r"^metadata:\n(?:\s+.*\n)*?\s+name:\s*(\S+)", document, re.MULTILINE)
    return not (kind and kind.group(1) == "Secret" and name and name.group(1) in CREDENTIAL_SECRETS)


def main() -> None:
    documents = re.split(r"^---\n", sys.stdin.read(), flags=re.MULTILINE)
    sys.stdout.write("---\n".join(d for d in documents if keep(d)))


if __name__ == "__main__":
    main()
