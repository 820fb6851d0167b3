#!/usr/bin/env bash
# Generated clients against a running gateway: generates clients from openapi/openapi.json with
# widely used generators, type-checks each with its driver, and drives `ackgate dev` with them
# (publish, replay, status, a reused key, no token, a batch, a 202 from a slow Kafka).
#   - Python: openapi-python-client; drive.py under mypy --strict.
#   - TypeScript: openapi-typescript + openapi-fetch; drive.ts under tsc --strict.
#   - OpenAPI Generator: `validate`, its typescript-fetch client with drive-fetch.ts, and its Java
#     client (library native: java.net.http and Jackson) compiled with plain javac against
#     Debian's jars, with Drive.java under javac -Xlint:all -Werror. No Maven or Gradle: they
#     would download from Maven Central, which these machines cannot reach.
# A generator warning this script does not expect fails the run: the document is to be fixed.
#
# Usage: scripts/generated-clients.sh
#
# Environment:
#   ACKGATE_BIN   the gateway binary (default: target/debug/ackgate, built if missing)
#
# Writes target/clients/ (the generated code, never committed) and its gateway logs.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

OUT="$REPO/target/clients"
CLIENTS="$REPO/tests/clients"
VENV="$TOOLS/clients-venv"

step "ensure the tools (Python venv $VENV, npm ci in tests/clients/typescript, a JDK and Debian's Jackson)"
venv_install "$VENV" -r "$CLIENTS/python/requirements.txt"
command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 20 or newer is needed)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 20)) || die "Node.js $(node --version) is too old: the drivers need 20 or newer (fetch)"
command -v java >/dev/null 2>&1 || die "java is not installed (OpenAPI Generator runs on it)"
command -v javac >/dev/null 2>&1 || die "javac is not installed (on Debian: apt-get install openjdk-17-jdk-headless)"
# What the generated Java client needs at compile and run time, from Debian (/usr/share/java):
# jackson-datatype-jsr310, which its templates also use, is not packaged; see the Java step.
JAVA_JARS=(jackson-core jackson-databind jackson-annotations jakarta-annotation-api)
JAVA_CP="" missing=0
for jar in "${JAVA_JARS[@]}"; do
    JAVA_CP+="${JAVA_CP:+:}/usr/share/java/$jar.jar"
    [[ -f "/usr/share/java/$jar.jar" ]] || missing=1
done
if ((missing)); then
    echo "installing Debian's Jackson and Jakarta Annotations jars"
    apt_install libjackson2-core-java libjackson2-databind-java libjackson2-annotations-java \
        libjakarta-annotation-api-java || die "apt-get install of the Java client's jars failed"
fi
for jar in "${JAVA_JARS[@]}"; do
    [[ -f "/usr/share/java/$jar.jar" ]] || die "/usr/share/java/$jar.jar is missing after apt-get install"
done
(cd "$CLIENTS/typescript" && npm ci --no-audit --no-fund --loglevel=error)
TSC="$CLIENTS/typescript/node_modules/.bin/tsc"
export PATH="$VENV/bin:$PATH"

step "ensure the gateway binary"
ensure_gateway_bin
# The checked-in document is what users generate from; it must be the binary's.
cmp -s <("$ACKGATE_BIN" openapi) openapi/openapi.json ||
    die "openapi/openapi.json is not what $ACKGATE_BIN prints (cargo run -q -- openapi > openapi/openapi.json)"

# unexpected_warnings LOG WARNING ACCEPTED: the lines of LOG that match WARNING and not ACCEPTED
# (extended regular expressions).
unexpected_warnings() {
    grep -E "$2" "$1" | grep -Ev "$3" || true
}

rm -rf "$OUT"
mkdir -p "$OUT"

step "generate: openapi-python-client $(openapi-python-client --version | awk '{print $NF}')"
openapi-python-client generate --path openapi/openapi.json --meta none \
    --output-path "$OUT/python/ackgate_client" >"$OUT/python-generate.log" 2>&1 ||
    { cat "$OUT/python-generate.log"; die "openapi-python-client failed"; }
bad="$(unexpected_warnings "$OUT/python-generate.log" '[Ww]arn|WARN|^ERROR|not in PATH' '^$')"
[[ -z "$bad" ]] || { cat "$OUT/python-generate.log"; die "openapi-python-client warned: $bad"; }

step "type-check: mypy --strict (generated package and drive.py)"
MYPYPATH="$OUT/python" mypy --config-file "$CLIENTS/python/mypy.ini" --cache-dir "$TOOLS/clients-mypy-cache" \
    "$CLIENTS/python/drive.py" "$OUT/python/ackgate_client"

step "generate: openapi-typescript $(node -p 'require("./tests/clients/typescript/node_modules/openapi-typescript/package.json").version')"
mkdir -p "$OUT/typescript"
"$CLIENTS/typescript/node_modules/.bin/openapi-typescript" openapi/openapi.json \
    -o "$OUT/typescript/schema.d.ts" >"$OUT/typescript-generate.log" 2>&1 ||
    { cat "$OUT/typescript-generate.log"; die "openapi-typescript failed"; }
