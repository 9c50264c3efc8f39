//! The PostgreSQL server as the source and its preflight see it: the config, the captured
//! tables and where and how to connect.

use crate::config::PostgresConfig;
use crate::protocol::ConnectParams;
use headwater_contract::{ConnectorError, TableFilter};

pub struct PostgresServer {
    pub(crate) config: PostgresConfig,
    pub(crate) filter: TableFilter,
    pub(crate) params: ConnectParams,
}

impl PostgresServer {
    pub fn new(config: PostgresConfig) -> Result<Self, ConnectorError> {
        let filter = config.validate().map_err(ConnectorError::definite)?;
        let params = ConnectParams::from_url(&config.url, config.tls_ca_file.as_deref())?;
        Ok(PostgresServer {
            config,
            filter,
            params,
        })
    }
}
