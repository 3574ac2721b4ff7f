// The e2e tests' RocketMQ client, on RocketMQ's own Java client (remoting, the classpath of
// tools.sh rocketmq), which compiles it: `java -cp .bin/rocketmq-client:'<libs>/*' RocketmqClient <command>`.
// It checks the bridge from outside: topics made, messages produced and read back with another
// client than the bridge's.
//
//   topic   <name server> <topic> <queues>                    a topic on every master
//   produce <name server> <topic> <from> <count> <keys>      msg-<i>, key k<i % keys>,
//                                                             properties region=eu, seq=<i>
//   consume <name server> <topic> <expected> <seconds>       every message from the start of each
//                                                             queue, one JSON line each, until
//                                                             <expected> distinct bodies or the time is up
//   roundtrip <name server> <topic> <message>                 the topic (one queue), the message sent,
//                                                             read back and printed
//
// With ROCKETMQ_USER and ROCKETMQ_PASSWORD in the environment every request is signed as that user
// (a broker with authentication). -Doms.timeout.ms=<ms> shortens requests (a client that should be
// refused).
// Exits 0 when the command did what it says, 1 with the reason on stderr otherwise; halts rather
// than waiting for the client's threads to stop. Requests get 15 s instead of the client's 3 s: the
// tests run beside many brokers on two cores.

import java.nio.charset.StandardCharsets;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;
import org.apache.rocketmq.remoting.RPCHook;
import org.apache.rocketmq.remoting.protocol.route.BrokerData;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

public class RocketmqClient {
    static final int TIMEOUT_MS = Integer.getInteger("oms.timeout.ms", 15_000);

    public static void main(String[] args) {
        int status = 0;
        try {
            switch (args[0]) {
                case "topic" -> topic(args[1], args[2], Integer.parseInt(args[3]));
                case "produce" -> produce(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                    Integer.parseInt(args[5]));
                case "consume" -> consume(args[1], args[2], Integer.parseInt(args[3]), Long.parseLong(args[4]));
                case "roundtrip" -> roundtrip(args[1], args[2], args[3]);
                default -> throw new IllegalArgumentException("unknown command " + args[0]);
            }
        } catch (Throwable failure) {
            failure.printStackTrace();
            status = 1;
        }
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(status);
    }

    static void topic(String nameServer, String topic, int queues) throws Exception {
        DefaultMQAdminExt admin = new DefaultMQAdminExt(login(), TIMEOUT_MS);
        admin.setNamesrvAddr(nameServer);
        admin.setMqClientApiTimeout(TIMEOUT_MS);
        admin.setInstanceName("oms-e2e-admin-" + ProcessHandle.current().pid());
        admin.start();
        int made = 0;
        for (BrokerData group : admin.examineBrokerClusterInfo().getBrokerAddrTable().values()) {
            String master = group.getBrokerAddrs().get(0L);
            if (master != null) {
                admin.createAndUpdateTopicConfig(master, new TopicConfig(topic, queues, queues, 6));
                made++;
            }
        }
        if (made == 0) {
            throw new IllegalStateException("no master broker to make topic " + topic + " on");
        }
    }

    static void produce(String nameServer, String topic, int from, int count, int keys) throws Exception {
        DefaultMQProducer producer = new DefaultMQProducer("oms-e2e-producer", login());
        producer.setNamesrvAddr(nameServer);
        producer.setInstanceName("oms-e2e-producer-" + ProcessHandle.current().pid());
        producer.setSendMsgTimeout(TIMEOUT_MS);
        producer.setMqClientApiTimeout(TIMEOUT_MS);
        producer.start();
        for (int i = from; i < from + count; i++) {
            Message message = new Message(topic, null, "k" + (i % keys), ("msg-" + i).getBytes(StandardCharsets.UTF_8));
            message.putUserProperty("region", "eu");
            message.putUserProperty("seq", Integer.toString(i));
            SendResult sent = producer.send(message);
            if (sent.getSendStatus() != SendStatus.SEND_OK) {
                throw new IllegalStateException("message " + i + ": " + sent.getSendStatus());
            }
        }
    }

    static void consume(String nameServer, String topic, int expected, long seconds) throws Exception {
        DefaultLitePullConsumer consumer = new DefaultLitePullConsumer("oms-e2e-verify-" + System.nanoTime(), login());
        consumer.setNamesrvAddr(nameServer);
        consumer.setInstanceName("oms-e2e-verify-" + ProcessHandle.current().pid());
        consumer.setAutoCommit(false);
        consumer.setMqClientApiTimeout(TIMEOUT_MS);
        consumer.start();
        Collection<MessageQueue> queues = consumer.fetchMessageQueues(topic);
        consumer.assign(queues);
        for (MessageQueue queue : queues) {
            consumer.seekToBegin(queue);
        }
        Set<String> distinct = new HashSet<>();
        long end = System.currentTimeMillis() + seconds * 1000;
        while (distinct.size() < expected && System.currentTimeMillis() < end) {
            List<MessageExt> batch = consumer.poll(1000);
            for (MessageExt message : batch) {
                String body = new String(message.getBody(), StandardCharsets.UTF_8);
                distinct.add(body);
                System.out.println(json(message.getKeys(), body, message.getProperties()));
            }
        }
    }

    /** The signature hook of the environment's user; none without one. */
    static RPCHook login() {
        String user = System.getenv("ROCKETMQ_USER");
        return user == null ? null : new AclClientRPCHook(new SessionCredentials(user, System.getenv("ROCKETMQ_PASSWORD")));
    }

    static void roundtrip(String nameServer, String topic, String text) throws Exception {
        topic(nameServer, topic, 1);
        DefaultMQProducer producer = new DefaultMQProducer("oms-e2e-producer", login());
        producer.setNamesrvAddr(nameServer);
        producer.setSendMsgTimeout(TIMEOUT_MS);
        producer.setMqClientApiTimeout(TIMEOUT_MS);
        producer.start();
        SendResult sent = producer.send(new Message(topic, text.getBytes(StandardCharsets.UTF_8)));
        if (sent.getSendStatus() != SendStatus.SEND_OK) {
            throw new IllegalStateException("the message: " + sent.getSendStatus());
        }
        consume(nameServer, topic, 1, 30);
    }

    static String json(String key, String body, Map<String, String> properties) {
        StringBuilder line = new StringBuilder("{\"key\":").append(quoted(key)).append(",\"payload\":")
            .append(quoted(body)).append(",\"headers\":{");
        String comma = "";
        for (Map.Entry<String, String> property : properties.entrySet()) {
            line.append(comma).append(quoted(property.getKey())).append(':').append(quoted(property.getValue()));
            comma = ",";
        }
        return line.append("}}").toString();
    }

    static String quoted(String text) {
        if (text == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }
}
