//! What an image is: its size as displayed (after its EXIF orientation) and a blurhash,
//! read within limits.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::decode::{check, decode_jpeg_at_least, decoding_limits, swaps_sides};
use crate::{Format, Limits, MediaError};

/// An image's displayed size and placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width as displayed, in pixels.
    pub width: u32,
    /// Height as displayed, in pixels.
    pub height: u32,
    /// A [blurhash](https://blurha.sh) of the image as displayed.
    pub blurhash: String,
}

/// The side of the image a blurhash is computed from.
const BLURHASH_SOURCE: u32 = 32;
/// Blurhash components across and down (the reference implementation's default).
const BLURHASH_COMPONENTS: (u32, u32) = (4, 3);

/// Describes the image in `bytes`, and says its orientation.
pub(crate) fn describe(
    bytes: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<(ImageInfo, Orientation), MediaError> {
    let unreadable = |error: image::ImageError| MediaError::Unreadable(error.to_string());
    let reader = || ImageReader::with_format(Cursor::new(bytes), format.decoder_format());
    let (width, height) = reader().into_dimensions().map_err(unreadable)?;
    check(width, height, limits)?;
    let mut decoder = reader().into_decoder().map_err(unreadable)?;
    decoder
        .set_limits(decoding_limits(limits))
        .map_err(unreadable)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // A JPEG is decoded at the least size that still gives the blurhash its pixels: every
    // byte of it is still read, so a truncated one fails all the same.
    let reduced = match format {
        Format::Jpeg => decode_jpeg_at_least(bytes, (BLURHASH_SOURCE, BLURHASH_SOURCE))?,
        _ => None,
    };
    let decoded = match reduced {
        Some(decoded) => decoded,
        None => DynamicImage::from_decoder(decoder).map_err(unreadable)?,
    };
    let mut small = decoded.thumbnail(BLURHASH_SOURCE, BLURHASH_SOURCE);
    small.apply_orientation(orientation);
    let small = small.to_rgba8();
    let blurhash = blurhash::encode(
        BLURHASH_COMPONENTS.0,
        BLURHASH_COMPONENTS.1,
        small.width(),
        small.height(),
        small.as_raw(),
    )
    .map_err(|error| MediaError::Unreadable(error.to_string()))?;
    let (width, height) = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    Ok((
        ImageInfo {
            width,
            height,
            blurhash,
        },
        orientation,
    ))
}

/// The memory that describing the image in `bytes` decodes into, read from its header;
/// refused, as [`crate::process`] would refuse it, if it is over `limits`. A JPEG is
/// decoded at 1/8 of its size; other formats whole.
pub fn decoding_bytes(bytes: &[u8], format: Format, limits: &Limits) -> Result<u64, MediaError> {
    let unreadable = |error: image::ImageError| MediaError::Unreadable(error.to_string());
    let decoder = ImageReader::with_format(Cursor::new(bytes), format.decoder_format())
        .into_decoder()
        .map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    check(width, height, limits)?;
    let per_pixel = u64::from(decoder.color_type().bytes_per_pixel());
    let (width, height) = match format {
        Format::Jpeg => (width.div_ceil(8), height.div_ceil(8)),
        _ => (width, height),
    };
    Ok(u64::from(width) * u64::from(height) * per_pixel)
}
