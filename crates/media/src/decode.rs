//! Decoding shared by describing and rendering: the limits checked on a header, what the
//! `image` crate may allocate, and a JPEG decoded at a reduced size.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::{Limits, MediaError};

/// What the `image` crate's decoders may allocate under `limits`.
pub(crate) fn decoding_limits(limits: &Limits) -> image::Limits {
    let mut decoding = image::Limits::default();
    decoding.max_image_width = Some(limits.max_dimension);
    decoding.max_image_height = Some(limits.max_dimension);
    decoding.max_alloc = Some(limits.max_alloc());
    decoding
}

/// Refuses a header over the limits, before anything is decoded.
pub(crate) fn check(width: u32, height: u32, limits: &Limits) -> Result<(), MediaError> {
    let too_large = |setting, limit| MediaError::TooLarge {
        width,
        height,
        setting,
        limit,
    };
    if width.max(height) > limits.max_dimension {
        return Err(too_large(
            "media.max_dimension",
            u64::from(limits.max_dimension),
        ));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(too_large("media.max_pixels", limits.max_pixels));
    }
    Ok(())
}

/// Whether `orientation` turns the image a quarter, so its sides swap.
pub(crate) fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Decodes a JPEG at the smallest IDCT scale whose size is at least `needed` (as stored,
/// before orientation); `None` for CMYK, which the `image` crate's decoder converts.
pub(crate) fn decode_jpeg_at_least(
    bytes: &[u8],
    needed: (u32, u32),
) -> Result<Option<DynamicImage>, MediaError> {
    let failed = |error: jpeg_decoder::Error| MediaError::Unreadable(error.to_string());
    let side = |value: u32| u16::try_from(value).unwrap_or(u16::MAX);
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    let (width, height) = decoder
        .scale(side(needed.0), side(needed.1))
        .map_err(failed)?;
    let info = decoder
        .info()
        .ok_or_else(|| MediaError::Unreadable("the JPEG has no frame".into()))?;
    if info.pixel_format == jpeg_decoder::PixelFormat::CMYK32 {
        return Ok(None);
    }
    let pixels = decoder.decode().map_err(failed)?;
    let (width, height) = (u32::from(width), u32::from(height));
    let short = || MediaError::Unreadable("the JPEG decoded to fewer pixels than its size".into());
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(width, height, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::L16 => {
            let wide: Vec<u16> = pixels
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
            DynamicImage::ImageLuma16(
                image::ImageBuffer::from_raw(width, height, wide).ok_or_else(short)?,
            )
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(width, height, pixels).ok_or_else(short)?)
        }
        jpeg_decoder::PixelFormat::CMYK32 => return Ok(None),
    };
    Ok(Some(image))
}
