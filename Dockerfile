# The poisonsim image: the `poisonsim` command with the Kafka and neural extras (torch, CPU build, pinned).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba
COPY pyproject.toml README.md LICENSE ./
COPY poisonsim poisonsim
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir '.[kafka,neural]'
COPY scenarios scenarios
RUN useradd --create-home poisonsim && mkdir -p /state /results && chown poisonsim /state /results
USER poisonsim
ENTRYPOINT ["poisonsim"]
CMD ["--help"]
