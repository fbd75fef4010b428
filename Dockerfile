# The likes node as a container: `docker compose up` (compose.yaml) runs three of them with Redis and
# MariaDB. The image holds the package only; the cluster file and the secret come from outside.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY crdt crdt
COPY gossip gossip
COPY node node
COPY bench bench
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/likes --create-home likes \
    && rm -rf /src

USER likes
WORKDIR /var/lib/likes
ENTRYPOINT ["likes"]
CMD ["--help"]
