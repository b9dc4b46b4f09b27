# One image for init, api and worker; the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY api/pyproject.toml api/
COPY api/src api/src
COPY api/scripts api/scripts
RUN pip install --no-cache-dir ./api
WORKDIR /app/api
ENV BIFROST_DATA_DIR=/data
# Runtime packages live on a volume (BIFROST_PACKAGES_DIR): a restarted
# container finds them; a fresh one reinstalls them from the requirements cache.
VOLUME ["/data"]
ENTRYPOINT ["bifrost"]
CMD ["up"]
