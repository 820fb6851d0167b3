#!/usr/bin/env bash
# The single test command of ackgate: sets up the test environment (Rust
# components, cargo-deny, Redis, a Tansu Kafka broker, HAProxy; k6, Chromium, promtool and
# hadolint are installed by the scripts that use them) and runs fmt, clippy, cargo deny (bans,
# licenses, sources; advisories when the database can be fetched), the Rust tests (the slow
# chaos, Redis-stall and load-balancer suites included), the k6 smoke, duplicates and batch
# scripts, the client examples and the clients generated from the OpenAPI document, the browser
# test of /docs, the deploy-file checks and the release build the Dockerfile runs.
#
# Usage: scripts/test.sh [extra cargo test args...]   e.g. scripts/test.sh -- --nocapture
#
# A Tansu built with SQLite storage (for the durable-broker restart test) is built in the
# background from the start when missing (~15 min cold); only if that build fails is the
# durable case skipped, with a loud message.
#
# Environment:
#   ACKGATE_TEST_KAFKA_PORT   use this port for the Tansu broker (default: a free port)
#   TOOLS                     where tools are cached (default: target/tools)
#   ACKGATE_SKIP_RELEASE_BUILD=1  skip the (slow) release build and the quick benchmark that uses it
#
# Exported to the tests:
#   ACKGATE_TEST_KAFKA_BROKERS=127.0.0.1:PORT
#   ACKGATE_TEST_REDIS_URL=redis://127.0.0.1:6379
#   ACKGATE_TEST_REDIS_SERVER=/path/to/redis-server
#   ACKGATE_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:P,redis://127.0.0.1:P+1,…  (a test cluster)
#   ACKGATE_TEST_HAPROXY=/path/to/haproxy
#   ACKGATE_TEST_TANSU_SQLITE=/path/to/tansu   (or ACKGATE_TEST_SKIP_SQLITE=why, if it failed)
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
ensure_cargo_on_path

step "ensure Rust components (rustfmt, clippy)"
missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    rustup component add "${missing[@]}"
fi
cargo --version
cargo fmt --version
cargo clippy --version

