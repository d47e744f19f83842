# spatialgrid API image. The database is external (see compose.yaml); set
# SPATIALGRID_DATABASE_URL. Build: docker build -t spatialgrid .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 spatialgrid
WORKDIR /app

COPY pyproject.toml README.md ./
COPY spatialgrid ./spatialgrid
COPY api ./api
COPY data ./data
RUN pip install '.[all]'

USER spatialgrid
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health').status == 200 else 1)"
# Upgrade the schema, then serve.
CMD ["sh", "-c", "spatialgrid db upgrade && spatialgrid serve --host 0.0.0.0 --port 8000"]
