# The trustmap agent image, for those who build with Docker or BuildKit. Build from the
# repository root:
#   docker build -t trustmap:0.1.0 .
# Without a container engine, `cargo xtask image` builds the same image reproducibly, with an
# SBOM (docs/deploy.md#the-image); that is the recipe the tests run.
# The builder installs only the eBPF toolchain (`cargo xtask setup --build`: nightly rust-src and
# bpf-linker built against the toolchain's libLLVM), not the test stack, then builds the agent,
# whose build script compiles and embeds the eBPF programs.

FROM rust:1.95-bookworm AS builder
ENV DEBIAN_FRONTEND=noninteractive
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN cargo xtask setup --build \
 && cargo build --release --locked -p trustmap --bin trustmap \
 && cp target/release/trustmap /usr/local/bin/trustmap

FROM debian:bookworm-slim
# iproute2 for `tc` (clsact attachment on kernels without TCX); CA certificates for the API server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/trustmap /usr/local/bin/trustmap
ENTRYPOINT ["/usr/local/bin/trustmap"]
CMD ["--help"]
