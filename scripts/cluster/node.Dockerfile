# A Docker-in-Docker swarm node for scripts/cluster.sh: Debian's dockerd on our base image.
ARG BASE_IMAGE=deploystack/base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io iptables iproute2 socat procps ca-certificates >/dev/null \
    && rm -rf /var/lib/apt/lists/*
COPY node-entrypoint.sh /usr/local/bin/node-entrypoint
VOLUME /var/lib/docker
EXPOSE 2376
ENTRYPOINT ["/usr/local/bin/node-entrypoint"]
