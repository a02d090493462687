# The azaion-loader image: the operator (`azaion-operator`) and the toolkit
# (`loader`) in one image, with the Docker CLI and containerd's `ctr` for the
# ImageUnlock load step.
#
# Build it with `scripts/build-image`: it stages a build context holding a
# wheelhouse (`wheels/`: the project's wheel, its dependencies for the
# `operator` extra, and a pip wheel used only while building), so `docker build`
# needs no network. The build context layout is:
#
#   wheels/deps/*.whl      the dependencies and pip's wheel
#   wheels/project/*.whl   the project's wheel
#
# Build arguments:
#   BASE_IMAGE        a Python 3.11 image on glibc (Debian); its python3 runs the
#                     operator and the toolkit. Default: the official slim image;
#                     `scripts/build-image` passes `azaion-loader-base:bookworm`,
#                     made locally by `scripts/base-image` where no registry is reachable.
#   RUNTIME_CLI_IMAGE an image holding containerd's client at /usr/local/bin/ctr
#                     (and the Docker CLI at /usr/local/bin/docker);
#                     `scripts/build-image` makes one from Debian's containerd and
#                     docker.io packages.
#   DOCKER_CLI_IMAGE  where the Docker CLI comes from: RUNTIME_CLI_IMAGE unless
#                     set, e.g. docker:28-cli for engines that need API 1.44+.
#                     Only the two client binaries are copied: no dockerd,
#                     containerd or runc in the image.
#   VERSION, REVISION OCI labels.
#
# No ENTRYPOINT: the chart runs `azaion-operator`, the Jobs run `loader ...`.

ARG BASE_IMAGE=python:3.11-slim
ARG RUNTIME_CLI_IMAGE=azaion-loader-runtime-cli:local
ARG DOCKER_CLI_IMAGE=${RUNTIME_CLI_IMAGE}

FROM ${RUNTIME_CLI_IMAGE} AS runtime-cli
FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM ${BASE_IMAGE} AS builder
# pip runs from its own wheel and is never installed: the venv holds only the
# project and its runtime dependencies. Byte code is compiled here, checked by
# hash rather than by file times (which image layers need not keep), because
# the root filesystem is read-only at run time. The dependencies come first, in
# their own layers, so a change to the project alone rebuilds only the last two
# steps (under emulation, for another platform, that is the difference between
# seconds and minutes).
COPY wheels/deps/ /tmp/wheels/
RUN set -eux; \
    python3 -m venv --without-pip /opt/azaion-loader; \
    pip_wheel="$(ls /tmp/wheels/pip-*.whl)"; \
    /opt/azaion-loader/bin/python3 "$pip_wheel/pip" install \
        --no-index --no-deps --no-cache-dir \
        --disable-pip-version-check --no-warn-script-location \
        $(ls /tmp/wheels/*.whl | grep -v '/pip-'); \
    /opt/azaion-loader/bin/python3 -m compileall -q -f -j 0 \
        --invalidation-mode unchecked-hash /opt/azaion-loader/lib >/dev/null
COPY wheels/project/ /tmp/project/
RUN set -eux; \
    pip_wheel="$(ls /tmp/wheels/pip-*.whl)"; \
    /opt/azaion-loader/bin/python3 "$pip_wheel/pip" install \
        --no-index --find-links /tmp/wheels --no-cache-dir \
        --disable-pip-version-check --no-warn-script-location \
        "$(ls /tmp/project/azaion_loader-*.whl)[operator]"; \
    site="$(/opt/azaion-loader/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    /opt/azaion-loader/bin/python3 -m compileall -q -f -j 0 \
        --invalidation-mode unchecked-hash "$site/azaion_loader" "$site/azaion_operator" >/dev/null; \
    /opt/azaion-loader/bin/loader --help >/dev/null; \
    /opt/azaion-loader/bin/python3 -c "import azaion_operator, kopf, kubernetes"
# A fixed non-root user; the chart and the Jobs run as uid/gid 10001 too. Made
# here and copied: the final stage has no RUN step, so a build for another
# platform (`--platform linux/arm64`, emulated) runs nothing there, and the
# classic builder keeps the base image's platform in the result (it records
# the host's platform on steps that run a container).
RUN set -eux; \
    groupadd --gid 10001 loader; \
    useradd --uid 10001 --gid 10001 --home-dir /home/loader --create-home \
        --shell /usr/sbin/nologin loader

FROM ${BASE_IMAGE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="azaion-loader" \
      org.opencontainers.image.description="Kubernetes operator and init-container toolkit that delivers encrypted resources and encrypted Docker image archives to edge clusters" \
      org.opencontainers.image.source="https://github.com/azaion/azaion-loader" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY --from=builder /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/
COPY --from=builder --chown=10001:10001 /home/loader /home/loader
COPY --from=runtime-cli /usr/local/bin/ctr /usr/local/bin/ctr
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=builder /opt/azaion-loader /opt/azaion-loader

ENV PATH="/opt/azaion-loader/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/loader

USER 10001:10001
WORKDIR /home/loader
CMD ["loader", "--help"]
