#!/usr/bin/env bash
# Run once before `kubectl apply -f manifests/`: creates the Secrets the plain install reads
# (bundled PostgreSQL and Redis passwords, and the URLs that carry them) with fresh random
# passwords. Nothing secret is committed to the repository. A second run changes nothing.
set -euo pipefail
KUBECTL="${KUBECTL:-kubectl}"
NS=starkmatter
here="$(cd "$(dirname "$0")" && pwd)"
"$KUBECTL" apply -f "$here/01-namespace.yaml" >/dev/null
if "$KUBECTL" -n "$NS" get secret starkmatter-postgresql >/dev/null 2>&1; then
  echo "create-secrets.sh: the Secrets exist already; nothing changed" >&2
  exit 0
fi
random() { head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | cut -c1-32; }
pg="$(random)"
redis="$(random)"
secret() { "$KUBECTL" -n "$NS" create secret generic "$@" >/dev/null; }
secret starkmatter-postgresql --from-literal=password="$pg"
secret starkmatter-database \
  --from-literal=url="postgresql://starkmatter:$pg@starkmatter-postgresql:5432/starkmatter"
secret starkmatter-redis-auth --from-literal=password="$redis" \
  --from-literal=auth.conf="$(printf 'requirepass "%s"' "$redis")"
secret starkmatter-redis --from-literal=url="redis://:$redis@starkmatter-redis:6379/0"
echo "create-secrets.sh: Secrets created in namespace $NS with random passwords" >&2
