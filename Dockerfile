# The hepai-server image: Python 3.11 slim, the package and its pinned dependencies in a venv,
# run as an unprivileged user. Two targets:
#
#   docker build -t hepai-server .                        # the gateway and the CLI
#   docker build --target tools -t hepai-server:tools .   # + the built-in tools (markitdown,
#                                                         #   mineru on docvortex, embeddings
#                                                         #   and rerank on the CPU)
#
# Every container runs one of deploy/bin's commands (gateway, migrate, builtin-key,
# builtin-worker NAME): the same ones tests/topology.py runs to build deploy/compose.yaml's
# topology on one machine, so what the tests exercise is what the image runs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/hepai
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# The versions come from constraints.txt, the same pins the tests run on.
RUN /opt/hepai/bin/pip install --no-compile -c constraints.txt '.[s3]'

FROM build AS build-tools
# torch's CPU build first (the default one brings CUDA, gigabytes the CPU tools do not use).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN /opt/hepai/bin/pip install --no-compile --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/hepai/bin/pip install --no-compile -c constraints.txt '.[s3,tools,vectors]'

# What both images share: the unprivileged user, the data directory, the environment.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/hepai/bin:$PATH \
    HEPAI_SERVER_DATA_DIR=/var/lib/hepai-server \
    HEPAI_SERVER_LOG_FORMAT=json
RUN groupadd --system --gid 10001 hepai \
    && useradd --system --uid 10001 --gid hepai --no-create-home --shell /usr/sbin/nologin hepai \
    && mkdir -p /var/lib/hepai-server/tasks /run/hepai \
    && chown -R 10001:10001 /var/lib/hepai-server /run/hepai
WORKDIR /var/lib/hepai-server

FROM runtime AS tools
# OCR for the document tools: Tesseract with its Chinese and English data (Debian's current
# package of the base image's release).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-tools /opt/hepai /opt/hepai
COPY deploy/bin/ /opt/hepai/bin/
USER 10001:10001
# A worker is told the tool it serves: `builtin-worker markitdown` (see deploy/compose.yaml).
CMD ["builtin-worker", "markitdown"]

# The default target, last: the gateway.
FROM runtime AS gateway
COPY --from=build /opt/hepai /opt/hepai
COPY deploy/bin/ /opt/hepai/bin/
USER 10001:10001
EXPOSE 4260
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4260/health/live', timeout=2)"]
CMD ["gateway"]
