# The odigos image: the one binary (control plane, collectors, odiglet and their supervisors)
# with the C runtime it links and CA roots, nothing else.
#
#   docker build -t REGISTRY/odigos:TAG . && docker push REGISTRY/odigos:TAG
#
# Without a Docker engine, tests/k8s/build-image.sh assembles the same layers from a built
# binary and this machine's files.

FROM rust:1-bookworm AS build
# clang compiles odiglet's eBPF programs; the UI is prebuilt in ui/dist.
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p odigos && strip target/release/odigos

# glibc, libgcc and CA roots, as the binary needs them.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/odigos /usr/local/bin/odigos
ENTRYPOINT ["/usr/local/bin/odigos"]
