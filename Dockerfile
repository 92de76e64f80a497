# Build with the Rust toolchain, run on a small Debian image with CA certificates.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin notifier

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/notifier --create-home notifier
COPY --from=build /src/target/release/notifier /usr/local/bin/notifier
COPY config/notifier.toml /etc/notifier/notifier.toml
ENV NOTIFIER_CONFIG=/etc/notifier/notifier.toml
USER notifier
WORKDIR /var/lib/notifier
STOPSIGNAL SIGTERM
ENTRYPOINT ["notifier"]
CMD ["run"]
