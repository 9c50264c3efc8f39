//! A Confluent-compatible schema registry client (Confluent, Karapace, Redpanda, Apicurio's
//! compatibility API): schemas registered under TopicNameStrategy subjects, ids cached.

use headwater_contract::ConnectorError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Registry {
    base: String,
    agent: ureq::Agent,
    cache: Arc<Mutex<HashMap<(String, String), u32>>>,
}

impl Registry {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Registry {
            base: base.trim_end_matches('/').to_string(),
            agent,
            cache: Arc::default(),
        }
    }

    /// Asks for the subject list: the registry answers and speaks the API.
    pub fn ping(&self) -> Result<(), ConnectorError> {
        let url = format!("{}/subjects", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| ConnectorError::retryable(format!("schema registry {url}: {e}")))?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(ConnectorError::definite(format!(
                "schema registry {url}: HTTP {status}"
            ))),
        }
    }

    /// The id of `schema` under `subject`, registering it when new (blocking: run off the runtime).
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, ConnectorError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            return Ok(id);
        }
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema });
        let mut response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send_json(&body)
            .map_err(|e| ConnectorError::retryable(format!("schema registry {url}: {e}")))?;
        let status = response.status().as_u16();
        let answer: serde_json::Value = response
            .body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null);
        match status {
            200 => {
                let id = answer["id"].as_u64().and_then(|id| u32::try_from(id).ok()).ok_or_else(|| {
                    ConnectorError::definite(format!("schema registry {url} answered without a schema id: {answer}"))
                })?;
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(key, id);
                }
                Ok(id)
            }
            409 | 422 => Err(ConnectorError::definite(format!(
                "schema registry rejected the new schema for subject {subject}: {}; the table's change is incompatible with the subject's compatibility setting — relax it (PUT /config/{subject}) or give the table a new topic",
                answer["message"].as_str().unwrap_or("no message")
            ))),
            500..=599 => Err(ConnectorError::retryable(format!("schema registry {url}: HTTP {status}: {answer}"))),
            _ => Err(ConnectorError::definite(format!(
                "schema registry {url}: HTTP {status}: {answer}; check sink.schema_registry"
            ))),
        }
    }
}
