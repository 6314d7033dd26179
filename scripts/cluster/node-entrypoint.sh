#!/bin/sh
# Start a node's dockerd. The registry runs beside the nodes (REGISTRY=host:port on the cluster network);
# socat makes it answer on 127.0.0.1:REGISTRY_PORT inside the node too, the same name the host's engine
# pushes to: both engines trust a loopback registry over plain HTTP, so no daemon needs insecure-registries.
set -o errexit -o nounset
if [ -n "${REGISTRY:-}" ]; then
  socat "TCP-LISTEN:${REGISTRY_PORT},bind=127.0.0.1,fork,reuseaddr" "TCP:${REGISTRY}" &
fi
# A node started again after a kill (a power loss) finds its daemons' pid files: they are not running.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
# The API on TCP is for holders of the cluster's client certificate only (scripts/cluster.sh passes
# --tlsverify and the certificates). Inner containers get cgroups of their own under this node's name,
# apart from the host engine's /docker.
exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2376 \
  --cgroup-parent "/${NODE_CGROUP:-dscluster}" --log-level warn "$@"
