# Multi-stage build: compile in the Rust image, run on a slim Debian with only the binary,
# its default configuration and CA certificates. Swagger UI's assets are compiled in, so the
# image needs no network at run time beyond the provider and the database.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p arbor \
 && strip target/release/arbor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/arbor --create-home arbor
COPY --from=build /src/target/release/arbor /usr/local/bin/arbor
COPY config /etc/arbor
USER arbor
WORKDIR /var/lib/arbor
ENV ARBOR_CONFIG_DIR=/etc/arbor \
    ARBOR_ENV=production \
    ARBOR__SERVER__HOST=0.0.0.0 \
    ARBOR__SERVER__PORT=8080 \
    ARBOR__LOG__FORMAT=json \
    DATABASE_URL=sqlite:///var/lib/arbor/arbor.db?mode=rwc
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/api/v1/ready || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["arbor"]
CMD ["serve"]
