# One image for every component: `triggers worker`, `triggers serve`, `triggers runner`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    PATH=/app/.venv/bin:$PATH

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.8

# Dependencies first (cached while only the code changes), exactly as uv.lock pins them:
# the runtime set only, the same one tests/integration/test_install.py installs.
COPY pyproject.toml uv.lock README.md LICENSE ./
RUN uv sync --frozen --no-dev --no-install-project

COPY processor ./processor
COPY schemas ./schemas
COPY examples ./examples
RUN uv sync --frozen --no-dev

RUN useradd --create-home --uid 10001 triggers && mkdir -p /app/.data && chown triggers /app/.data
USER triggers
ENTRYPOINT ["triggers"]
CMD ["--help"]
