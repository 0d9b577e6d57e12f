# Passerelle: one container running the MLLP listener, the HTTP API and the delivery
# workers. Configure with environment variables (PASSERELLE_FHIR_URL, …) and/or a TOML
# file mounted at /etc/passerelle/passerelle.toml. Data (queue, output folder) in /data.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY converter ./converter
COPY listeners ./listeners
COPY mappings ./mappings
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --system passerelle && useradd --system --gid passerelle --home /data passerelle \
    && mkdir -p /data /etc/passerelle && chown passerelle:passerelle /data
COPY --from=build /install /usr/local
COPY docker/passerelle.toml /etc/passerelle/passerelle.toml
ENV PASSERELLE_DATA_DIR=/data \
    PASSERELLE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER passerelle
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2575 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["passerelle", "serve", "--config", "/etc/passerelle/passerelle.toml"]
