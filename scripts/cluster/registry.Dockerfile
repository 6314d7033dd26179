# The cluster's registry: Debian's docker-registry (the CNCF distribution registry), plain HTTP on :5000.
ARG BASE_IMAGE=deploystack/base:bookworm
FROM ${BASE_IMAGE}
# No auth section: the package's default names an htpasswd file that does not exist.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && printf '%s\n' 'version: 0.1' 'storage:' '  filesystem:' '    rootdirectory: /var/lib/docker-registry' \
              'http:' '  addr: ":5000"' >/etc/docker/registry/config.yml
CMD ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]
