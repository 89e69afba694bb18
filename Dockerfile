# deploybot's image: `deploybot` and `deploy`, git for the command deployer's
# checkouts, nothing else. Build: `docker build -t quay.io/packit/deploybot .`
#
# Stage 1 builds with the same command CI's tests build with, in release mode
# and from the committed Cargo.lock.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin deploybot --bin deploy

# Stage 2: a small runtime. OpenShift runs it as an arbitrary UID in group 0,
# so everything it writes is group-0 writable; elsewhere it runs as 10001.
FROM docker.io/library/debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/deploybot/work \
 && chgrp -R 0 /var/lib/deploybot \
 && chmod -R g=u /var/lib/deploybot
COPY --from=build /src/target/release/deploybot /src/target/release/deploy /usr/local/bin/
ENV HOME=/var/lib/deploybot \
    DEPLOYBOT_LISTEN=0.0.0.0:8080 \
    DEPLOYBOT_LOG_FORMAT=json
WORKDIR /var/lib/deploybot
USER 10001
EXPOSE 8080
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/base/deployment.yaml).
ENTRYPOINT ["/usr/local/bin/deploybot"]
CMD ["serve"]

# Stage 3 (`--target packit`): what Packit's command deployer runs —
# `make deploy` in packit/deployment, which uses ansible and `oc`.
FROM runtime AS packit
USER 0
RUN apt-get update \
 && apt-get install -y --no-install-recommends make ansible python3-kubernetes curl \
 && curl -fsSL https://mirror.openshift.com/pub/openshift-v4/clients/ocp/stable/openshift-client-linux.tar.gz \
    | tar -xz -C /usr/local/bin oc \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
USER 10001
