//! The Kafka sink. Records are produced asynchronously with an idempotent, `acks=all` producer;
//! each record is acknowledged to the runtime from its delivery report, so the checkpoint only
//! covers what the brokers have. Delivery reports are polled on the pipeline's own thread (not a
//! producer thread): librdkafka allocates with the C allocator, and freeing on another thread
//! made its arena lock the bottleneck. A full producer queue (brokers away) makes `write` wait: that
//! pauses the source, with a warning saying for how long.

use crate::config::{Format, KafkaConfig, FIXED_PRODUCER_SETTINGS};
use crate::heartbeat::{self, HeartbeatClock};
use crate::registry::Registry;
use apache_avro::schema::{ResolvedSchema, Schema};
use async_trait::async_trait;
use headwater_contract::avro_json::to_json;
use headwater_contract::{
    Ack, AckSender, ConnectorError, Flat, Flattener, Op, Position, PositionText, Sink, SinkRecord,
    StreamKind, StreamSchema,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Receives delivery reports and client errors.
struct Deliveries {
    acks: Mutex<Option<AckSender>>,
    failure: Mutex<Option<String>>,
    /// When a client error was last logged: brokers that are down report it on every poll.
    last_error_log: Mutex<Option<Instant>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.last_error_log.lock() {
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                *last = Some(Instant::now());
                tracing::warn!(%error, reason, "kafka: client error (repeats are logged every 10 s)");
            }
        }
    }
}

impl ProducerContext for Deliveries {
    /// The record's sequence number, or 0 for messages that acknowledge nothing themselves
    /// (a delete followed by its tombstone is acknowledged by the tombstone).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => {
                if seq != 0 {
                    if let Ok(acks) = self.acks.lock() {
                        if let Some(acks) = acks.as_ref() {
                            acks.ack(Ack::One(seq as u64));
                        }
                    }
                }
            }
            Err((err, _)) => {
                if let Ok(mut failure) = self.failure.lock() {
                    failure.get_or_insert_with(|| err.to_string());
                }
            }
        }
    }
}

/// Keeps the last client error (for `check`: "cannot be reached" alone hides an
/// authentication or TLS failure).
#[derive(Default)]
struct LastClientError(Mutex<Option<String>>);

impl ClientContext for LastClientError {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_string()
            });
        }
    }
}

impl ProducerContext for LastClientError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// What a stream needs to be produced: its topic and registry ids (Avro) or parsed schemas (JSON).
struct Prepared {
    topic: String,
    /// `namespace.table`, or empty for the schema-change stream.
    table: String,
    key_id: Option<u32>,
    value_id: Option<u32>,
    schemas: Option<(Option<Schema>, Schema)>,
}

pub struct KafkaSink {
    config: KafkaConfig,
    /// `envelope = "flat"`: turns change events into flat records.
    flat: Option<Flattener>,
    producer: Option<BaseProducer<Deliveries>>,
    admin: Option<AdminClient<DefaultClientContext>>,
    registry: Option<Registry>,
    streams: HashMap<usize, (Arc<StreamSchema>, Arc<Prepared>)>,
    topics: HashSet<String>,
    /// Reused per record: librdkafka copies what it is given, so these never need to grow again.
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    position_buf: String,
    /// Formats the parts of positions a transaction's records share once.
    position_text: PositionText,
    heartbeat_clock: HeartbeatClock,
    /// The heartbeat topic, once created and its schemas registered.
    heartbeats: Option<Arc<Prepared>>,
}

fn kafka_error(what: &str, err: KafkaError) -> ConnectorError {
    ConnectorError::retryable(format!("kafka: {what}: {err}"))
}

impl KafkaSink {
    pub fn new(config: KafkaConfig) -> Result<Self, ConnectorError> {
        config.validate().map_err(ConnectorError::definite)?;
        let registry = match config.format {
            Format::Avro => config.schema_registry.as_deref().map(Registry::new),
            Format::Json => None,
        };
        let heartbeat_clock = HeartbeatClock::new(config.heartbeat_interval);
        Ok(KafkaSink {
            flat: config.flattener().map_err(ConnectorError::definite)?,
            config,
            producer: None,
            admin: None,
            registry,
            streams: HashMap::new(),
            topics: HashSet::new(),
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            position_buf: String::new(),
            position_text: PositionText::default(),
            heartbeat_clock,
            heartbeats: None,
        })
    }

