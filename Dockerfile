# The notifier, built with the Rust toolchain and run on a small Debian image with CA certificates,
# as a non-root user. The FCM stand-in (crates/stand-in) is built alongside but lives in an image of
# its own, target `stand-in` (the compose `stand-in` profile): the product image (the last stage,
# the default target) carries no test server and no throwaway key.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p notifier -p notifier-stand-in

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 notifier \
 && useradd --system --uid 10001 --gid notifier --home-dir /var/lib/notifier --create-home notifier

FROM runtime AS stand-in
COPY --from=build /src/target/release/notifier-stand-in /usr/local/bin/
USER notifier
WORKDIR /var/lib/notifier
EXPOSE 8443 8080
ENTRYPOINT ["notifier-stand-in"]

FROM runtime AS notifier
COPY --from=build /src/target/release/notifier /usr/local/bin/
COPY config/notifier.toml /etc/notifier/notifier.toml
# The allocator is built never to ask for transparent huge pages (a 2 MiB page is resident whole,
# however little of it is used: 42 against 27 MiB at a million devices); MIMALLOC_ALLOW_THP=0
# also opts the process out on hosts that give them unasked (THP "always").
ENV NOTIFIER_CONFIG=/etc/notifier/notifier.toml \
    NOTIFIER_HTTP_ADDR=0.0.0.0:9464 \
    LOG_FORMAT=json \
    MIMALLOC_ALLOW_THP=0
# User and group 10001, the ones deploy/kubernetes runs as (runAsNonRoot needs a numeric user).
USER 10001:10001
# The root filesystem can be read-only (`docker run --read-only --tmpfs /tmp`; Kubernetes:
# readOnlyRootFilesystem with an emptyDir at /tmp). The notifier writes nothing with PostgreSQL or
# MySQL. With SQLite it writes the database file and its -wal and -shm beside it (the default
# sqlite://notifier.db is relative to this working directory) and SQLite's temporary files (in
# TMPDIR, /tmp): all under /tmp, gone with the container. Keep a SQLite database elsewhere with
# DATABASE_URL=sqlite:///PATH on a volume.
WORKDIR /tmp
EXPOSE 9464
# The notifier checks itself: the image needs no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["notifier", "healthcheck"]
# SIGTERM starts the drain: in-flight pushes finish, the event's checkpoint is stored.
STOPSIGNAL SIGTERM
ENTRYPOINT ["notifier"]
CMD ["run"]
