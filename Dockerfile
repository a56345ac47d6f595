FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamer ./streamer
COPY features ./features
COPY model ./model
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV LEADSCORE_MODEL_DIR=/models
EXPOSE 6066
ENTRYPOINT ["leadscore"]
CMD ["worker"]
