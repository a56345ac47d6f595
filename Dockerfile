FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
# leadscore/ holds the package root and links to the four folders beside it.
COPY leadscore ./leadscore
COPY streamer ./streamer
COPY features ./features
COPY model ./model
COPY schemas ./schemas
# The services' extras (sync sinks, archive, API) only: the demo's embedded broker, Redis
# and live table stay out.
RUN pip install --no-cache-dir '.[postgres,parquet,webhook,api]'
ENV LEADSCORE_MODEL_DIR=/models
EXPOSE 6066
ENTRYPOINT ["leadscore"]
CMD ["worker"]
