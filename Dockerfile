# syntax=docker/dockerfile:1
# Multi-stage: build a virtual environment with dinit and its dependencies (bytecode compiled, so
# start-up does not pay for compiling), then copy only that venv into a slim runtime image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dinit ./dinit
RUN python -m venv /opt/dinit \
 && /opt/dinit/bin/pip install --no-cache-dir . \
 && /opt/dinit/bin/python -m compileall -q /opt/dinit/lib

FROM python:3.11-slim
COPY --from=build /opt/dinit /opt/dinit
# The bundled demo services; real images replace /etc/service with their own service directories.
COPY etc-service-examples /etc/service
ENV PATH=/opt/dinit/bin:$PATH
# Readiness (§13): the file exists exactly while every service is ready; no network or client needed.
ENV DINIT_READY_FILE=/run/dinit.ready
HEALTHCHECK --interval=5s --start-period=60s CMD ["test", "-f", "/run/dinit.ready"]
ENTRYPOINT ["/opt/dinit/bin/dinit"]
