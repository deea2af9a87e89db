#!/usr/bin/env bash
# Installs and starts what the test suite needs on a fresh machine, and is
# quick when everything is already there:
#   - redis-server, redis-cli and redis-sentinel (Debian packages
#     redis-server, redis-tools and redis-sentinel), and a Redis answering
#     on 127.0.0.1:6379 (tests isolate themselves by key prefix; Sentinel
#     and Cluster tests start servers of their own);
#   - Chromium (Debian package chromium), the headless browser the review
#     UI's tests (pkg/reviewui) drive;
#   - kube-apiserver and etcd for envtest (hack/testbins.sh, cached in bin/);
#   - Alertmanager for test/e2e (hack/alertmanager.sh, cached in bin/);
#   - Helm, kustomize and the KEDA and prometheus-operator CRDs for
#     test/deploy (hack/helm.sh, hack/kustomize.sh, hack/crds.sh, cached in
#     bin/).
# Prints the KUBEBUILDER_ASSETS directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-deps: $*" >&2; }

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-sentinel >/dev/null; then
	log "installing redis-server, redis-tools and redis-sentinel"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq redis-server redis-tools redis-sentinel >&2
fi

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
	log "installing chromium"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq chromium >&2
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
	log "starting redis-server on 127.0.0.1:6379"
	mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
		--dir /tmp --logfile /tmp/stormweir-test-redis.log >&2
	for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
	redis_up || { log "redis did not start"; exit 1; }
fi

# Its stdout goes to stderr: the last stdout line here is KUBEBUILDER_ASSETS.
hack/alertmanager.sh >&2
hack/helm.sh >&2
hack/kustomize.sh >&2
hack/crds.sh >&2
hack/testbins.sh
