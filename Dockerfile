# One image for every KnowledgeNest service; docker-compose.yml picks the service by command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY setup.cfg pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
COPY config.yml ./
RUN pip install . && useradd --create-home --uid 10001 knowledge-nest \
    && mkdir -p var && chown knowledge-nest var

USER knowledge-nest
EXPOSE 8000
CMD ["nameko", "run", "--config", "config.yml", "gateway.service"]
