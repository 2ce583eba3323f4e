# One image for every entry point: `starkmatter api|gateway|orders|ingest|news|worker|beat|
# archive|alerts` and the operator (`python -m starkmatter_operator`).
# Multi-stage: dependencies are built in a full image, only the virtualenv is copied out.

FROM python:3.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/starkmatter
COPY pyproject.toml constraints.txt README.md ./
COPY workloads ./workloads
COPY operator ./operator
RUN /opt/starkmatter/bin/pip install --upgrade pip==26.3 \
 && /opt/starkmatter/bin/pip install -c constraints.txt .

FROM python:3.13-slim-bookworm
# A fixed non-root uid: the chart's securityContext (runAsUser 10001) matches it.
RUN groupadd --gid 10001 starkmatter \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin starkmatter
COPY --from=build /opt/starkmatter /opt/starkmatter
ENV PATH=/opt/starkmatter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STARKMATTER_ENV=prod
USER 10001:10001
EXPOSE 8000 8001 9100
ENTRYPOINT ["starkmatter"]
CMD ["api"]
