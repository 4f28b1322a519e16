#!/usr/bin/env bash
# The main job: tandem serving the iris Flask example, serverless (scale to
# zero on). Installs what it needs, builds tandem, serves until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh packages model
mkdir -p bin
go build -o bin/tandem ./cmd/tandem
LISTEN=${LISTEN:-127.0.0.1:8080}
ADMIN=${ADMIN:-127.0.0.1:8081}
export TANDEM_ADMIN=$ADMIN
bin/tandem serve --listen "$LISTEN" --admin-listen "$ADMIN" --data-dir .tandem &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT INT TERM
for _ in $(seq 100); do curl -fsS "http://$ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
bin/tandem deploy -f examples/iris-flask/serverless.yaml
echo "-- first call (cold start from zero):"
bin/tandem invoke iris predict -v -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
echo
cat <<MSG
-- tandem is serving iris at http://$LISTEN/models/iris/ (scale to zero after 30s idle). Try:
   curl -s -X POST http://$LISTEN/models/iris/predict -H 'Content-Type: application/json' -d '{"instances": [[5.9, 3.0, 5.1, 1.8]]}'
   bin/tandem status iris      bin/tandem logs iris      curl -s http://$ADMIN/metrics | grep tandem_
-- Ctrl-C stops tandem and every instance.
MSG
wait $pid
