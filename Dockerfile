# syntax=docker/dockerfile:1
# Multi-stage: build a virtual environment with dinit and its dependencies (bytecode compiled, so
# start-up does not pay for compiling), then copy only that venv into a slim runtime image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dinit ./dinit
COPY bin ./bin
# setuptools goes once dinit is installed: its .pth file is imported at every start of dinit.
RUN python -m venv /opt/dinit \
 && /opt/dinit/bin/pip install --no-cache-dir . \
 && /opt/dinit/bin/pip uninstall --yes --quiet setuptools \
 && /opt/dinit/bin/python -m compileall -q /opt/dinit/lib

FROM python:3.11-slim
COPY --from=build /opt/dinit /opt/dinit
# The bundled demo services; real images replace /etc/service with their own service directories.
COPY etc-service-examples /etc/service
ENV PATH=/opt/dinit/bin:$PATH
# Readiness (§13): `dinit check` asks dinit over its control socket (the default path) and exits 0
# only while the container is ready (every service is). The ready file says the same without a client
# (for exec probes that only have `test`: CMD ["test", "-f", "/run/dinit.ready"]).
ENV DINIT_READY_FILE=/run/dinit.ready
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD ["/opt/dinit/bin/dinit", "check"]
ENTRYPOINT ["/opt/dinit/bin/dinit"]
