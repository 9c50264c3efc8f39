// Runs Debezium's embedded engine until it has handed over the expected number of change
// records, then prints what it measured inside the JVM: the time from the first record to the
// last (the warmed-up rate, without the JVM's start and the connector's set-up) and the JSON
// bytes it produced. Used by scripts/bench-debezium.sh; the records go nowhere, as with
// pg_recvlogical to /dev/null, so Debezium pays for decoding and conversion only.
//
//   java -cp 'libs/*:classes' DebeziumBench EXPECTED_RECORDS CONNECTOR.properties

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.io.FileInputStream;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;

public class DebeziumBench {
    private static long records;
    private static long jsonBytes;
    private static long firstAt;
    private static long lastAt;

    public static void main(String[] args) throws Exception {
        long expected = Long.parseLong(args[0]);
        Properties props = new Properties();
        try (FileInputStream in = new FileInputStream(args[1])) {
            props.load(in);
        }
        long started = System.nanoTime();
        CountDownLatch done = new CountDownLatch(1);
        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(props)
                .notifying((List<ChangeEvent<String, String>> batch,
                            DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer) -> {
                    for (ChangeEvent<String, String> record : batch) {
                        if (record.value() != null) {
                            if (records == 0) {
                                firstAt = System.nanoTime();
                            }
                            records++;
                            jsonBytes += record.value().length();
                        }
                        committer.markProcessed(record);
                    }
                    committer.markBatchFinished();
                    if (records >= expected) {
                        lastAt = System.nanoTime();
                        done.countDown();
                    }
                })
                .using((success, message, error) -> {
                    if (!success) {
                        System.err.println("debezium stopped: " + message);
                        if (error != null) {
                            error.printStackTrace();
                        }
                        System.exit(2);
                    }
                })
                .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);
        done.await();
        System.out.printf("debezium records=%d first_to_last_s=%.3f start_to_first_s=%.3f json_bytes=%d%n",
                records, (lastAt - firstAt) / 1e9, (firstAt - started) / 1e9, jsonBytes);
        System.out.flush();
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        System.exit(0);
    }
}
