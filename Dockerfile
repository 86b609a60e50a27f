# syntax=docker/dockerfile:1
# The one image of every rentalstream service; compose.yaml chooses the command
# (`rentalstream scorer`, `bridge`, `monitor`, `dashboard`, `init`, and `mlflow server`).

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/rentalstream
ENV PATH=/opt/rentalstream/bin:$PATH
WORKDIR /src
# The dependencies alone first, at the versions and hashes of requirements.lock (the
# same lock `make` installs, less the test tools): this layer (most of the image) is
# rebuilt only when they change, not on every change of the code.
COPY requirements.lock ./
RUN pip install --require-hashes --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY runtime ./runtime
COPY producers ./producers
COPY scorer ./scorer
COPY monitor ./monitor
COPY training ./training
COPY answers ./answers
COPY dashboard ./dashboard
COPY rentalstream ./rentalstream
RUN pip install --no-deps .

FROM python:3.11-slim-bookworm
# LightGBM's wheel needs the OpenMP runtime, which the slim image leaves out.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# The volumes' mount points, owned by the service user so that new volumes are too.
RUN useradd --create-home --uid 10001 rentalstream \
    && mkdir -p /var/lib/rentalstream/data /var/lib/rentalstream/mlflow-artifacts \
    && chown -R rentalstream /var/lib/rentalstream
COPY --from=build /opt/rentalstream /opt/rentalstream
ENV PATH=/opt/rentalstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RENTALSTREAM_DATA_DIR=/var/lib/rentalstream/data \
    RENTALSTREAM_HOME=/home/rentalstream/.rentalstream
USER 10001
WORKDIR /home/rentalstream
EXPOSE 8090 8091 8092 8093
CMD ["rentalstream", "--help"]
