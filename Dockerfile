# Passerelle: one container running the MLLP listener, the HTTP API and the delivery
# workers. Configure with environment variables (PASSERELLE_FHIR_URL, …) and/or a TOML
# file mounted at /etc/passerelle/passerelle.toml. Data (queue, output folder) in /data.
FROM python:3.11-slim AS build
# The converter's hot modules are compiled with mypyc (the list is in pyproject.toml,
# [tool.passerelle.compile]): about 1.5x the conversion throughput of the pure-Python
# package. A C compiler for this stage only; the running stage gets the built modules.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY converter ./converter
COPY listeners ./listeners
COPY mappings ./mappings
# constraints.txt pins the versions the test suite ran with: a rebuild gets what was
# tested, not whatever major release PyPI has that day. mypyc type-checks what it
# compiles: mypy and the dependencies are installed where the build runs (this stage's
# own site-packages, discarded), then the compiled package and its dependencies go to
# /install (--ignore-installed: all of them, not only what this stage lacks).
RUN pip install --no-cache-dir -c constraints.txt ".[compile]"
RUN PASSERELLE_COMPILE=1 pip install --no-cache-dir -c constraints.txt --no-build-isolation \
    --ignore-installed --prefix=/install .

FROM python:3.11-slim
# /data holds the queue (messages, dead letters) and the bundles: patient data, 0700
# (a named volume takes this mode when first mounted; the service creates its files 0600).
# A fixed, numeric uid/gid (10001): Kubernetes' runAsNonRoot can only verify a numeric USER
# ("image has non-numeric user (passerelle), cannot verify user is non-root"), and a
# bind-mounted /data or a secret's fsGroup needs to know whom to give the files to.
RUN groupadd --system --gid 10001 passerelle \
    && useradd --system --uid 10001 --gid passerelle --home /data passerelle \
    && mkdir -p /data /etc/passerelle && chown passerelle:passerelle /data && chmod 0700 /data
COPY --from=build /install /usr/local
COPY docker/passerelle.toml /etc/passerelle/passerelle.toml
ENV PASSERELLE_DATA_DIR=/data \
    PASSERELLE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2575 8080
# GET /health on the port the service listens on (PASSERELLE_HTTP_PORT or the [http] port
# of the configuration file); also right for `passerelle worker` containers. Docker's
# --timeout bounds the whole command: the interpreter and the configuration (0.2-0.6 s on
# a 2-CPU host busy converting; it imported the converter, 2.4 s, before), then up to
# --timeout 4 for the answer: at 5 s, a check whose answer was slower than ~2.5 s was
# killed and counted as failed before its own timeout (three in a row: unhealthy).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["passerelle", "health", "--config", "/etc/passerelle/passerelle.toml", "--timeout", "4"]
# SIGTERM starts a graceful stop that drains for up to 30 s (MLLP frames get their ACK,
# HTTP requests and deliveries in flight finish): let the runtime wait longer before its
# SIGKILL, `docker run --stop-timeout 40` / compose `stop_grace_period: 40s` /
# Kubernetes `terminationGracePeriodSeconds: 40` (Docker's default is 10 s). The service
# handles SIGTERM itself as PID 1 and reaps its own conversion processes; `--init`
# (tini) is optional.
STOPSIGNAL SIGTERM
ENTRYPOINT ["passerelle", "serve", "--config", "/etc/passerelle/passerelle.toml"]
