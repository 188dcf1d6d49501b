# Multi-stage build of posts-api.
# - chef: the Rust toolchain with cargo-chef.
# - planner: reduces the whole workspace to a recipe (manifests, lock file, target stubs)
#   with `cargo chef prepare`, so no stage names the workspace members by hand.
# - build: builds the dependencies from the recipe in a layer of their own, reused until a
#   manifest or the lock file changes, then the service.
# - runtime: Debian slim with CA certificates, the binary and the non-development config,
#   run as an unprivileged user. No compiler, no shell tools beyond the base image.
# Builds with the classic builder too (no BuildKit-only syntax).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package api --bin posts-api
COPY . .
RUN cargo build --release --locked --package api --bin posts-api

FROM debian:bookworm-slim AS runtime
# Debian's own security updates replace the pinned versions, so packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin posts-api
WORKDIR /app
COPY --from=build /src/target/release/posts-api /usr/local/bin/posts-api
# Only what production reads: config/local.toml holds the development token secret.
COPY config/default.toml config/production.toml config/
# MALLOC_MMAP_THRESHOLD_: glibc serves allocations of 1 MiB and more (upload part
# buffers) with mmap and gives them back when freed. Left dynamic, the threshold rises
# past the part size after the first free and freed parts stay in the heap: a 1 GiB
# upload then held 34-66 MiB over idle instead of 26 (BENCHMARKS.md, resumable uploads).
# MALLOC_TRIM_THRESHOLD_: fixing the mmap threshold also fixes the heap's trim threshold
# at 128 KiB, so every freed download chunk (up to ~0.5 MiB) shrank the heap and the
# next one faulted its pages in again: 2.5x the CPU per downloaded byte. The heap keeps
# up to 16 MiB of free space at its top instead.
ENV APP_ENV=production \
    APP_CONFIG_DIR=/app/config \
    APP__SERVER__HOST=0.0.0.0 \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    MALLOC_TRIM_THRESHOLD_=16777216
USER 10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["posts-api", "healthcheck"]
ENTRYPOINT ["posts-api"]
CMD ["serve"]
