//! What the configuration sections of this crate (`mongo`, `s3`, `uploads`, `media`,
//! `scan`) say when a value cannot work. The sections live with the code they configure,
//! but for `media` and `scan`, here, which the processing stage and `Storage` both read.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64};

use media::{Encoding, Fit, Limits, VariantSpec};
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
    /// The sizes an image may be served in, by name: the only ones there are.
    #[serde(default)]
    pub variants: BTreeMap<String, VariantSettings>,
    /// Variants rendered at once by an instance.
    pub max_concurrent_renders: NonZeroU32,
    /// How long a request waits for a render turn before it is answered 503.
    pub wait_secs: u64,
    /// Variants rendered as soon as an image is ready, rather than on first request.
    #[serde(default)]
    pub eager_variants: Vec<String>,
}

/// One size of `media.variants`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VariantSettings {
    /// Width of the box, in pixels.
    pub width: NonZeroU32,
    /// Height of the box; unset: as tall as the image's proportions make it (`inside`).
    #[serde(default)]
    pub height: Option<NonZeroU32>,
    /// `cover` fills the box, cropping the middle; `inside` fits the image in it.
    pub fit: VariantFit,
    /// `jpeg` or `png`.
    pub format: VariantFormat,
    /// JPEG quality, 1 to 100.
    #[serde(default = "default_quality")]
    pub quality: u8,
}

/// How an image fits a variant's box.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VariantFit {
    /// Fills the box, cropping the middle of the image.
    Cover,
    /// Fits inside the box.
    Inside,
}

/// What a variant is encoded as.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VariantFormat {
    /// JPEG at `quality`; transparency flattened onto white.
    Jpeg,
    /// PNG, keeping transparency.
    Png,
}

/// The `scan.*` section: malware scanning by clamd before an attachment is ready.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// `host:port` of a clamd; empty: no scanning.
    pub clamd_address: String,
    /// Longest a scan may take, connection included.
    pub timeout_secs: NonZeroU64,
    /// With clamd unreachable or too slow, store the file anyway (with a warning) rather
    /// than refuse it with 503.
    pub fail_open: bool,
    /// Where an infected file is moved in the bucket (`{prefix}/{post_id}/{attachment_id}`);
    /// empty: it is deleted.
    pub quarantine_prefix: String,
}

impl ScanSettings {
    /// Checks the `scan.*` values on their own.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let address = self.clamd_address.as_str();
        if !address.is_empty()
            && address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(InvalidSetting::new(
                "scan.clamd_address",
                format!("`{address}` is not host:port, e.g. 127.0.0.1:3310"),
            ));
        }
        let prefix = self.quarantine_prefix.as_str();
        if prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(InvalidSetting::new(
                "scan.quarantine_prefix",
                "is a key prefix without a leading or trailing /",
            ));
        }
        Ok(())
    }
}

fn default_quality() -> u8 {
    80
}

impl VariantSettings {
    /// What `media` renders.
    pub(crate) fn spec(&self) -> VariantSpec {
        VariantSpec {
            width: self.width.get(),
            height: self.height.map(NonZeroU32::get),
            fit: match self.fit {
                VariantFit::Cover => Fit::Cover,
                VariantFit::Inside => Fit::Inside,
            },
            encoding: match self.format {
                VariantFormat::Jpeg => Encoding::Jpeg {
                    quality: self.quality,
                },
                VariantFormat::Png => Encoding::Png,
            },
        }
    }

    /// A short description of what this variant renders, recorded with each rendering so
    /// that a changed definition renders again.
    pub(crate) fn signature(&self) -> String {
        let height = self
            .height
            .map_or("auto".into(), |height| height.to_string());
        match self.format {
            VariantFormat::Jpeg => format!(
                "{}x{height} {:?} jpeg q{}",
                self.width, self.fit, self.quality
            ),
            VariantFormat::Png => format!("{}x{height} {:?} png", self.width, self.fit),
        }
    }
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
        for (name, variant) in &self.variants {
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
            if !valid_name {
                return Err(InvalidSetting::new(
                    "media.variants",
                    format!("`{name}` is not a name of 1 to 32 of a-z, 0-9 and -"),
                ));
            }
            if variant.fit == VariantFit::Cover && variant.height.is_none() {
                return Err(InvalidSetting::new(
                    "media.variants",
                    format!("`{name}` covers a box, so it needs a height"),
                ));
            }
            if !(1..=100).contains(&variant.quality) {
                return Err(InvalidSetting::new(
                    "media.variants",
                    format!("`{name}`: quality is from 1 to 100"),
                ));
            }
        }
        if let Some(unknown) = self
            .eager_variants
            .iter()
            .find(|name| !self.variants.contains_key(*name))
        {
            return Err(InvalidSetting::new(
                "media.eager_variants",
                format!("`{unknown}` is not one of media.variants"),
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
