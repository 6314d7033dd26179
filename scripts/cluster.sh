#!/usr/bin/env bash
# A multi-node Docker Swarm on this one machine: Docker-in-Docker nodes, for trying and testing
# `deploystack up --engine swarm` against a remote engine (docs/swarm.md, "A test cluster on one machine").
#   scripts/cluster.sh up       build the node and registry images, start the nodes, make the swarm, label it
#   scripts/cluster.sh status   the containers, the swarm's nodes, and the variables to use it
#   scripts/cluster.sh add      one more node, joined as a worker with no label (it takes app replicas); prints its name
#   scripts/cluster.sh remove N drain node N (one that `add` made), make it leave the swarm, remove it
#   scripts/cluster.sh down [--images]   remove every container, volume, network and cgroup it made
#                                        (and, with --images, its two images)
#
# The host's own engine never joins a swarm: every `docker swarm`/`docker node` command here runs inside a
# node (`docker exec NODE docker ...`). Settings (environment):
#   CLUSTER        name prefix of everything made (default dscluster)
#   CLUSTER_NODES  number of nodes, all managers (default 3: Raft keeps a quorum when one is lost)
#   CLUSTER_API_PORT       127.0.0.1 port of the first node's engine (default 23750): DOCKER_HOST, over TLS
#                          with client certificates (DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH=CLUSTER_CERTS)
#   CLUSTER_CERTS          where the cluster's CA, the nodes' server key and the client's key are written
#                          (default .cluster/CLUSTER in the repository; removed by down)
#   CLUSTER_REGISTRY_PORT  127.0.0.1 port of the registry, on the host and in every node (default 5050)
#   CLUSTER_HTTP_PORT, CLUSTER_HTTPS_PORT  127.0.0.1 ports on the host of the edge node's 8080 and 8443
#                                          (default 18080, 18443), where the LBC listens
#   CLUSTER_HEARTBEAT      swarm dispatcher heartbeat (default 2s; Docker's 5s detects a lost node later)
set -o errexit -o pipefail -o nounset

HERE=$(cd "$(dirname "$0")" && pwd)
CLUSTER=${CLUSTER:-dscluster}
NODES=${CLUSTER_NODES:-3}
API_PORT=${CLUSTER_API_PORT:-23750}
REGISTRY_PORT=${CLUSTER_REGISTRY_PORT:-5050}
HTTP_PORT=${CLUSTER_HTTP_PORT:-18080}
HTTPS_PORT=${CLUSTER_HTTPS_PORT:-18443}
HEARTBEAT=${CLUSTER_HEARTBEAT:-2s}
CERTS=${CLUSTER_CERTS:-$(dirname "$HERE")/.cluster/$CLUSTER}
BASE_IMAGE=${BASE_IMAGE:-deploystack/base:bookworm}
NODE_IMAGE=deploystack-cluster/node:bookworm
REGISTRY_IMAGE=deploystack-cluster/registry:bookworm
NETWORK=$CLUSTER-net
REGISTRY=$CLUSTER-registry
LABEL=io.deploystack.cluster=$CLUSTER  # on every container, volume and network made here

say() { echo "cluster.sh: $*" >&2; }
node() { echo "$CLUSTER-node$1"; }
in_node() { local n=$1; shift; docker exec "$(node "$n")" docker "$@"; }
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$(node "$1")"; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "$what did not answer within $seconds s"
  return 1
}

images() {
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "no $BASE_IMAGE: run \`deploystack build\` (or doctor) once, which makes the base image"
    exit 1
  fi
  build "$NODE_IMAGE" node.Dockerfile
  build "$REGISTRY_IMAGE" registry.Dockerfile
}

