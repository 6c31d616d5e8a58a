# agent-runner worker image.
#
# Two stages: `build` installs the runtime dependencies from the hashed lock and builds the
# project's own wheel; `runtime` copies only the finished virtualenv and `main.py` onto a slim
# Python base and runs as an unprivileged numeric user. Every third-party Python file that reaches
# the image is pinned by hash in a lock; nothing is resolved at build time. The one system package
# added, bubblewrap (sandbox isolation), comes from the base image's own Debian release through
# apt's signed indexes.
#
#   docker build -t agent-runner:local .
#   docker run --init --rm -p 8080:8080 -e HEALTH_HOST=0.0.0.0 agent-runner:local
#
# Pin PYTHON_IMAGE by digest in CI (python:3.11-slim-bookworm@sha256:...) for reproducible builds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, so editing the code does not invalidate this layer. `--only-binary` keeps
# pip from building any sdist (whose build requirements would not be hash-checked); `--no-deps`
# because the lock is complete.
COPY requirements.lock ./
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: -r requirements.lock

# The build backend comes from the dev lock, hashed like everything else, into a throwaway venv:
# only hatchling and its own dependencies (the `# via hatchling` entries) are cut out of the lock.
COPY requirements-dev.lock ./
RUN awk 'BEGIN { n = split("hatchling packaging pathspec pluggy tomlkit trove-classifiers", w, " "); \
             for (i = 1; i <= n; i++) want[w[i]] = 1 } \
         /^[a-z0-9]/ { split($1, p, "=="); keep = (p[1] in want) } \
         keep' requirements-dev.lock > build-tools.lock \
    && python -m venv /buildtools \
    && /buildtools/bin/pip install --no-cache-dir --require-hashes --no-deps \
        --only-binary=:all: -r build-tools.lock

COPY pyproject.toml README.md ./
COPY worker ./worker
COPY stigmer_stub ./stigmer_stub
COPY stigmer_cli ./stigmer_cli
COPY devstack ./devstack
COPY apis/stubs/python ./apis/stubs/python
# Our own wheel has no third-party content of its own: `--no-deps` installs just it.
RUN /buildtools/bin/python -m pip wheel --no-cache-dir --no-deps --no-build-isolation \
        --wheel-dir /tmp/wheels . \
    && /venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/agent_runner-*.whl


FROM ${PYTHON_IMAGE} AS runtime

# bubblewrap isolates each sandbox command (private /proc, no network, only its own workspace;
# docs/sandboxes.md). It needs unprivileged user namespaces, which the pod allows (see the
# securityContext in _kustomize/base); without them the worker refuses to start where
# SANDBOX_ISOLATION=required. `setpriv` (util-linux, in the base image) drops capabilities when
# commands run unisolated.
# Unpinned on purpose: the release's security updates replace a pinned version in the archive,
# which would break the build instead of patching it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID (10001, matching `runAsUser` in _kustomize/base) so Kubernetes
# `runAsNonRoot` can verify it without resolving names.
RUN groupadd --system --gid 10001 runner \
    && useradd --system --uid 10001 --gid 10001 --home-dir /workspace --no-create-home \
        --shell /usr/sbin/nologin runner \
    && mkdir -p /workspace/sandboxes /workspace/data \
    && chown -R 10001:10001 /workspace

COPY --from=build /venv /venv
COPY main.py /app/main.py

# Writable state lives under /workspace (a volume; an emptyDir in Kubernetes), so the root
# filesystem can be mounted read-only. The health server listens on all interfaces inside the
# container because probes arrive on the pod IP.
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/workspace \
    SANDBOX_ROOT_DIR=/workspace/sandboxes \
    STIGMER_AGENT_RUNNER_DATA_DIR=/workspace/data \
    LOG_FORMAT=json \
    HEALTH_HOST=0.0.0.0 \
    HEALTH_PORT=8080

VOLUME ["/workspace"]
WORKDIR /workspace
USER 10001:10001
EXPOSE 8080

# Readiness, not liveness: an unhealthy container here means "not polling Temporal", which is
# what an operator looking at `docker ps` wants to know. Standard library only (no curl in slim);
# any answer but 200 (a 503 while not ready) or no answer at all exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import http.client as h, os; c = h.HTTPConnection('127.0.0.1', int(os.environ.get('HEALTH_PORT', '8080')), timeout=4); c.request('GET', '/readyz'); raise SystemExit(c.getresponse().status != 200)"]

# The worker handles SIGTERM itself (graceful drain). Python as PID 1 does not reap orphaned
# sandbox grandchildren: run with `docker run --init`; the Kubernetes Deployment sets
# `shareProcessNamespace` so the pod's pause process does it.
ENTRYPOINT ["python", "/app/main.py"]