    /// The record's key as its stream is written (wire format or JSON) into `buf`; false when
    /// the table has no key.
    fn encode_key(
        prepared: &Prepared,
        record: &SinkRecord,
        buf: &mut Vec<u8>,
    ) -> Result<bool, ConnectorError> {
        let Some(key) = &record.key else {
            return Ok(false);
        };
        match (&prepared.schemas, prepared.key_id) {
            (Some((Some(schema), _)), _) => *buf = Self::json(schema, key)?,
            (None, Some(key_id)) => Self::wire(buf, key_id, key),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `envelope = "flat"` with `flat_deletes = "tombstone"`: the delete is its key with a null
    /// value (a keyless table's delete has nothing to name, and is dropped).
    async fn write_tombstone(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        let prepared = self.prepare(&record.stream).await?;
        let mut key_buf = std::mem::take(&mut self.key_buf);
        let result = async {
            if !Self::encode_key(&prepared, &record, &mut key_buf)? {
                self.ack_now(record.seq);
                return Ok(());
            }
            self.position_buf.clear();
            self.position_text
                .write(&record.position, &mut self.position_buf);
            self.produce(
                &prepared.topic,
                Some(&key_buf),
                None,
                headers(&record, &self.position_buf, &prepared.table),
                record.seq as usize,
            )
            .await
        }
        .await;
        self.key_buf = key_buf;
        result
    }

    /// Acknowledges a record that produces no message (a dropped delete or TRUNCATE).
    fn ack_now(&self, seq: u64) {
        if let Some(producer) = &self.producer {
            if let Ok(acks) = producer.context().acks.lock() {
                if let Some(acks) = acks.as_ref() {
                    acks.ack(Ack::One(seq));
                }
            }
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.config.brokers)
            // lz4: built into librdkafka, cheap on CPU, and every Kafka client reads it
            .set("compression.type", "lz4")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            // never expire a message while the brokers are away: the queue bound pauses the source
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
            // as Java clients hash keys, so consumers co-partition with Headwater's topics
            .set("partitioner", "murmur2_random");
        for (key, value) in &self.config.producer {
            config.set(key, value);
        }
        for (key, value) in FIXED_PRODUCER_SETTINGS {
            config.set(*key, *value);
        }
        config
    }

    fn check_failures(&self) -> Result<(), ConnectorError> {
        let failure = self
            .producer
            .as_ref()
            .and_then(|p| p.context().failure.lock().ok().and_then(|f| f.clone()));
        match failure {
            Some(failure) => Err(ConnectorError::definite(format!(
                "kafka: a record could not be delivered ({failure}); nothing after the last checkpoint is lost — fix the cause (topic permissions, message size: message.max.bytes) and restart"
            ))),
            None => Ok(()),
        }
    }

    async fn ensure_topic(&mut self, topic: &str) -> Result<(), ConnectorError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        let Some(admin) = &self.admin else {
            return Err(ConnectorError::definite("kafka: the sink was not opened"));
        };
        let mut new_topic = NewTopic::new(
            topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        for (key, value) in &self.config.topic_config {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| kafka_error("creating topics", e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(ConnectorError::retryable(format!(
                        "kafka: creating topic {name} failed: {code}"
                    )))
                }
            }
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }

    async fn prepare(
        &mut self,
        stream: &Arc<StreamSchema>,
    ) -> Result<Arc<Prepared>, ConnectorError> {
        let ptr = Arc::as_ptr(stream) as usize;
        if let Some((_, prepared)) = self.streams.get(&ptr) {
            return Ok(Arc::clone(prepared));
        }
        let topic = match (&stream.table, stream.kind) {
            (Some(table), _) => self.config.topic_for(&table.namespace, &table.table),
            (None, StreamKind::Transactions) => self.config.transaction_topic(),
            (None, _) => self.config.schema_change_topic(),
        };
        let table = stream
            .table
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let prepared = self
            .prepare_topic(
                topic,
                table,
                stream.key_schema.clone(),
                stream.value_schema.clone(),
            )
            .await?;
        self.streams
            .insert(ptr, (Arc::clone(stream), Arc::clone(&prepared)));
        Ok(prepared)
    }

    /// Creates `topic` and registers (Avro) or parses (JSON) its schemas.
    async fn prepare_topic(
        &mut self,
        topic: String,
        table: String,
        key_schema: Option<String>,
        value_schema: String,
    ) -> Result<Arc<Prepared>, ConnectorError> {
        self.ensure_topic(&topic).await?;
        let prepared = match (&self.registry, self.config.format) {
            (Some(registry), Format::Avro) => {
                let registry = registry.clone();
                let subject = topic.clone();
                let (key_id, value_id) = tokio::task::spawn_blocking(move || {
                    let key_id = key_schema
                        .map(|k| register_patiently(&registry, &format!("{subject}-key"), &k))
                        .transpose()?;
                    let value_id =
                        register_patiently(&registry, &format!("{subject}-value"), &value_schema)?;
                    Ok::<_, ConnectorError>((key_id, value_id))
                })
                .await
                .map_err(|e| {
                    ConnectorError::definite(format!("schema registration task failed: {e}"))
                })??;
                Prepared {
                    topic,
                    table,
                    key_id,
                    value_id: Some(value_id),
                    schemas: None,
                }
            }
            _ => {
                let parse = |text: &str| {
                    Schema::parse_str(text).map_err(|e| {
                        ConnectorError::definite(format!(
                            "kafka: a generated schema does not parse ({e}); report this"
                        ))
                    })
                };
                let key = key_schema.as_deref().map(parse).transpose()?;
                let value = parse(&value_schema)?;
                Prepared {
                    topic,
                    table,
                    key_id: None,
                    value_id: None,
                    schemas: Some((key, value)),
                }
            }
        };
        Ok(Arc::new(prepared))
    }

    /// Sends one heartbeat record. It acknowledges nothing, and a full producer queue (brokers
    /// away) skips it rather than pausing the pipeline's periodic work.
    async fn beat(&mut self) -> Result<(), ConnectorError> {
        let prepared = match &self.heartbeats {
            Some(prepared) => Arc::clone(prepared),
            None => {
                let prepared = self
                    .prepare_topic(
                        self.config.heartbeat_topic(),
                        String::new(),
                        Some(heartbeat::key_schema().to_string()),
                        heartbeat::value_schema().to_string(),
                    )
                    .await?;
                self.heartbeats = Some(Arc::clone(&prepared));
                prepared
            }
        };
        let key = heartbeat::encode_key(&self.config.topic_prefix);
        let value = heartbeat::encode_value(headwater_contract::now_ms());
        let (key, value) = match (&prepared.schemas, prepared.key_id, prepared.value_id) {
            (Some((Some(key_schema), value_schema)), _, _) => (
                Self::json(key_schema, &key)?,
                Self::json(value_schema, &value)?,
            ),
            (None, Some(key_id), Some(value_id)) => {
                let (mut key_wire, mut value_wire) = (Vec::new(), Vec::new());
                Self::wire(&mut key_wire, key_id, &key);
                Self::wire(&mut value_wire, value_id, &value);
                (key_wire, value_wire)
            }
            _ => {
                return Err(ConnectorError::definite(
                    "kafka: the heartbeat stream has no schemas; report this",
                ))
            }
        };
        let Some(producer) = &self.producer else {
            return Err(ConnectorError::definite("kafka: the sink was not opened"));
        };
        let record = BaseRecord::with_opaque_to(&prepared.topic, 0)
            .key(&key)
            .payload(&value);
        match producer.send(record) {
            Ok(()) => Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tracing::debug!("kafka: heartbeat skipped, the producer queue is full");
                Ok(())
            }
            Err((err, _)) => Err(kafka_error("producing a heartbeat", err)),
        }
    }

    /// Confluent wire format into `out`: magic byte 0, 4-byte big-endian schema id, Avro binary.
    fn wire(out: &mut Vec<u8>, id: u32, avro: &[u8]) {
        out.clear();
        out.push(0);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(avro);
    }

    fn json(schema: &Schema, avro: &[u8]) -> Result<Vec<u8>, ConnectorError> {
        let value = apache_avro::from_avro_datum(schema, &mut &avro[..], None).map_err(|e| {
            ConnectorError::definite(format!(
                "kafka: re-reading a record as JSON failed ({e}); report this"
            ))
        })?;
        let names = ResolvedSchema::try_from(schema)
            .map_err(|e| ConnectorError::definite(format!("kafka: schema names: {e}")))?;
        serde_json::to_vec(&to_json(&value, schema, names.get_names()))
            .map_err(|e| ConnectorError::definite(format!("kafka: JSON encoding failed: {e}")))
    }

    /// Hands one message to the producer, waiting while its queue is full.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: OwnedHeaders,
        seq: usize,
    ) -> Result<(), ConnectorError> {
        let Some(producer) = &self.producer else {
            return Err(ConnectorError::definite("kafka: the sink was not opened"));
        };
        let mut record = BaseRecord::with_opaque_to(topic, seq).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let mut blocked_since: Option<Instant> = None;
        let mut last_warning = Instant::now();
        loop {
            match producer.send(record) {
                Ok(()) => {
                    // serve delivery reports now and then, not per message
                    if seq.is_multiple_of(64) {
                        producer.poll(Duration::ZERO);
                    }
                    if let Some(since) = blocked_since {
                        tracing::info!(after = ?since.elapsed(), "kafka: producing again");
                    }
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if last_warning.elapsed() >= Duration::from_secs(10) {
                        tracing::warn!(blocked_for = ?since.elapsed(), brokers = %self.config.brokers,
                            "kafka: the producer queue is full (brokers slow or unreachable); the source is paused until deliveries resume");
                        last_warning = Instant::now();
                    }
                    self.check_failures()?;
                    producer.poll(Duration::ZERO);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((err, _)) => {
                    return Err(ConnectorError::definite(format!(
                        "kafka: producing to {topic} failed: {err}; check sink.producer settings (message.max.bytes for large rows)"
                    )))
                }
            }
        }
    }
}

/// Registers a schema, riding out a registry that is briefly away (up to about a minute).
fn register_patiently(
    registry: &Registry,
    subject: &str,
    schema: &str,
) -> Result<u32, ConnectorError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match registry.register(subject, schema) {
            Err(err) if err.is_retryable() && started.elapsed() < Duration::from_secs(60) => {
                tracing::warn!(error = %err.report(), retry_in = ?delay, "schema registry unavailable; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Lineage on every message: the source position (unique per change, so a consumer can drop
/// at-least-once redeliveries), the table (`namespace.table`) and the op.
fn headers(record: &SinkRecord, position: &str, table: &str) -> OwnedHeaders {
    let op = record.op.map(Op::code).unwrap_or("ddl");
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "headwater.position",
            value: Some(position.as_bytes()),
        })
        .insert(Header {
            key: "headwater.table",
            value: Some(table.as_bytes()),
        })
        .insert(Header {
            key: "headwater.op",
            value: Some(op.as_bytes()),
        })
}

#[async_trait]
impl Sink for KafkaSink {
    async fn check(&mut self) -> Result<Vec<headwater_contract::Problem>, ConnectorError> {
        let mut problems = Vec::new();
        let config = self.client_config();
        let brokers = self.config.brokers.clone();
        let reachable = tokio::task::spawn_blocking(move || {
            let producer: BaseProducer<LastClientError> = config
                .create_with_context(LastClientError::default())
                .map_err(|e| e.to_string())?;
            producer
                .client()
                .fetch_metadata(None, Timeout::After(Duration::from_secs(10)))
                .map(|m| m.brokers().len())
                .map_err(|e| {
                    // client errors are handed out by polling
                    for _ in 0..10 {
                        producer.poll(Duration::from_millis(10));
                    }
                    let said = producer
                        .context()
                        .0
                        .lock()
                        .ok()
                        .and_then(|last| last.clone());
                    match said {
                        Some(said) => format!("{e}; the client reports: {said}"),
                        None => e.to_string(),
                    }
                })
        })
        .await
        .map_err(|e| ConnectorError::definite(format!("kafka check task failed: {e}")))?;
        if let Err(err) = reachable {
            problems.push(headwater_contract::Problem::error(
                format!("the Kafka brokers {brokers} cannot be reached ({err})"),
                "check sink.brokers, that the brokers run, and the security settings in [sink.producer]",
            ));
        }
        if let Some(registry) = self.registry.clone() {
            let url = self.config.schema_registry.clone().unwrap_or_default();
            let answer = tokio::task::spawn_blocking(move || registry.ping())
                .await
                .map_err(|e| {
                    ConnectorError::definite(format!("registry check task failed: {e}"))
                })?;
            if let Err(err) = answer {
                problems.push(headwater_contract::Problem::error(
                    format!(
                        "the schema registry {url} does not answer ({})",
                        err.report()
                    ),
                    "check sink.schema_registry, or use format = \"json\"",
                ));
            }
        }
        Ok(problems)
    }

    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError> {
        let config = self.client_config();
        let producer = config
            .create_with_context(Deliveries {
                acks: Mutex::new(Some(acks)),
                failure: Mutex::new(None),
                last_error_log: Mutex::new(None),
            })
            .map_err(|e| {
                ConnectorError::definite(format!(
                    "kafka: the producer settings are invalid ({e}); check sink.producer"
                ))
            })?;
        self.producer = Some(producer);
        let mut admin_config = ClientConfig::new();
        admin_config.set("bootstrap.servers", &self.config.brokers);
        for (key, value) in &self.config.producer {
            if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
                admin_config.set(key, value);
            }
        }
        self.admin = Some(admin_config.create().map_err(|e| {
            ConnectorError::definite(format!(
                "kafka: the admin client settings are invalid ({e})"
            ))
        })?);
        // Kafka keeps no Headwater position: the runtime resumes from its checkpoint file.
        Ok(None)
    }

    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        self.check_failures()?;
        let record = match self.flat.as_mut() {
            None => record,
            Some(flat) => match flat.apply(record)? {
                Flat::Record(record) => record,
                Flat::Tombstone(record) => return self.write_tombstone(record).await,
                Flat::Dropped(record) => {
                    self.ack_now(record.seq);
                    return Ok(());
                }
            },
        };
        let prepared = self.prepare(&record.stream).await?;
        let seq = record.seq as usize;
        let mut key_buf = std::mem::take(&mut self.key_buf);
        let mut value_buf = std::mem::take(&mut self.value_buf);
        let has_key = Self::encode_key(&prepared, &record, &mut key_buf)?;
        match (&prepared.schemas, prepared.value_id) {
            (Some((_, value_schema)), _) => {
                value_buf = Self::json(value_schema, &record.value)?;
            }
            (None, Some(value_id)) => Self::wire(&mut value_buf, value_id, &record.value),
            (None, None) => {
                return Err(ConnectorError::definite(
                    "kafka: a stream without schemas; report this",
                ))
            }
        }
        self.position_buf.clear();
        self.position_text
            .write(&record.position, &mut self.position_buf);
        let key = has_key.then_some(key_buf.as_slice());
        let tombstone = record.op == Some(Op::Delete) && self.config.tombstones && key.is_some();
        let first_seq = if tombstone { 0 } else { seq };
        let result = async {
            self.produce(
                &prepared.topic,
                key,
                Some(&value_buf),
                headers(&record, &self.position_buf, &prepared.table),
                first_seq,
            )
            .await?;
            if tombstone {
                self.produce(
                    &prepared.topic,
                    key,
                    None,
                    headers(&record, &self.position_buf, &prepared.table),
                    seq,
                )
                .await?;
            }
            Ok(())
        }
        .await;
        self.key_buf = key_buf;
        self.value_buf = value_buf;
        result
    }

    async fn tick(&mut self, _through: Option<&Position>) -> Result<(), ConnectorError> {
        if let Some(producer) = &self.producer {
            producer.poll(Duration::ZERO);
        }
        self.check_failures()?;
        if self.heartbeat_clock.due(Instant::now()) {
            if let Err(err) = self.beat().await {
                // the changes still flow; a consumer watching heartbeats will notice, and so
                // should the operator
                tracing::warn!(error = %err.report(), topic = %self.config.heartbeat_topic(),
                    "kafka: a heartbeat could not be sent; the next is tried after heartbeat_interval");
            }
        }
        Ok(())
    }

    async fn flush(&mut self, _through: &Position) -> Result<(), ConnectorError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let started = Instant::now();
        loop {
            self.check_failures()?;
            let flushed = tokio::task::block_in_place(|| {
                producer.flush(Timeout::After(Duration::from_secs(5)))
            });
            match flushed {
                Ok(()) => return self.check_failures(),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {
                    tracing::warn!(waiting = ?started.elapsed(), in_flight = producer.in_flight_count(),
                        "kafka: waiting for deliveries (brokers slow or unreachable)");
                }
                Err(err) => return Err(kafka_error("flushing", err)),
            }
        }
    }
}