bad="$(unexpected_warnings "$OUT/typescript-generate.log" '[Ww]arn|WARN|[Ee]rror|ERROR' '^$')"
[[ -z "$bad" ]] || { cat "$OUT/typescript-generate.log"; die "openapi-typescript warned: $bad"; }

step "type-check and compile: tsc (strict) drive.ts"
cp "$CLIENTS/typescript/drive.ts" "$CLIENTS/typescript/tsconfig.json" "$CLIENTS/typescript/package.json" \
    "$OUT/typescript/"
ln -sfn "$CLIENTS/typescript/node_modules" "$OUT/typescript/node_modules"
"$TSC" -p "$OUT/typescript"

step "OpenAPI Generator $(openapi-generator-cli version 2>/dev/null | tail -n 1): validate"
openapi-generator-cli validate -i openapi/openapi.json

step "generate: OpenAPI Generator typescript-fetch"
# It says that 3.1 support is in beta, and logs one "Failed to get the schema name: null" for the
# document's untyped (any JSON) schemas; other warnings fail the run.
openapi-generator-cli generate -g typescript-fetch -i openapi/openapi.json \
    -o "$OUT/typescript-fetch/generated" \
    --additional-properties=supportsES6=true,importFileExtension=.js >"$OUT/typescript-fetch-generate.log" 2>&1 ||
    { cat "$OUT/typescript-fetch-generate.log"; die "openapi-generator-cli generate failed"; }
bad="$(unexpected_warnings "$OUT/typescript-fetch-generate.log" '^\[main\] (WARN|ERROR)' \
    'OpenAPI 3\.1 support is still in beta|Failed to get the schema name: null')"
[[ -z "$bad" ]] || { cat "$OUT/typescript-fetch-generate.log"; die "OpenAPI Generator warned: $bad"; }

step "type-check and compile: tsc (strict) drive-fetch.ts"
cp "$CLIENTS/typescript/drive-fetch.ts" "$CLIENTS/typescript/package.json" "$OUT/typescript-fetch/"
cp "$CLIENTS/typescript/tsconfig.fetch.json" "$OUT/typescript-fetch/tsconfig.json"
ln -sfn "$CLIENTS/typescript/node_modules" "$OUT/typescript-fetch/node_modules"
"$TSC" -p "$OUT/typescript-fetch"

step "generate: OpenAPI Generator java (library native)"
# Its native templates register Jackson's JavaTimeModule (jackson-datatype-jsr310) in ApiClient and
# JSON unconditionally, whatever dateLibrary says, and RFC3339InstantDeserializer extends that
# module's InstantDeserializer. Debian does not package the module, and the document has no
# date-time field, so: ApiClient and JSON come from the generator's own templates less the lines
# that import or register JavaTimeModule and RFC3339JavaTimeModule (4 + 2 lines in 7.26.0; another
# count stops the run), and the two RFC3339 java.time classes are not generated
# (.openapi-generator-ignore). dateLibrary=legacy keeps a
# date-time field added later working without the module (java.util.Date, plain databind).
mkdir -p "$OUT/java/generated"
"$VENV/bin/python" - "$OUT/java/templates/libraries/native" <<'PY'
import pathlib
import re
import sys
import zipfile

import openapi_generator_cli

jar = pathlib.Path(openapi_generator_cli.__file__).with_name("openapi-generator.jar")
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
drop = re.compile(r"datatype\.jsr310\.JavaTimeModule;|(registerModule|addModule)\(new (RFC3339)?JavaTimeModule\(\)\)")
with zipfile.ZipFile(jar) as z:
    for name, expected in (("ApiClient.mustache", 4), ("JSON.mustache", 2)):
        lines = z.read(f"Java/libraries/native/{name}").decode().splitlines(keepends=True)
        kept = [line for line in lines if not drop.search(line)]
        if len(lines) - len(kept) != expected:
            sys.exit(f"{name}: {len(lines) - len(kept)} JavaTimeModule lines, expected {expected}: the template changed")
        (out / name).write_text("".join(kept))
PY
JAVA_SRC="$OUT/java/generated/src/main/java"
printf '%s\n' src/main/java/dev/ackgate/client/RFC3339InstantDeserializer.java \
    src/main/java/dev/ackgate/client/RFC3339JavaTimeModule.java >"$OUT/java/generated/.openapi-generator-ignore"
# openApiNullable=false: no jackson-databind-nullable; useJakartaEe=true: jakarta.annotation
# (Generated, Nullable, Nonnull) from one Debian jar, no javax.annotation/jsr305;
# annotationLibrary=none and useBeanValidation=false: no Swagger or Bean Validation annotations.
openapi-generator-cli generate -g java --library native -i openapi/openapi.json \
    -t "$OUT/java/templates" -o "$OUT/java/generated" \
    --global-property apiTests=false,modelTests=false,apiDocs=false,modelDocs=false \
    --additional-properties=openApiNullable=false,useJakartaEe=true,dateLibrary=legacy,annotationLibrary=none,useBeanValidation=false,hideGenerationTimestamp=true,invokerPackage=dev.ackgate.client,apiPackage=dev.ackgate.client.api,modelPackage=dev.ackgate.client.model \
    >"$OUT/java-generate.log" 2>&1 ||
    { cat "$OUT/java-generate.log"; die "openapi-generator-cli generate -g java failed"; }
