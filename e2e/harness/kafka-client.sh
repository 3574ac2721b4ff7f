# shellcheck shell=bash
# Sourced by the scripts that run Kafka's command line tools against a managed access point, where
# every client logs in (SCRAM-SHA-512) as a tenant's user: on this machine (boot.sh) or in a pod
# of the kafka image:
#
#   kubectl run <pod> ... --override-type=strategic --overrides="$(kafka_login <pod> <binding Secret>)" \
#     --command -- /bin/sh -c '... '"$KAFKA_CLIENT_PROPERTIES"' ... --command-config "$CONFIG" ...'

# kafka_client_properties <user> <password> [<CA file>]: the tools' client properties; with a CA
# file, SASL over TLS with the brokers' certificates checked against it.
kafka_client_properties() {
	if [ -n "${3:-}" ]; then
		printf '%s\n' security.protocol=SASL_SSL ssl.truststore.type=PEM "ssl.truststore.location=$3"
	else
		printf '%s\n' security.protocol=SASL_PLAINTEXT
	fi
	printf '%s\n' sasl.mechanism=SCRAM-SHA-512 \
		"sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$1\" password=\"$2\";"
}

# The pod's container gets the binding Secret's keys as its environment (USERNAME, PASSWORD, ...);
# demo-install.sh's MQTT clients log in the same way.
kafka_login() {
	printf '{"spec":{"containers":[{"name":"%s","envFrom":[{"secretRef":{"name":"%s"}}]}]}}' "$1" "$2"
}

# Shell lines for such a pod (its sh is dash): the client properties from that environment, in $CONFIG;
# where the binding says TLS=true, its CA_CERT in a file the properties name.
# shellcheck disable=SC2034 # for the scripts that source this
KAFKA_CLIENT_PROPERTIES="CONFIG=/tmp/client.properties
$(declare -f kafka_client_properties)
ca=
if [ \"\$TLS\" = true ]; then ca=/tmp/ca.crt; printf '%s\\n' \"\$CA_CERT\" >\"\$ca\"; fi
kafka_client_properties \"\$USERNAME\" \"\$PASSWORD\" \$ca >\"\$CONFIG\""
