# finkvra: the always-on active-learning service over Fink's ZTF alert stream.
#
#   docker build -t finkvra:0.1.0 .
#   docker run --rm -p 8080:8080 -v finkvra-data:/data --env-file finkvra.env finkvra:0.1.0
#   docker run ... finkvra:0.1.0 --role consumer      # one replica of a consumer group
#   docker run ... --entrypoint mlflow finkvra:0.1.0 server ...   # the MLflow server
#
# No secret is baked in: Kafka credentials, the Redis password and the Lasair token come
# from the environment at run time (FINKVRA_*; see `finkvra config reference`).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/finkvra \
    PATH=/opt/finkvra/bin:$PATH \
    MPLCONFIGDIR=/tmp/matplotlib

# The service's own user (fixed ids, so Kubernetes' runAsNonRoot and fsGroup can name them).
RUN groupadd --system --gid 10001 finkvra \
 && useradd --system --uid 10001 --gid finkvra --home-dir /home/finkvra --create-home \
        --shell /usr/sbin/nologin finkvra \
 && mkdir -p /data \
 && chown finkvra:finkvra /data

WORKDIR /src

# Dependencies first, read from pyproject.toml alone: this layer (about 1 GB) is rebuilt
# only when the dependencies change, not on every change of the source.
COPY pyproject.toml ./
RUN python -m venv "$VIRTUAL_ENV" \
 && python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && pip install --no-cache-dir "setuptools>=68,<81" "wheel>=0.42,<1" \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The source: a small layer on top, without re-resolving any dependency.
COPY README.md ./
COPY finkvra ./finkvra
COPY service ./service
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && rm -rf build ./*.egg-info

ENV FINKVRA_DATA_DIR=/data \
    FINKVRA_HTTP_HOST=0.0.0.0 \
    FINKVRA_HTTP_PORT=8080 \
    FINKVRA_LOG_FORMAT=json
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# /healthz answers 200 while the main loop makes progress, 503 when it is wedged.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FINKVRA_HTTP_PORT', '8080'), timeout=4)"]

# SIGTERM (docker stop, Kubernetes) finishes and commits the batch in hand, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["finkvra", "run"]
CMD ["--role", "all"]
