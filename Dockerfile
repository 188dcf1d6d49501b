# syntax=docker/dockerfile:1
# Multi-stage build of posts-api: dependencies are built in their own cached layer, the
# runtime image holds the binary, its config files and CA certificates, and runs as non-root.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Build dependencies first against stub sources so this layer is reused until the
# manifests or the lock file change.
COPY Cargo.toml Cargo.lock ./
COPY crates/aws-creds/Cargo.toml crates/aws-creds/
COPY crates/storage/Cargo.toml crates/storage/
COPY crates/api/Cargo.toml crates/api/
RUN for crate in aws-creds storage api; do mkdir -p crates/$crate/src && echo '' > crates/$crate/src/lib.rs; done \
 && echo 'fn main() {}' > crates/api/src/main.rs \
 && mkdir -p tests/api && echo '' > tests/api/main.rs \
 && cargo build --release --locked --bin posts-api \
 && rm -rf crates/*/src target/release/.fingerprint/api-* target/release/.fingerprint/storage-* target/release/.fingerprint/aws-creds-*
COPY config config
COPY migrations migrations
COPY crates crates
RUN cargo build --release --locked --bin posts-api

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home posts-api
WORKDIR /app
COPY --from=build /src/target/release/posts-api /usr/local/bin/posts-api
COPY config config
ENV APP_ENV=production \
    APP_CONFIG_DIR=/app/config \
    APP__SERVER__HOST=0.0.0.0
USER 10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["posts-api", "healthcheck"]
ENTRYPOINT ["posts-api"]
CMD ["serve"]
