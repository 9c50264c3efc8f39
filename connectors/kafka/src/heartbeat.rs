//! Heartbeat records (`heartbeat_interval`), Debezium's `heartbeat.interval.ms`: a small record
//! on a topic of its own at a fixed interval, whether or not the source has changes, so a
//! consumer can tell a quiet source from a stopped pipeline. The key and value are Debezium's
//! (`io.debezium.connector.common.ServerNameKey {serverName}` and `…Heartbeat {ts_ms}`), so
//! consumers written for Debezium's heartbeats read them unchanged.

use headwater_contract::avro::{put_long, put_str};
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};

pub fn key_schema() -> Json {
    json!({
        "type": "record",
        "name": "ServerNameKey",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "serverName", "type": "string"}],
    })
}

pub fn value_schema() -> Json {
    json!({
        "type": "record",
        "name": "Heartbeat",
        "namespace": "io.debezium.connector.common",
        "fields": [{"name": "ts_ms", "type": "long", "doc": "when the heartbeat was sent, epoch milliseconds"}],
    })
}

/// The key's Avro body: the server name (the topic prefix, as Debezium's `topic.prefix`).
pub fn encode_key(server_name: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(server_name.len() + 2);
    put_str(&mut buf, server_name);
    buf
}

/// The value's Avro body.
pub fn encode_value(ts_ms: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(10);
    put_long(&mut buf, ts_ms);
    buf
}

/// When the next heartbeat is due.
#[derive(Debug)]
pub struct HeartbeatClock {
    interval: Duration,
    last: Option<Instant>,
}

impl HeartbeatClock {
    /// `interval` zero: heartbeats are off.
    pub fn new(interval: Duration) -> Self {
        HeartbeatClock {
            interval,
            last: None,
        }
    }

    /// True (and the clock restarts) when a heartbeat is due at `now`: at the first tick, then
    /// once per interval.
    pub fn due(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() {
            return false;
        }
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{from_avro_datum, types::Value, Schema};

    #[test]
    fn heartbeats_are_due_once_per_interval_and_never_when_off() {
        let start = Instant::now();
        let mut clock = HeartbeatClock::new(Duration::from_secs(5));
        assert!(clock.due(start));
        assert!(!clock.due(start + Duration::from_secs(4)));
        assert!(clock.due(start + Duration::from_secs(5)));
        assert!(!clock.due(start + Duration::from_secs(9)));
        let mut off = HeartbeatClock::new(Duration::ZERO);
        assert!(!off.due(start));
        assert!(!off.due(start + Duration::from_secs(3600)));
    }

    #[test]
    fn key_and_value_decode_with_debeziums_schemas() {
        let key = Schema::parse(&key_schema()).unwrap();
        let value = Schema::parse(&value_schema()).unwrap();
        assert_eq!(
            from_avro_datum(&key, &mut &encode_key("shop")[..], None).unwrap(),
            Value::Record(vec![("serverName".into(), Value::String("shop".into()))])
        );
        assert_eq!(
            from_avro_datum(&value, &mut &encode_value(1_700_000_000_123)[..], None).unwrap(),
            Value::Record(vec![("ts_ms".into(), Value::Long(1_700_000_000_123))])
        );
    }
}