build() {  # quiet unless it fails
  local out
  if ! out=$(docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$1" -f "$HERE/cluster/$2" "$HERE/cluster" 2>&1); then
    echo "$out" >&2
    say "building $1 failed"
    exit 1
  fi
}

# A remote engine is reached over TLS with client certificates, as `dockerd --tlsverify` documents: a CA of
# the cluster's own, one server certificate for every node (valid for 127.0.0.1, where node 1's API is
# published), and the client's certificate that deploystack and the docker CLI present.
certs() {
  local server=$CERTS/server
  mkdir -p "$server" && chmod 0700 "$CERTS"
  (
    cd "$CERTS"
    openssl req -x509 -newkey rsa:3072 -nodes -days 30 -subj "/CN=$CLUSTER CA" -keyout ca-key.pem -out ca.pem
    openssl req -newkey rsa:3072 -nodes -subj "/CN=$CLUSTER nodes" -keyout server/key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -extfile server.ext -out server/cert.pem
    openssl req -newkey rsa:3072 -nodes -subj "/CN=$CLUSTER client" -keyout key.pem -out client.csr
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
      -extfile client.ext -out cert.pem
    cp ca.pem server/ca.pem
    rm -f ./*.csr ./*.ext ca.srl ca-key.pem
    chmod 0644 server/*.pem  # read by dockerd in the node (root there too); the folder itself is 0700
  ) >/dev/null 2>&1 || { say "making the TLS certificates in $CERTS failed (openssl)"; exit 1; }
}

start_node() {
  local n=$1 name
  name=$(node "$n")
  local publish=()
  if [ "$n" = 1 ]; then  # the first node: the engine deploystack drives, and the edge
    publish=(-p "127.0.0.1:$API_PORT:2376" -p "127.0.0.1:$HTTP_PORT:8080" -p "127.0.0.1:$HTTPS_PORT:8443")
  fi
  docker volume create --label "$LABEL" "$name-docker" >/dev/null
  # Not --privileged (refused here: "unable to apply caps"); what dockerd needs to run containers and
  # overlay networks: SYS_ADMIN (mounts), NET_ADMIN (bridges, VXLAN, iptables), SYS_PTRACE (runc exec,
  # health checks included, opens the namespaces of a process that runs as another user), the host's cgroups
  # writable, and a cgroup parent of its own so each node's cgroups stay apart.
  docker run -d --name "$name" --hostname "$name" --label "$LABEL" --network "$NETWORK" "${publish[@]}" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --cgroup-parent "/$name" -e "NODE_CGROUP=$name-tasks" \
    -e "REGISTRY=$REGISTRY:5000" -e "REGISTRY_PORT=$REGISTRY_PORT" \
    -v "$name-docker:/var/lib/docker" -v "$CERTS/server:/certs:ro" "$NODE_IMAGE" \
    --tlsverify --tlscacert /certs/ca.pem --tlscert /certs/cert.pem --tlskey /certs/key.pem >/dev/null
}

up() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    say "$CLUSTER is up already (scripts/cluster.sh status; down to remove it)"
    exit 1
  fi
  images
  certs
  docker network create --label "$LABEL" "$NETWORK" >/dev/null
  docker run -d --name "$REGISTRY" --label "$LABEL" --network "$NETWORK" \
    -p "127.0.0.1:$REGISTRY_PORT:5000" "$REGISTRY_IMAGE" >/dev/null
  for n in $(seq 1 "$NODES"); do start_node "$n"; done
  wait_for 60 "the registry" curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/"
  for n in $(seq 1 "$NODES"); do wait_for 90 "$(node "$n")'s dockerd" in_node "$n" info; done

  local leader_ip token
  leader_ip=$(node_ip 1)
  in_node 1 swarm init --advertise-addr "$leader_ip" --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
  token=$(in_node 1 swarm join-token -q manager)
  for n in $(seq 2 "$NODES"); do
    in_node "$n" swarm join --token "$token" --advertise-addr "$(node_ip "$n")" "$leader_ip:2377" >/dev/null
  done
  # The edge (its ports reach the host) is node 1; the database and the data services node 2; database
  # replicas node 3. Apps have no label: they spread over every node.
  in_node 1 node update --label-add deploystack.edge=true "$(node 1)" >/dev/null
  local data=$((NODES >= 2 ? 2 : 1)) replica=$((NODES >= 3 ? 3 : NODES))
  in_node 1 node update --label-add deploystack.db-primary=true --label-add deploystack.data=true \
    "$(node "$data")" >/dev/null
  in_node 1 node update --label-add deploystack.db-replica=true "$(node "$replica")" >/dev/null
  # dbc.ha: patroni: etcd-K and db-node-K on the node labelled deploystack.db-member-K, one per node; member
  # 1 on node 2, 2 on node 3, ... the last on node 1 (the edge, which a two-node Patroni cluster then spares).
  for k in $(seq 1 "$NODES"); do
    in_node 1 node update --label-add "deploystack.db-member-$k=true" "$(node $((k % NODES + 1)))" >/dev/null
  done
  status
}

add() {
  local n=1 name token
  while docker inspect "$(node "$n")" >/dev/null 2>&1; do n=$((n + 1)); done
  name=$(node "$n")
  start_node "$n"
  wait_for 90 "$name's dockerd" in_node "$n" info
  token=$(in_node 1 swarm join-token -q worker)
  in_node "$n" swarm join --token "$token" --advertise-addr "$(node_ip "$n")" "$(node_ip 1):2377" >/dev/null
  wait_for 60 "$name ready in the swarm" node_is "$name" ready
  say "$name joined as a worker, with no label: it takes app replicas, nothing the labels place"
  echo "$name"
}

node_is() { [ "$(in_node 1 node inspect -f '{{.Status.State}}' "$1" 2>/dev/null)" = "$2" ]; }
no_tasks_on() { [ -z "$(in_node 1 node ps -q --filter desired-state=running "$1" 2>/dev/null)" ]; }

# What docs/swarm.md says to do to retire a machine: drain it (its tasks start elsewhere first), then it
# leaves the swarm and the managers forget it.
remove() {
  local n=${1:?usage: $0 remove N} name
  name=$(node "$n")
  if [ "$n" -le "$NODES" ]; then
    say "node $n is one of the $NODES the cluster was made with (managers); only nodes that add made are removed"
    exit 2
  fi
  in_node 1 node update --availability drain "$name" >/dev/null
  wait_for 120 "$name's tasks moved elsewhere" no_tasks_on "$name"
  in_node "$n" swarm leave >/dev/null
  wait_for 60 "$name down in the swarm" node_is "$name" down
  in_node 1 node rm "$name" >/dev/null
  docker rm -f -v "$name" >/dev/null
  docker volume rm "$name-docker" >/dev/null
  remove_cgroups "$name"
  say "$name removed"
}

# A node's cgroups (its own and its containers'), left behind by a killed node too: empty once it is gone.
remove_cgroups() {
  find /sys/fs/cgroup/*/ -maxdepth 1 -name "$1" -type d 2>/dev/null \
    | while read -r dir; do find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}

status() {
  docker ps -a --filter "label=$LABEL" --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'
  if docker inspect "$(node 1)" >/dev/null 2>&1; then
    in_node 1 node ls --format 'table {{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}' || true
    echo
    echo "export DOCKER_HOST=tcp://127.0.0.1:$API_PORT DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$CERTS  # node 1, a manager"
    echo "swarm.registry in the spec: 127.0.0.1:$REGISTRY_PORT  # the same address on this host and on the nodes"
    echo "the edge node's LBC: http://127.0.0.1:$HTTP_PORT/ https://127.0.0.1:$HTTPS_PORT/ (lbc.ports 8080/8443)"
  fi
}

down() {
  local containers volumes
  containers=$(docker ps -aq --filter "label=$LABEL")
  [ -z "$containers" ] || docker rm -f -v $containers >/dev/null
  volumes=$(docker volume ls -q --filter "label=$LABEL")
  [ -z "$volumes" ] || docker volume rm $volumes >/dev/null
  docker network rm "$NETWORK" >/dev/null 2>&1 || true
  rm -rf "$CERTS"
  remove_cgroups "$CLUSTER-node*"
  if [ "${1:-}" = --images ]; then
    docker image rm "$NODE_IMAGE" "$REGISTRY_IMAGE" >/dev/null 2>&1 || true
  fi
  say "$CLUSTER removed"
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  add) add ;;
  remove) remove "${2:-}" ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 up|status|add|remove N|down [--images]" >&2; exit 2 ;;
esac
