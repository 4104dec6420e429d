// KafkaReady exits 0 when the Kafka cluster at args[0] (host:port) answers metadata
// requests with at least one registered broker. brokers.sh runs it as a single-file
// program with the broker's own jars on the class path.

import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        try (Admin admin = Admin.create(props)) {
            int brokers = admin.describeCluster().nodes().get(10, TimeUnit.SECONDS).size();
            admin.listTopics().names().get(10, TimeUnit.SECONDS);
            if (brokers == 0) {
                System.err.println("kafka: no broker registered yet");
                System.exit(1);
            }
            System.out.println("kafka: " + brokers + " broker(s) answer metadata requests");
        }
    }
}