bad="$(unexpected_warnings "$OUT/java-generate.log" '^\[main\] (WARN|ERROR)' \
    'OpenAPI 3\.1 support is still in beta|Failed to get the schema name: null')"
[[ -z "$bad" ]] || { cat "$OUT/java-generate.log"; die "OpenAPI Generator (java) warned: $bad"; }
! grep -rl 'jsr310\|JavaTimeModule' "$JAVA_SRC" || die "the generated Java client still uses jackson-datatype-jsr310"

step "compile: javac (generated client), javac -Xlint:all -Werror Drive.java"
find "$JAVA_SRC" -name '*.java' | sort >"$OUT/java/sources.txt"
javac -encoding UTF-8 -d "$OUT/java/classes" -cp "$JAVA_CP" @"$OUT/java/sources.txt"
javac -encoding UTF-8 -Xlint:all -Werror -d "$OUT/java/driver" -cp "$OUT/java/classes:$JAVA_CP" \
    "$CLIENTS/java/Drive.java"

step "start two gateways: ackgate dev, and one whose Kafka answers after the wait timeout"
FAST_PID="" SLOW_PID="" AUTH_FILE=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    GATEWAY_PID="$FAST_PID" stop_dev_gateway 5
    GATEWAY_PID="$SLOW_PID" stop_dev_gateway 5
    [[ -z "$AUTH_FILE" ]] || rm -f "$AUTH_FILE"
    if ((rc != 0)) && [[ -n "$FAST_PID" ]]; then
        show_gateway_log "$OUT/ackgate-dev.log"
        [[ -z "$SLOW_PID" ]] || show_gateway_log "$OUT/ackgate-dev-slow.log"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
AUTH_FILE="$(mktemp "${TMPDIR:-/tmp}/ackgate-clients-XXXXXX.toml")"
make_auth_file "$ACKGATE_BIN" "$AUTH_FILE" generated-clients '["events"]'
READY_SECS=60 start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$OUT/ackgate-dev.log" \
    --failure-spool-path "$OUT/ackgate-dev.spool" --auth-file "$AUTH_FILE"
FAST_PID="$GATEWAY_PID" FAST_URL="$GATEWAY_URL"
READY_SECS=60 start_dev_gateway "$ACKGATE_BIN" "$(free_port)" "$OUT/ackgate-dev-slow.log" \
    --failure-spool-path "$OUT/ackgate-dev-slow.spool" --auth-file "$AUTH_FILE" \
    --kafka-rtt-ms 700 --wait-timeout-ms 200
SLOW_PID="$GATEWAY_PID" SLOW_URL="$GATEWAY_URL"
export ACKGATE_URL="$FAST_URL" ACKGATE_SLOW_URL="$SLOW_URL" ACKGATE_KEY

step "drive: Python (openapi-python-client)"
PYTHONPATH="$OUT/python" "$VENV/bin/python" "$CLIENTS/python/drive.py"

step "drive: TypeScript (openapi-typescript + openapi-fetch)"
node "$OUT/typescript/out/drive.js"

step "drive: TypeScript (OpenAPI Generator typescript-fetch)"
node "$OUT/typescript-fetch/out/drive-fetch.js"

step "drive: Java (OpenAPI Generator java, library native)"
java -cp "$OUT/java/classes:$OUT/java/driver:$JAVA_CP" Drive

# What the drivers were told is what Kafka holds: each gateway's mock cluster, read back by
# `ackgate audit` through the address its banner printed, has every event once.
audit_topic() {
    local log="$1" report="$2" kafka
    kafka="$(dev_kafka_address "$log")"
    "$ACKGATE_BIN" audit --kafka-brokers "$kafka" --topic events --json --idle-ms 500 >"$report" ||
        { cat "$report"; die "ackgate audit found problems in $log's Kafka"; }
    python3 - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
problems = [name for name, bad in [
    ("duplicate records", report["duplicate_records"]),
    ("records without an idempotency-key header", report["records_without_header"]),
    ("no record at all", report["records_read"] == 0),
] if bad]
if problems or not report["clean"]:
    sys.exit(f"audit of {sys.argv[1]}: {', '.join(problems) or 'not clean'}")
print(f"ok   {report['records_read']} records, {report['distinct_keys']} keys, no duplicates")
PY
}

step "Kafka: ackgate audit of what the generated clients published"
audit_topic "$OUT/ackgate-dev.log" "$OUT/audit.json"
audit_topic "$OUT/ackgate-dev-slow.log" "$OUT/audit-slow.json"

step "generated clients: all checks passed"
