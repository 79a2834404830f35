# syntax=docker/dockerfile:1
# One image for the API, the migrations and the workers of the IRED-DCD lab service.
#
#   docker build -t ired-dcd .                                  # CUDA 12.4 torch (GPU workers)
#   docker build --build-arg TORCH_VARIANT=cpu -t ired-dcd .    # CPU-only torch, a much smaller image
#
# Where the defaults cannot be reached (docs/service.md, "Containers"):
#   --build-arg BASE_IMAGE=...        any image with Python 3.11 and pip on PATH and `useradd`
#   --build-arg TORCH_INDEX_URL=...   a mirror of the PyTorch wheel index
#   --build-arg TORCH_FROM_WHEELS=1   install torch from the wheel put in ./wheels (its dependencies from PyPI)
#   --secret id=ca_bundle,src=FILE    a CA bundle for pip (a TLS-intercepting proxy); never stored
#   --build-arg CODE_VERSION=$(git rev-parse --short=12 HEAD)   the commit that runs record
#
# The NVIDIA driver comes from the host (NVIDIA container toolkit); the CUDA libraries come with torch.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VARIANT=cu124
ARG TORCH_VERSION=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ARG TORCH_FROM_WHEELS=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IRED_DATA_DIR=/data

RUN useradd --create-home --uid 10001 ired && mkdir -p /data && chown ired:ired /data
WORKDIR /app

# pip trusts the CA bundle of the build secret `ca_bundle` when one is given
COPY docker/pip-install.sh /usr/local/bin/pip-install

# 1. torch alone: the largest layer, rebuilt only when the variant, version or wheels change
RUN --mount=type=secret,id=ca_bundle --mount=type=bind,source=wheels,target=/wheels \
    if [ -n "$TORCH_FROM_WHEELS" ]; then \
        pip-install --no-index --no-deps --find-links /wheels "torch${TORCH_VERSION:+==${TORCH_VERSION}}" \
        && pip-install "torch${TORCH_VERSION:+==${TORCH_VERSION}}"; \
    else \
        pip-install "torch${TORCH_VERSION:+==${TORCH_VERSION}}" --index-url "$TORCH_INDEX_URL"; \
    fi

# 2. the project's dependencies, read from pyproject.toml: rebuilt only when that file changes
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca_bundle \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip-install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 3. the code (editable, so configs/ and migrations/ are found beside the packages); root owns it,
#    the service only writes to /data
COPY README.md alembic.ini ./
COPY configs ./configs
COPY migrations ./migrations
COPY ired_core ./ired_core
COPY ired_dcd ./ired_dcd
COPY api ./api
COPY worker ./worker
RUN --mount=type=secret,id=ca_bundle pip-install --no-deps -e . && python -m compileall -q /app

# recorded with every run's results; last, so that a new commit rebuilds no other layer. The RUN reads
# the argument: buildah keys a cached RUN by the build arguments but an ENV by its text only, so without
# it a commit that changed no copied file kept the previous commit's version
ARG CODE_VERSION=
RUN echo "code version: ${CODE_VERSION:-unknown}"
ENV IRED_CODE_VERSION=${CODE_VERSION}

USER ired
EXPOSE 8000
VOLUME ["/data"]
CMD ["ired-dcd", "serve", "--host", "0.0.0.0", "--port", "8000"]
