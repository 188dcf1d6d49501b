//! What the configuration sections of this crate (`mongo`, `s3`, `uploads`) say when a
//! value cannot work. The sections live with the code they configure.

/// A configuration value that cannot work, with the key it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidSetting {
    /// Full configuration key, e.g. `s3.part_size_bytes`.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidSetting {
    pub(crate) fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}
