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
//   tenancy <name server> <owner> <other>                    <other>'s attempts on <owner>'s queue
//                                                             (the environment's user makes the
//                                                             topics), each judged by its effect;
//                                                             both tenants' own operations; then its
//                                                             attempts on the broker's config; prints
//                                                             the summary lines the tests read
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
                case "tenancy" -> new Tenancy(args[1], args[2], args[3]).run();
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
        admin.setInstanceName("oms-e2e-admin-" + System.nanoTime());
        admin.start();
        int made = 0;
        try {
            for (BrokerData group : admin.examineBrokerClusterInfo().getBrokerAddrTable().values()) {
                String master = group.getBrokerAddrs().get(0L);
                if (master != null) {
                    admin.createAndUpdateTopicConfig(master, new TopicConfig(topic, queues, queues, 6));
                    made++;
                }
            }
        } finally {
            admin.shutdown();
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

    /** A user's password in the tenancy tests: `<user>-password`. */
    static RPCHook as(String user) {
        return new AclClientRPCHook(new SessionCredentials(user, user + "-password"));
    }

    static class Tenancy {
        final String nameServer;
        final String owner;
        final String other;
        final String mine;
        int own, ownOk, tries, gotIn, configTries, configGotIn;

        Tenancy(String nameServer, String owner, String other) {
            this.nameServer = nameServer;
            this.owner = owner;
            this.other = other;
            this.mine = owner + "%orders";
        }

        interface Step {
            boolean run() throws Exception;
        }

        /** A tenant's own operation, tried for up to 30 s: ACLs and a loaded machine take a moment. */
        void mine(String what, Step step) {
            own++;
            long end = System.currentTimeMillis() + 30_000;
            while (true) {
                String why;
                try {
                    if (step.run()) {
                        ownOk++;
                        return;
                    }
                    why = "not done";
                } catch (Exception failure) {
                    why = failure.toString();
                }
                if (System.currentTimeMillis() > end) {
                    System.err.println("own operation failed: " + what + ": " + why);
                    return;
                }
                sleep(500);
            }
        }

        void attempt(String what, Step step) {
            tries++;
            if (judge(what, step)) {
                gotIn++;
            }
        }

        /** An attempt on the broker itself rather than on the owner's queues. */
        void configAttempt(String what, Step step) {
            configTries++;
            if (judge(what, step)) {
                configGotIn++;
            }
        }

        boolean judge(String what, Step step) {
            boolean succeeded;
            try {
                succeeded = step.run();
            } catch (Exception refused) {
                succeeded = false;
            }
            if (succeeded) {
                System.err.println("got in: " + what);
            }
            return succeeded;
        }

        static void sleep(long ms) {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        /** Sends `body` to `topic` signed by `hook`. */
        boolean send(RPCHook hook, String topic, String body) throws Exception {
            DefaultMQProducer producer = new DefaultMQProducer("oms-e2e-producer", hook);
            producer.setNamesrvAddr(nameServer);
            producer.setInstanceName("tenancy-" + System.nanoTime());
            producer.setSendMsgTimeout(5_000);
            producer.setRetryTimesWhenSendFailed(0);
            producer.start();
            try {
                return producer.send(new Message(topic, body.getBytes(StandardCharsets.UTF_8))).getSendStatus() == SendStatus.SEND_OK;
            } finally {
                producer.shutdown();
            }
        }

        /** Whether `want` is among the bodies of `topic` from its start, read in `group` signed by
         * `hook` for up to `seconds`. */
        boolean read(RPCHook hook, String group, String topic, String want, int seconds) throws Exception {
            DefaultLitePullConsumer consumer = new DefaultLitePullConsumer(group, hook);
            consumer.setNamesrvAddr(nameServer);
            consumer.setInstanceName("tenancy-" + System.nanoTime());
            consumer.setAutoCommit(false);
            consumer.setMqClientApiTimeout(5_000);
            consumer.start();
            try {
                Collection<MessageQueue> queues = consumer.fetchMessageQueues(topic);
                consumer.assign(queues);
                for (MessageQueue queue : queues) {
                    consumer.seekToBegin(queue);
                }
                long end = System.currentTimeMillis() + seconds * 1000L;
                while (System.currentTimeMillis() < end) {
                    for (MessageExt message : consumer.poll(500)) {
                        if (want.equals(new String(message.getBody(), StandardCharsets.UTF_8))) {
                            return true;
                        }
                    }
                }
                return false;
            } finally {
                consumer.shutdown();
            }
        }

        /** Whether the owner finds `want` in its queue, reading it in a group of its own. */
        boolean ownerSees(String want) throws Exception {
            return read(as(owner), owner + "%look-" + System.nanoTime(), mine, want, 4);
        }

        DefaultMQAdminExt admin(RPCHook hook) throws Exception {
            DefaultMQAdminExt admin = new DefaultMQAdminExt(hook, 5_000);
            admin.setNamesrvAddr(nameServer);
            admin.setInstanceName("tenancy-admin-" + System.nanoTime());
            admin.start();
            return admin;
        }

        /** Whether the name server routes `topic` within 10 s (a broker registers a new topic a
         * moment after it made it). */
        boolean exists(String topic) throws Exception {
            DefaultMQAdminExt admin = admin(login());
            try {
                long end = System.currentTimeMillis() + 10_000;
                while (true) {
                    try {
                        if (!admin.examineTopicRouteInfo(topic).getQueueDatas().isEmpty()) {
                            return true;
                        }
                    } catch (Exception none) {
                        // no route yet
                    }
                    if (System.currentTimeMillis() > end) {
                        return false;
                    }
                    sleep(500);
                }
            } finally {
                admin.shutdown();
            }
        }

        String master() throws Exception {
            DefaultMQAdminExt admin = admin(login());
            try {
                return admin.examineBrokerClusterInfo().getBrokerAddrTable().values().iterator().next().getBrokerAddrs().get(0L);
            } finally {
                admin.shutdown();
            }
        }

        void run() throws Exception {
            String theirs = other + "%orders";
            topic(nameServer, mine, 1);
            topic(nameServer, theirs, 1);
            mine(owner + " writes its queue", () -> send(as(owner), mine, "oms-secret"));
            mine(owner + " reads its queue", () -> ownerSees("oms-secret"));
            mine(other + " writes its queue", () -> send(as(other), theirs, "theirs"));
            mine(other + " reads its queue", () -> read(as(other), other + "%reader", theirs, "theirs", 4));
            attempt("read " + mine + " in a group of its own",
                () -> read(as(other), other + "%thief", mine, "oms-secret", 4));
            attempt("read " + mine + " in " + owner + "'s group",
                () -> read(as(other), owner + "%reader", mine, "oms-secret", 4));
            attempt("read with " + owner + "'s name and a wrong password",
                () -> read(new AclClientRPCHook(new SessionCredentials(owner, "wrong")), owner + "%reader", mine, "oms-secret", 4));
            attempt("read without a login", () -> read(null, owner + "%reader", mine, "oms-secret", 4));
            attempt("write " + mine, () -> {
                send(as(other), mine, "intruder");
                return ownerSees("intruder");
            });
            attempt("make a topic under " + owner + "'s prefix", () -> {
                DefaultMQAdminExt admin = admin(as(other));
                try {
                    admin.createAndUpdateTopicConfig(master(), new TopicConfig(owner + "%new", 1, 1, 6));
                } finally {
                    admin.shutdown();
                }
                return exists(owner + "%new");
            });
            // The last: its effect is that the owner no longer finds its message.
            mine(owner + " still reads its queue", () -> ownerSees("oms-secret"));
            attempt("delete " + mine, () -> {
                DefaultMQAdminExt admin = admin(as(other));
                try {
                    admin.deleteTopicInBroker(Set.of(master()), mine);
                } finally {
                    admin.shutdown();
                }
                return !ownerSees("oms-secret");
            });
            System.out.println("tenancy rocketmq: tenant " + other + ": " + tries + " attempts on tenant " + owner
                + "'s queues, " + gotIn + " succeeded; own operations: " + ownOk + " of " + own + " succeeded");
            // Requests that name no resource are authorized for any user the broker knows.
            configAttempt("read the broker's config and log in as the super user it names", () -> {
                DefaultMQAdminExt admin = admin(as(other));
                String init;
                try {
                    init = admin.getBrokerConfig(master()).getProperty("initAuthenticationUser", "");
                } finally {
                    admin.shutdown();
                }
                java.util.regex.Matcher user = java.util.regex.Pattern
                    .compile("\"username\":\"([^\"]*)\",\"password\":\"([^\"]*)\"").matcher(init);
                if (!user.find()) {
                    return false;
                }
                DefaultMQAdminExt stolen = admin(new AclClientRPCHook(new SessionCredentials(user.group(1), user.group(2))));
                try {
                    return !stolen.listUser(master(), "").isEmpty();
                } finally {
                    stolen.shutdown();
                }
            });
            configAttempt("make the broker read-only", () -> {
                DefaultMQAdminExt admin = admin(as(other));
                try {
                    java.util.Properties readOnly = new java.util.Properties();
                    readOnly.setProperty("brokerPermission", "4");
                    admin.updateBrokerConfig(master(), readOnly);
                } finally {
                    admin.shutdown();
                }
                try {
                    return !send(as(owner), mine, "after");
                } catch (Exception refused) {
                    return true;
                }
            });
            System.out.println("config rocketmq: tenant " + other + ": " + configTries + " attempts on the broker, "
                + configGotIn + " succeeded");
        }
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
