#!/usr/bin/env bash
# The local single-node Apache Kafka (KRaft) broker on 127.0.0.1.
#   deploy/local/kafka.sh up|down|status
# Jars come from Maven Central via mvn on first use (cached in ~/.cache/driftline/kafka).
# Set DRIFTLINE_BOOTSTRAP_SERVERS to use an existing cluster instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s "$(make -s -p -n 2>/dev/null | sed -n 's/^STAMP := //p' | head -1)" >/dev/null
exec .venv/bin/driftline kafka "${1:-status}"
