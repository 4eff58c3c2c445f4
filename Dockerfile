# Slim runtime image: the gateway runs as an unprivileged user with a health check.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system gateway && useradd --system --gid gateway --home /srv/gateway gateway \
    && mkdir -p /srv/gateway/var /srv/gateway/contracts && chown -R gateway:gateway /srv/gateway/var
COPY --from=build /install /usr/local
COPY contracts /srv/gateway/contracts
WORKDIR /srv/gateway
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/_gateway/health', timeout=2).status != 200)"]
ENTRYPOINT ["share-gateway"]
CMD ["serve", "--config", "/srv/gateway/gateway.yaml"]
