//! posts-api image processing, knowing nothing of storage or HTTP: what an uploaded image
//! is (its displayed size and a blurhash placeholder) and the same image without the
//! metadata that would give its author away, within limits checked before decoding.
//!
//! Metadata is removed from the container, never by re-encoding: JPEG segments, PNG chunks
//! and WebP chunks are dropped whole, and the orientation is written back as the only EXIF
//! tag so the image still displays upright. Decoding uses the `image` crate's decoders with
//! its allocation limits, so a decompression bomb fails instead of exhausting memory.
//!
//! Variants ([`render`]) are sizes of an image named in the configuration, rendered upright
//! and without metadata.

mod decode;
mod describe;
mod render;
mod strip;

use bytes::Bytes;

pub use self::describe::{ImageInfo, decoding_bytes};
pub use self::render::{Encoding, Fit, Rendered, VariantSpec, render};

/// The image formats this crate processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `image/jpeg`
    Jpeg,
    /// `image/png`
    Png,
    /// `image/webp`
    WebP,
    /// `image/gif` (the first frame is described; the bytes are kept as sent)
    Gif,
}

impl Format {
    /// The format of a sniffed content type, if it is one this crate processes.
    pub fn of(content_type: &str) -> Option<Self> {
        match content_type {
            "image/jpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/webp" => Some(Self::WebP),
            "image/gif" => Some(Self::Gif),
            _ => None,
        }
    }

    fn decoder_format(self) -> image::ImageFormat {
        match self {
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Png => image::ImageFormat::Png,
            Self::WebP => image::ImageFormat::WebP,
            Self::Gif => image::ImageFormat::Gif,
        }
    }
}

/// How large an image may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest width × height.
    pub max_pixels: u64,
    /// Largest width or height.
    pub max_dimension: u32,
}

impl Limits {
    /// The most bytes decoding may allocate: four 16-bit channels of the largest image.
    fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8)
    }
}

/// An image, processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Processed {
    /// The bytes to store: without metadata when stripping was asked for.
    pub bytes: Bytes,
    /// Whether `bytes` differ from the bytes sent.
    pub changed: bool,
    /// What the image is.
    pub image: ImageInfo,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// The image is larger than a limit allows (named as the setting that sets it).
    #[error("the image is {width} × {height} pixels, over {setting} ({limit})")]
    TooLarge {
        /// Its width, as its header says.
        width: u32,
        /// Its height, as its header says.
        height: u32,
        /// The setting whose limit it passes.
        setting: &'static str,
        /// That limit.
        limit: u64,
    },
    /// The bytes are not a whole, readable image of their format.
    #[error("the image cannot be read: {0}")]
    Unreadable(String),
}

/// Describes the image in `bytes`, and removes its metadata when `strip_metadata` is set,
/// refusing it if its header says it is over `limits` (before any pixel is decoded) or if
/// it does not decode.
pub fn process(
    bytes: Bytes,
    format: Format,
    limits: &Limits,
    strip_metadata: bool,
) -> Result<Processed, MediaError> {
    let (image, orientation) = describe::describe(&bytes, format, limits)?;
    let stored = if strip_metadata {
        strip::strip(bytes.clone(), format, orientation)?
    } else {
        bytes.clone()
    };
    Ok(Processed {
        changed: stored != bytes,
        bytes: stored,
        image,
    })
}

#[cfg(test)]
mod tests;
