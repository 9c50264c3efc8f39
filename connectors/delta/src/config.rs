use headwater_lakehouse::options::validate_location;

headwater_lakehouse::table_sink_config! {
    /// `[sink] kind = "delta"`: every captured table as Delta Lake tables — a current-state
    /// mirror and a changelog — committed exactly once with the source position, on local disk
    /// or S3.
    pub struct DeltaConfig {
        /// Where the tables live: a local directory (created if missing) or `s3://bucket/prefix`.
        pub path: String,
    }
}

impl DeltaConfig {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        validate_location("path", &self.path)?;
        self.options().validate()
    }
}
