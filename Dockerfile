# ferricorn in a container (README "Running a fleet"): a multi-stage build. The first stage
# builds ferricorn's wheel with maturin for the image's own CPython; the second installs it
# into a plain Python image with the app, and runs ferricorn as PID 1 (it reaps the processes
# the app orphans, and drains on SIGTERM: `docker stop`, Kubernetes, ECS).
#
#   docker build -t myapp .
#   docker run --rm -p 8000:8000 -p 9100:9100 myapp
#   docker run --rm -p 8000:8000 -e WEB_CONCURRENCY=4 myapp      # the same env vars as Gunicorn
#
# Replace the app below with yours (COPY your code, pip install its requirements). It binds
# 0.0.0.0:$PORT (ferricorn's default when PORT is set); for a unix socket shared with a proxy
# in the same pod, set `--bind unix:/run/app/socket` and mount /run/app.
ARG PYTHON_VERSION=3.11
ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-bookworm AS rust

# ---- build: the wheel, for exactly the CPython of the final image -----------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir 'maturin>=1.9,<2'
WORKDIR /src
COPY . .
RUN maturin build --release --interpreter python3 --out /wheels

# ---- run: the app's image --------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --system --no-create-home --uid 10001 app
# The app (here the bundled example).
COPY examples/hello.py /srv/app/hello.py
WORKDIR /srv/app
USER app
ENV PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000 9100
# What `docker stop` sends: ferricorn's graceful stop (the health path answers 503 for
# --drain-delay seconds, then in-flight requests finish within --graceful-timeout). Give
# `docker stop -t` (or terminationGracePeriodSeconds) at least drain delay + graceful timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]
CMD ["ferricorn", "--health-path", "/healthz", "--drain-delay", "5", "--graceful-timeout", "20", \
     "--metrics-bind", "0.0.0.0:9100", "--log-format", "json", "--access-log-format", "json", \
     "hello:app"]
