# syntax=docker/dockerfile:1
#
# ackgate container image.
#
#   docker build -t ackgate .
#   docker run --rm -p 8080:8080 \
#     -e ACKGATE_KAFKA_BROKERS=kafka:9092 -e ACKGATE_REDIS_URL=redis://redis:6379 ackgate
#
# Needs BuildKit (the default builder of Docker 23+) for the cache mounts below.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
# Builder. rust:<version>-bookworm already has what rdkafka's bundled librdkafka build needs
# (gcc, make, perl, python3, pkg-config), zlib1g-dev for libz-sys and libssl-dev for TLS to
# Kafka and Redis (librdkafka and the Redis client both link the system's OpenSSL), so no apt
# step here.
# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# Only what the release build reads: the manifest, the lock file and the sources. Dependencies
# (librdkafka included) are cached across builds by the target/ and registry cache mounts, so a
# change in src/ recompiles only the ackgate crate. benches/ is not built, but cargo refuses a
# manifest whose declared `[[bench]]` target has no source, so it comes along.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src

# The target dir is a cache mount and therefore not part of the layer: copy the binary out of it
# in the same RUN.
RUN --mount=type=cache,id=ackgate-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=ackgate-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=ackgate-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin ackgate \
    && install -D -m 0755 target/release/ackgate /out/ackgate

# ---------------------------------------------------------------------------------------------
# Runtime. The binary links libc, libgcc_s, libm and zlib (libz.so.1), which
# debian:bookworm-slim ships, and OpenSSL 3 (libssl.so.3, libcrypto.so.3), installed here;
# ca-certificates is the trust store for TLS to managed Kafka and Redis (SSL, SASL_SSL,
# rediss://) when no CA file is given; curl for the HEALTHCHECK (the binary has no health
# subcommand).
# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Debian's stable point releases move package versions; pinning them would break the build on
# every point release; the versions are those of the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user. /var/lib/ackgate is its working directory and the only writable place: the
# local failure spool (failure records waiting for Redis) is kept there; mount a volume on it
# so spooled records survive a container replacement.
RUN groupadd --system --gid 10001 ackgate \
    && useradd --system --uid 10001 --gid ackgate --home-dir /var/lib/ackgate \
       --no-create-home --shell /usr/sbin/nologin ackgate \
    && install -d -o ackgate -g ackgate -m 0750 /var/lib/ackgate

COPY --from=builder /out/ackgate /usr/local/bin/ackgate

# The failure spool (records waiting for Redis) lives in the data directory; one file per
# gateway process, so replicas must not share the volume.
ENV ACKGATE_LISTEN=0.0.0.0:8080 \
    ACKGATE_LOG_FORMAT=json \
    ACKGATE_FAILURE_SPOOL_PATH=/var/lib/ackgate/ackgate-failures.spool

USER 10001:10001
WORKDIR /var/lib/ackgate
EXPOSE 8080

# Liveness only (/healthz). Readiness (/readyz: Redis and Kafka reachable) is for load balancers
# and orchestrators, not for restarting the container. The port follows ACKGATE_LISTEN.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${ACKGATE_LISTEN##*:}/healthz\" || exit 1"]

# On SIGTERM ackgate stops accepting connections, drains in-flight requests for up to
# --shutdown-grace-ms (ACKGATE_SHUTDOWN_GRACE_MS, default 35000 ms), waits for every delivery
# report, keeps what is still unfinished as failure records and flushes the producer (up to
# 5 s). Give it more than that before SIGKILL: Docker's default `docker stop` timeout is 10 s,
# so use `docker stop -t 50`, compose `stop_grace_period: 50s` (>= 45 s), Kubernetes
# `terminationGracePeriodSeconds: 50`.
STOPSIGNAL SIGTERM

# `serve` refuses to start without authentication: mount an auth file read-only and set
# ACKGATE_AUTH_FILE (make a key with `docker run --rm <image> new-key --name NAME`), or give the
# ACKGATE_JWT_* settings; ACKGATE_NO_AUTH=true serves every caller without credentials.
ENTRYPOINT ["ackgate"]
CMD ["serve"]
