# One image for every service (worker, api, sync, archive, retrain, monitor): the command picks
# it. Debian's own python3 (bookworm: 3.11), so deploy/smoke-rootfs.sh can install exactly
# the same into a debootstrap root and prove the image without a Docker engine; the package
# lists below and the script's are held equal by tests/unit/deploy/test_compose.py.
ARG BUILD_PACKAGES="python3 python3-venv python3-pip ca-certificates"
# libgomp1: LightGBM links the system OpenMP runtime; without it the worker dies on import.
ARG RUNTIME_PACKAGES="python3 libgomp1 ca-certificates"
# The services' extras (sync sinks, archive and registry on S3, API) only: the demo's embedded
# broker, Redis and live table stay out. The versions come from requirements/image.txt, the
# lock deploy/update-locks.sh resolves for these extras (hashes checked on install).
ARG EXTRAS="postgres,parquet,s3,webhook,api"

FROM debian:bookworm-slim AS build
ARG BUILD_PACKAGES
ARG EXTRAS
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $BUILD_PACKAGES \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/image.txt ./requirements/image.txt
RUN python3 -m venv /opt/leadscore \
    && /opt/leadscore/bin/pip install --no-cache-dir --require-hashes -r requirements/image.txt
COPY pyproject.toml README.md ./
# leadscore/ holds the package root and links to the four folders beside it.
COPY leadscore ./leadscore
COPY streamer ./streamer
COPY features ./features
COPY model ./model
COPY schemas ./schemas
# The project itself, without resolving anything: every dependency is in the lock above.
RUN /opt/leadscore/bin/pip install --no-cache-dir --no-deps .

FROM debian:bookworm-slim
ARG RUNTIME_PACKAGES
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $RUNTIME_PACKAGES \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --home-dir /app --create-home leadscore \
    && mkdir -p /models && chown leadscore /models
COPY --from=build /opt/leadscore /opt/leadscore
ENV PATH=/opt/leadscore/bin:$PATH \
    LEADSCORE_MODEL_DIR=/models
USER leadscore
WORKDIR /app
EXPOSE 6066 8080
# The worker's liveness; compose and Kubernetes give the other services their own checks.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=3)"]
ENTRYPOINT ["leadscore"]
CMD ["worker"]
