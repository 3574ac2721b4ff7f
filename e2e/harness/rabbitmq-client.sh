# shellcheck shell=bash
# The tenant's AMQP client of a managed RabbitMQ on the nodes, for rabbitmq-roll.sh and
# rabbitmq-shrink.sh (sourced after clouds.sh): pika in the node's network namespace, over amqps
# with the binding's CA, as the tenant of the binding Secret; a hosts file of its own maps the
# name it dials, which the brokers' certificate carries, to its address.
#
#   rabbitmq_client <cluster> <access point> <Queue>   reads the binding; sets AMQP_FILES and
#                                                      AMQP_QUEUE (the Queue's broker queue)
#   amqp <action> [<argument>]   one client run. Through the client Service (its address is stable
#                                across rolls; kube-proxy sends each connection to a Ready pod), or
#                                with AMQP_POD=<pod> straight to that broker pod.
#     publish <stop file>  numbered messages, each confirmed before the next, until the file
#                          exists; a failed publish (its broker stopped) is retried on a new
#                          connection. Prints how many, and how many connections it took.
#     send <count>         m0..m<count-1>, each confirmed. Prints "sent <count>".
#     read <count>         every message in the queue; prints lost (of m0..m<count-1>) and repeated.
#     classic <name>       declares durable classic queue <name> (on the node it is connected to)
#     delete <name>        deletes queue <name>
#     quorum <name>        declares quorum queue <name>, round-trips one message, deletes it
"$HARNESS/tools.sh" pika

rabbitmq_client() {
	AMQP_CLUSTER=$1 AMQP_ACCESS_POINT=$2
	AMQP_FILES=$ROOT/e2e/.state/$AMQP_CLUSTER/rabbitmq-client
	mkdir -p "$AMQP_FILES"
	AMQP_SECRET=$(kc "$AMQP_CLUSTER" -n "$TENANT" get secret "$AMQP_ACCESS_POINT-binding" -o json) || return 1
	amqp_field CA_CERT >"$AMQP_FILES/ca.crt"
	AMQP_QUEUE=$(kc "$AMQP_CLUSTER" -n "$TENANT" get queue "$3" -o jsonpath='{.status.brokerName}')
	[[ -n $AMQP_QUEUE ]] || {
		echo "Queue $3 has no status.brokerName" >&2
		return 1
	}
}

amqp_field() { jq -r --arg k "$1" '.data[$k] // empty | @base64d' <<<"$AMQP_SECRET"; }

amqp() {
	local host address
	if [[ -n ${AMQP_POD:-} ]]; then
		host=$AMQP_POD.$AMQP_ACCESS_POINT.$TENANT.svc
		address=$(kc "$AMQP_CLUSTER" -n "$TENANT" get pod "$AMQP_POD" -o jsonpath='{.status.podIP}')
	else
		host=$AMQP_ACCESS_POINT-client.$TENANT.svc
		address=$(kc "$AMQP_CLUSTER" -n "$TENANT" get service "$AMQP_ACCESS_POINT-client" -o jsonpath='{.spec.clusterIP}')
	fi
	printf '127.0.0.1 localhost\n%s %s\n' "$address" "$host" >"$AMQP_FILES/hosts"
	in_node "$(net "$AMQP_CLUSTER" NETNS)" "$AMQP_FILES/hosts" "$BIN/amqp-venv/bin/python" - "$1" "${2:-}" "$host" \
		"$AMQP_FILES/ca.crt" "$(amqp_field USERNAME)" "$(amqp_field PASSWORD)" "$(amqp_field VHOST)" "$AMQP_QUEUE" \
		"$DEADLINE_SECONDS" <<'PY'
import os, ssl, sys, time, pika
action, argument, host, ca, user, password, vhost, queue, deadline = sys.argv[1:]
deadline = time.monotonic() + int(deadline)
context = ssl.create_default_context(cafile=ca)
parameters = pika.ConnectionParameters(host, 5671, vhost, pika.PlainCredentials(user, password),
                                       ssl_options=pika.SSLOptions(context, host), connection_attempts=3, retry_delay=1)
if action == "publish":
    sent = connections = 0
    while not os.path.exists(argument):
        if time.monotonic() > deadline:
            sys.exit(f"publishing for longer than the deadline, {sent} sent")
        try:
            with pika.BlockingConnection(parameters) as connection:
                connections += 1
                channel = connection.channel()
                channel.confirm_delivery()  # each basic_publish returns once the broker confirmed it
                while not os.path.exists(argument):
                    channel.basic_publish("", queue, f"m{sent}".encode(), pika.BasicProperties(delivery_mode=2),
                                          mandatory=True)
                    sent += 1
                    if sent == 1:
                        print("first message confirmed", flush=True)
        except pika.exceptions.AMQPError:
            time.sleep(0.2)  # m<sent> again, on a new connection: stored once or twice, never lost
    print(f"published {sent}, each confirmed, over {connections} connection(s)")
elif action == "read":
    count, seen = int(argument), {}
    with pika.BlockingConnection(parameters) as connection:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        for method, _, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            seen[body.decode()] = seen.get(body.decode(), 0) + 1
    lost = sum(1 for i in range(count) if f"m{i}" not in seen)
    repeated = sum(n - 1 for n in seen.values())
    print(f"read {sum(seen.values())}: lost {lost}, repeated {repeated}")
else:
    with pika.BlockingConnection(parameters) as connection:
        channel = connection.channel()
        if action == "send":
            channel.confirm_delivery()
            for i in range(int(argument)):
                channel.basic_publish("", queue, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
            print(f"sent {argument}")
        elif action == "classic":
            channel.queue_declare(argument, durable=True, arguments={"x-queue-type": "classic"})
            print(f"declared classic queue {argument}")
        elif action == "delete":
            channel.queue_delete(argument)
            print(f"deleted queue {argument}")
        elif action == "quorum":
            channel.queue_declare(argument, durable=True, arguments={"x-queue-type": "quorum"})
            channel.confirm_delivery()
            channel.basic_publish("", argument, b"hello", pika.BasicProperties(delivery_mode=2), mandatory=True)
            _, _, body = channel.basic_get(argument, auto_ack=True)
            channel.queue_delete(argument)
            if body != b"hello":
                sys.exit(f"quorum queue {argument} gave back {body!r}")
            print(f"quorum queue {argument} round-tripped a message")
        else:
            sys.exit(f"unknown action {action}")
PY
}