# The TLS build links the system's OpenSSL; the TLS tests make a CA with openssl and put
# stunnel in front of the test broker.
step "ensure OpenSSL headers, openssl and stunnel (TLS build and tests)"
tls_missing=()
pkg-config --exists openssl 2>/dev/null || tls_missing+=(libssl-dev pkg-config)
command -v openssl >/dev/null 2>&1 || tls_missing+=(openssl)
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || tls_missing+=(stunnel4)
if ((${#tls_missing[@]})); then
    echo "installing: ${tls_missing[*]}"
    apt_install "${tls_missing[@]}" || die "could not install ${tls_missing[*]} (Debian packages)"
fi

# The load-balancer tests put Debian's HAProxy in front of three gateway processes.
step "ensure HAProxy (load-balancer tests)"
# /usr/sbin is not on every user's PATH.
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
if [[ ! -x "$HAPROXY" ]]; then
    echo "installing: haproxy"
    apt_install haproxy || die "could not install haproxy (Debian package)"
    HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
fi
"$HAPROXY" -v | sed -n 1p

step "Tansu with SQLite storage: install in the background if missing"
mkdir -p "$REPO/target"
sqlite_log="$REPO/target/tansu-sqlite-install.log"
bash scripts/tansu.sh install-sqlite >"$sqlite_log" 2>&1 &
sqlite_install=$!
echo "pid $sqlite_install, log $sqlite_log"

step "cargo-deny: install in the background if missing"
deny_log="$REPO/target/cargo-deny-install.log"
if command -v cargo-deny >/dev/null 2>&1; then
    deny_install=""
    cargo deny --version
else
    cargo install cargo-deny --locked >"$deny_log" 2>&1 &
    deny_install=$!
    echo "pid $deny_install, log $deny_log"
fi

step "ensure Redis on 127.0.0.1:6379"
bash scripts/redis.sh

step "start Tansu Kafka broker"
start_tansu_until_exit "${ACKGATE_TEST_KAFKA_PORT:-}"

step "start a Redis Cluster (3 masters, 3 replicas) for the cluster contract tests"
start_redis_cluster_until_exit

step "test environment"
export ACKGATE_TEST_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export ACKGATE_TEST_REDIS_URL="redis://127.0.0.1:6379"
ACKGATE_TEST_REDIS_SERVER="$(command -v redis-server)"
export ACKGATE_TEST_REDIS_SERVER
export ACKGATE_TEST_REDIS_CLUSTER_URL="$REDIS_CLUSTER_URL"
export ACKGATE_TEST_HAPROXY="$HAPROXY"
echo "ACKGATE_TEST_KAFKA_BROKERS=$ACKGATE_TEST_KAFKA_BROKERS"
echo "ACKGATE_TEST_REDIS_CLUSTER_URL=$ACKGATE_TEST_REDIS_CLUSTER_URL"
echo "ACKGATE_TEST_REDIS_URL=$ACKGATE_TEST_REDIS_URL"
echo "ACKGATE_TEST_REDIS_SERVER=$ACKGATE_TEST_REDIS_SERVER"
echo "ACKGATE_TEST_HAPROXY=$ACKGATE_TEST_HAPROXY"

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --all-targets --locked -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "wait for cargo-deny"
if [[ -n "$deny_install" ]] && ! wait "$deny_install"; then
    tail -n 30 "$deny_log" >&2 || true
    die "could not install cargo-deny (log: $deny_log)"
fi

step "cargo deny check bans licenses sources (deny.toml)"
cargo deny --locked check bans licenses sources

# The RustSec advisory database lives on github.com, which not every build machine reaches.
# When it cannot be fetched the check is skipped, loudly; when it can, any finding fails.
step "cargo deny check advisories (RustSec advisory database)"
advisory_db="https://github.com/RustSec/advisory-db"
if cargo deny fetch db; then
    cargo deny --locked --offline check advisories
else
    printf '\n!!!!!!!!\n!!! advisories NOT checked: the advisory database at %s is unreachable\n!!!!!!!!\n\n' "$advisory_db" >&2
fi

step "wait for the Tansu with SQLite storage"
if wait "$sqlite_install" && ACKGATE_TEST_TANSU_SQLITE="$(bash scripts/tansu.sh path-sqlite)"; then
    export ACKGATE_TEST_TANSU_SQLITE
    echo "ACKGATE_TEST_TANSU_SQLITE=$ACKGATE_TEST_TANSU_SQLITE"
else
    tail -n 30 "$sqlite_log" >&2 || true
    export ACKGATE_TEST_SKIP_SQLITE="installing it failed (log: $sqlite_log)"
    printf '\n!!!!!!!!\n!!! Tansu with SQLite storage could not be installed: the durable-broker restart\n!!! test is SKIPPED. See %s\n!!!!!!!!\n\n' "$sqlite_log" >&2
fi

step "cargo test --locked${*:+ $*}"
cargo test --locked "$@"

step "chaos: kill -9, restarts and outages under load, then ackgate audit"
cargo test --locked --test chaos -- --ignored --nocapture

step "redis stall: Redis frozen past the lease under load, then ackgate audit"
cargo test --locked --test redis_stall -- --ignored --nocapture

step "redis cluster: a master SIGKILLed under load, its replica promoted"
cargo test --locked --test redis_cluster -- --ignored --nocapture

step "balancer: three gateways behind HAProxy — identical requests, SIGKILL and SIGTERM under load, then ackgate audit"
cargo test --locked --test balancer -- --ignored --nocapture

# The gateway binary cargo test just built, for the checks that run it as a user would.
export ACKGATE_BIN="$REPO/target/debug/ackgate"

step "k6: smoke.js against ackgate dev; duplicates.js and batch.js against ackgate serve, then ackgate audit of their topics"
bash scripts/k6.sh ci

step "client examples (Python, JavaScript, Java) against ackgate dev through a fault proxy, then ackgate audit"
bash scripts/examples.sh

step "clients generated from openapi/openapi.json (Python, TypeScript ×2, Java) driven against ackgate dev"
bash scripts/generated-clients.sh

step "schemathesis: the running gateway against its own OpenAPI document"
bash scripts/schemathesis.sh

step "browser: the /docs UI in headless Chromium"
bash scripts/browser-test.sh

step "deploy files: compose schema, Prometheus config and alert tests, dashboard, Dockerfile lint"
bash scripts/check-deploy.sh

# The Dockerfile builds from the files .dockerignore lets in and nothing else: check that those
# alone make a crate cargo accepts (a manifest naming a file left out of the context breaks
# `docker build`, and no container engine runs here to notice).
step "Docker build context: cargo check on the files .dockerignore lets in"
context="$(mktemp -d)"
while IFS= read -r line; do
    [[ "$line" == '!'* ]] || continue
    allowed="${line#!}"
    cp -r "$REPO/${allowed%/}" "$context/"
done < .dockerignore
(cd "$context" && CARGO_TARGET_DIR="$REPO/target" cargo check --locked --bin ackgate)
rm -rf "$context"

# The Dockerfile's build step, mirrored: no container engine runs here.
if [[ "${ACKGATE_SKIP_RELEASE_BUILD:-}" == 1 ]]; then
    step "release build and quick benchmark skipped (ACKGATE_SKIP_RELEASE_BUILD=1)"
else
    step "cargo build --release --locked --bin ackgate (as in the Dockerfile)"
    cargo build --release --locked --bin ackgate
    # A short run of the benchmark, on the release build just made: it fails only when the
    # benchmark itself is broken (errors, no throughput, unexpected answers), never on a number.
    step "bench (quick): raw producer, raw Redis, the gateway and an overload, briefly"
    bash scripts/bench.sh --quick
fi

step "all checks passed"
