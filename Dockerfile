# Slim runtime image: the gateway runs as an unprivileged user with a health check.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A numeric user: Kubernetes' runAsNonRoot can only verify a uid, not a name.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --home /srv/gateway gateway \
    && mkdir -p /srv/gateway/var /srv/gateway/contracts && chown -R 10001:10001 /srv/gateway/var
COPY --from=build /install /usr/local
COPY contracts /srv/gateway/contracts
WORKDIR /srv/gateway
USER 10001:10001
EXPOSE 8080
# Where the settings `serve` reads below put the gateway (gateway.yaml's listen, then the
# SHARE_GATEWAY_* variables); the probe gives up after its own 2 s, before Docker's 3 s. Failures
# in the first 2 minutes do not count, as with the README pod's startup probe: a start reads the
# share log back.
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["share-gateway", "health", "--config", "/srv/gateway/gateway.yaml"]
ENTRYPOINT ["share-gateway"]
# The settings are mounted at /srv/gateway/gateway.yaml; relative paths in it (contracts,
# var/share-log.sqlite) are then under /srv/gateway, where the image and the README's pod put them.
CMD ["serve", "--config", "/srv/gateway/gateway.yaml"]
