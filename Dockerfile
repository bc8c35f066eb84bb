# The poisonsim image: the `poisonsim` command with the Kafka extra (no torch).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba
COPY pyproject.toml README.md ./
COPY simulator simulator
COPY services services
COPY producers producers
COPY consumers consumers
RUN pip install --no-cache-dir '.[kafka]'
COPY scenarios scenarios
RUN useradd --create-home poisonsim && mkdir -p /state && chown poisonsim /state
USER poisonsim
ENTRYPOINT ["poisonsim"]
CMD ["--help"]
