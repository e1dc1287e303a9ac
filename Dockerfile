# syntax=docker/dockerfile:1
# Gelombang: one image for the queue service and the sample origin (`gelombang serve`,
# `gelombang origin`), and a `loadtest` stage that adds Locust for the locust master/workers.
#
#   docker build -t gelombang:0.1.0 .                      # service image
#   docker build --target loadtest -t gelombang-loadtest:0.1.0 .

FROM python:3.11.10-slim-bookworm AS service

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid so a signing key mounted from the host can be made readable by
# exactly this user (see docs/deploy.md).
RUN groupadd --system --gid 10001 gelombang \
    && useradd --system --uid 10001 --gid gelombang --home-dir /home/gelombang \
       --create-home --shell /usr/sbin/nologin gelombang

WORKDIR /src
# The project and its dependencies exactly as pyproject.toml declares them.
COPY pyproject.toml README.md ./
COPY gelombang ./gelombang
COPY gelombang_harness ./gelombang_harness
COPY gelombang_origin ./gelombang_origin
COPY queue_service ./queue_service
COPY simulator ./simulator
COPY loadtests ./loadtests
RUN pip install . && rm -rf /src/build

# Runtime state (the embedded Redis is never used here: compose passes --redis-url).
RUN mkdir -p /var/lib/gelombang /etc/gelombang \
    && chown gelombang:gelombang /var/lib/gelombang
WORKDIR /var/lib/gelombang
ENV GELOMBANG_STATE_DIR=/var/lib/gelombang

USER gelombang:gelombang
EXPOSE 8080
ENTRYPOINT ["gelombang"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]

# Locust master and workers: the same code plus the `loadtest` extra (locust).
FROM service AS loadtest
USER root
WORKDIR /src
RUN pip install ".[loadtest]" && rm -rf /src/build
# `locust -f loadtests/locustfile.py` resolves against the source tree copied above.
USER gelombang:gelombang
EXPOSE 8089 5557
ENTRYPOINT ["locust"]
CMD ["--help"]
