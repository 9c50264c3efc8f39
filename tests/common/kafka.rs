//! The Kafka sink's tests: configs, an independent consumer, and brokers of a test's own.

use super::*;

impl Workdir {
    /// Replaces the `[sink]` section with a Kafka sink.
    pub fn use_kafka_sink(&self, brokers: &str, topic_prefix: &str, format: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let start = text.find("[sink]").expect("a sink section");
        let end = text.find("[state]").expect("a state section");
        let registry = if format == "avro" {
            format!(
                "schema_registry = \"{}\"\n",
                endpoint("HEADWATER_SCHEMA_REGISTRY")
            )
        } else {
            String::new()
        };
        let sink = format!(
            "[sink]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"{topic_prefix}\"\nformat = \"{format}\"\n{registry}partitions = 3\n\n"
        );
        std::fs::write(
            self.config(),
            format!("{}{sink}{}", &text[..start], &text[end..]),
        )
        .expect("config");
    }
}

/// One message read back by `tests/kafka_consume.py` (confluent-kafka + AvroDeserializer).
#[derive(Debug, serde::Deserialize)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: serde_json::Value,
    pub value: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// Every message of `topics`, read with an independent consumer.
pub fn consume(brokers: &str, format: &str, topics: &[&str]) -> Vec<Consumed> {
    try_consume(brokers, format, topics).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`consume`], with the consumer's failure as an error (for polling a broker that is
/// coming back).
pub fn try_consume(brokers: &str, format: &str, topics: &[&str]) -> Result<Vec<Consumed>, String> {
    try_consume_with(brokers, format, topics, "{}")
}

/// The first `limit` messages of `topics` (fewer if no more arrive for a few seconds): for a
/// topic a running pipeline keeps filling. An error while a topic does not exist yet.
pub fn try_consume_at_most(
    brokers: &str,
    format: &str,
    topics: &[&str],
    limit: usize,
) -> Result<Vec<Consumed>, String> {
    run_consumer(brokers, format, topics, "{}", Some(limit))
}

/// As [`try_consume`], with extra librdkafka settings (a JSON object: SASL, TLS).
pub fn try_consume_with(
    brokers: &str,
    format: &str,
    topics: &[&str],
    client_config: &str,
) -> Result<Vec<Consumed>, String> {
    run_consumer(brokers, format, topics, client_config, None)
}

fn run_consumer(
    brokers: &str,
    format: &str,
    topics: &[&str],
    client_config: &str,
    limit: Option<usize>,
) -> Result<Vec<Consumed>, String> {
    let registry = if format == "avro" {
        endpoint("HEADWATER_SCHEMA_REGISTRY")
    } else {
        "json".to_string()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_consume.py");
    let output = Command::new("python3")
        .arg(script)
        .args([brokers, &registry, "3"])
        .args(topics)
        .env("KAFKA_CLIENT_CONFIG", client_config)
        .env("KAFKA_MAX_MESSAGES", limit.unwrap_or(0).to_string())
        .output()
        .expect("python3");
    if !output.status.success() {
        return Err(format!(
            "the consumer failed (pip install 'confluent-kafka[avro,schemaregistry]'; scripts/test.sh does): {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect())
}

/// A Kafka-protocol broker (tansu, memory storage) of one test's own, which a test can stop
/// (SIGSTOP: the broker stops answering, connections hang) and continue.
pub struct PrivateBroker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> Self {
        let mut broker = Self::not_started();
        broker.launch();
        broker
    }

    /// A broker whose port is chosen but which does not run until `launch`.
    pub fn not_started() -> Self {
        PrivateBroker {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            process: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn launch(&mut self) {
        self.launch_with(&["--storage-engine", "memory://tansu/"]);
    }

    /// A broker that requires SASL/SCRAM-SHA-512 from `user`: tansu keeps users in its storage,
    /// so the user is created on an open broker with a file store, which then restarts with
    /// authentication on.
    pub fn start_with_scram(user: &str, password: &str) -> Self {
        let mut broker = Self::not_started();
        // relative to the broker's working directory, its own temporary directory
        let store = "sqlite://broker.db".to_string();
        broker.launch_with(&["--storage-engine", &store]);
        let created = Command::new(endpoint("HEADWATER_TANSU"))
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .args([user, password])
            .output()
            .expect("tansu user create");
        assert!(
            created.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        if let Some(mut child) = broker.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(Duration::from_secs(10), "the open broker to stop", || {
            std::net::TcpStream::connect(("127.0.0.1", broker.port)).is_err()
        });
        broker.launch_with(&["--storage-engine", &store, "--authentication"]);
        broker
    }

    fn launch_with(&mut self, options: &[&str]) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(endpoint("HEADWATER_TANSU"))
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(options)
            .args(["--cluster-id", "headwater-test"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (scripts/services.sh start kafka finds or builds it)");
        self.process = Some(child);
        wait_until(Duration::from_secs(30), "the broker to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Stops the broker process where it is (SIGSTOP): it answers nothing until `resume`.
    pub fn pause(&self) {
        if let Some(child) = &self.process {
            Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status()
                .expect("kill -STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.process {
            Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status()
                .expect("kill -CONT");
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
