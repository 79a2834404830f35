# syntax=docker/dockerfile:1
# One image for the API, the migrations and the workers of the IRED-DCD lab service.
#
#   docker build -t ired-dcd .                                  # CUDA 12.4 torch (GPU workers)
#   docker build --build-arg TORCH_VARIANT=cpu -t ired-dcd .    # CPU-only torch, a much smaller image
#
# The NVIDIA driver comes from the host (NVIDIA container toolkit); the CUDA libraries come with torch.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH_VARIANT=cu124
ARG TORCH_VERSION=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IRED_DATA_DIR=/data

RUN useradd --create-home --uid 10001 ired && mkdir -p /data && chown ired:ired /data
WORKDIR /app

# 1. torch alone: the largest layer, rebuilt only when the variant or version changes
RUN pip install "torch${TORCH_VERSION:+==${TORCH_VERSION}}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

# 2. the project's dependencies, read from pyproject.toml: rebuilt only when that file changes
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 3. the code (editable, so configs/ and migrations/ are found beside the packages)
COPY . .
RUN pip install --no-deps -e . && chown -R ired:ired /app

USER ired
EXPOSE 8000
VOLUME ["/data"]
CMD ["ired-dcd", "serve", "--host", "0.0.0.0", "--port", "8000"]
