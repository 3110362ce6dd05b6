# One image for every KnowledgeNest service; docker-compose.yml picks the service by command.
# The package is installed from its wheel, at the versions in constraints.txt; the working
# directory holds only config.yml (and var/), so what runs is the installed package, not a
# source tree that happens to sit beside it (nameko run imports from the working directory first).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md knowledge_nest_quiet.pth ./
COPY contracts ./contracts
COPY services ./services
COPY gateway ./gateway
COPY operations ./operations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --constraint /tmp/constraints.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt \
    && useradd --create-home --uid 10001 knowledge-nest \
    && mkdir -p var && chown knowledge-nest var
COPY config.yml ./

USER 10001
EXPOSE 8000 9100
CMD ["nameko", "run", "--config", "config.yml", "gateway.service"]
