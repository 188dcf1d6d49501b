//! What the configuration sections of this crate (`mongo`, `s3`, `uploads`, `media`) say
//! when a value cannot work. The sections live with the code they configure, but for
//! `media`, here, which the processing stage and `Storage` both read.

use std::num::{NonZeroU32, NonZeroU64};

use media::Limits;
use serde::{Deserialize, Serialize};

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

/// The `media.*` section of the service configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// Store images without their EXIF, XMP and IPTC metadata (the orientation is kept).
    pub strip_metadata: bool,
    /// Largest width × height of an image.
    pub max_pixels: NonZeroU64,
    /// Largest width or height of an image.
    pub max_dimension: NonZeroU32,
    /// Largest image file that is processed; a larger one is refused.
    pub max_image_bytes: NonZeroU64,
    /// Images processed at once by an instance; the others wait their turn.
    pub max_concurrent_processing: NonZeroU32,
}

impl MediaSettings {
    /// Checks the `media.*` values on their own.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if u64::from(self.max_dimension.get()) > self.max_pixels.get() {
            return Err(InvalidSetting::new(
                "media.max_dimension",
                "is larger than media.max_pixels, so it could never be reached",
            ));
        }
        Ok(())
    }

    /// The limits `media` checks images against.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_pixels: self.max_pixels.get(),
            max_dimension: self.max_dimension.get(),
        }
    }
}
