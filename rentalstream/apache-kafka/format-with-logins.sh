#!/usr/bin/env bash
# compose's one-shot kafka-logins job: formats the Kafka node's log folder, before the node
# first starts, with the SCRAM-SHA-512 logins of the admin and of each service (their
# passwords from the secrets `make compose-secrets` writes). A KRaft cluster keeps its
# logins in its metadata, and the node needs the admin's from its first start on, to log
# in to itself. On a folder already formatted it changes nothing (--ignore-formatted):
# logins are then changed with kafka-configs.sh (docs/operations.md, the compose.yaml section).
#
# It runs in the apache/kafka image with the kafka service's own environment. The image's
# KafkaDockerWrapper writes server.properties from that environment exactly as at the
# node's start, but formats the log folder too, without logins, so the wrapper is pointed
# at a throwaway folder and the real one is formatted here. The paths are the image's;
# the deployment test (tests/compose.py) moves them to the machine it runs on.
set -euo pipefail
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
SECRETS=${SECRETS:-/run/secrets}
DOCKER_CONFIGS=${DOCKER_CONFIGS:-/etc/kafka/docker}
MOUNTED_CONFIGS=${MOUNTED_CONFIGS:-/mnt/shared/config}
# The services' principals: rentalstream.kafka_acls.SERVICES, each rentalstream-<service>.
SERVICES="producer scorer monitor bridge dashboard"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/config"
KAFKA_LOG_DIRS="$work/unused" "$KAFKA_HOME/bin/kafka-run-class.sh" kafka.docker.KafkaDockerWrapper setup \
  --default-configs-dir "$DOCKER_CONFIGS" --mounted-configs-dir "$MOUNTED_CONFIGS" \
  --final-configs-dir "$work/config" > "$work/setup.log" 2>&1 || { cat "$work/setup.log"; exit 1; }
# The same properties with the real log folder (the last value of a key wins).
{ cat "$work/config/server.properties"; printf '\nlog.dirs=%s\n' "$KAFKA_LOG_DIRS"; } > "$work/format.properties"

logins=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$SECRETS/kafka_admin")]")
for service in $SERVICES; do
  logins+=(--add-scram "SCRAM-SHA-512=[name=rentalstream-$service,password=$(cat "$SECRETS/kafka_$service")]")
done
"$KAFKA_HOME/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$CLUSTER_ID" \
  --config "$work/format.properties" "${logins[@]}"
