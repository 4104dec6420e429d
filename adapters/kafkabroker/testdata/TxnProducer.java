// TxnProducer writes transactions with the Apache Kafka Java client, which
// kafka-go cannot: TestConsumeSkipsAbortedTransactions runs it as
//
//	java -cp "<kafka libs>/*" TxnProducer.java BOOTSTRAP TOPIC STEPS
//
// STEPS is a comma-separated list of transactions, each "commit" or "abort"
// followed by the values of its records, separated by colons:
// "commit:c1:c2,abort:a1". Each record has key "k", so all go to one
// partition, in order.
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnProducer {
	public static void main(String[] args) {
		if (args.length != 3) {
			System.err.println("usage: TxnProducer BOOTSTRAP TOPIC STEPS");
			System.exit(2);
		}
		Properties props = new Properties();
		props.put("bootstrap.servers", args[0]);
		props.put("transactional.id", "brokerkit-test-" + args[1]);
		props.put("key.serializer", StringSerializer.class.getName());
		props.put("value.serializer", StringSerializer.class.getName());
		try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
			producer.initTransactions();
			for (String step : args[2].split(",")) {
				String[] parts = step.split(":");
				producer.beginTransaction();
				for (int i = 1; i < parts.length; i++) {
					producer.send(new ProducerRecord<>(args[1], "k", parts[i]));
				}
				producer.flush();
				if (parts[0].equals("abort")) {
					producer.abortTransaction();
				} else {
					producer.commitTransaction();
				}
			}
		}
	}
}
