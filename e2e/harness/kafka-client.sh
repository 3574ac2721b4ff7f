# shellcheck shell=bash disable=SC2034 # the variable is for the scripts that source this
# Sourced by the scripts that run Kafka's command line tools in a pod of the kafka image against a
# managed access point, where every client logs in (SCRAM-SHA-512) as a tenant's user.
#
#   kubectl run <pod> ... --override-type=strategic --overrides="$(kafka_login <pod> <binding Secret>)" \
#     --command -- /bin/sh -c '... '"$KAFKA_CLIENT_PROPERTIES"' ... --command-config "$CONFIG" ...'

# The pod's container gets the binding Secret's keys as its environment (USERNAME, PASSWORD, ...).
kafka_login() {
	printf '{"spec":{"containers":[{"name":"%s","envFrom":[{"secretRef":{"name":"%s"}}]}]}}' "$1" "$2"
}

# Shell lines for the pod: the tools' client properties, from that environment, in $CONFIG.
# shellcheck disable=SC2016 # expanded in the pod
KAFKA_CLIENT_PROPERTIES='CONFIG=/tmp/client.properties
cat >"$CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$USERNAME" password="$PASSWORD";
EOF'
