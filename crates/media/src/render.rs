//! Variants: an image rendered to a named size, upright, without metadata. A JPEG is decoded
//! at the smallest of 1/8, 1/4, 1/2 or full size that still covers the target (what libvips
//! calls shrink-on-load), so a thumbnail of a 24 MP photo never holds its full pixels; the
//! rest is resized with SIMD (Lanczos3) and encoded.

use std::io::Cursor;

use bytes::Bytes;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageReader, RgbImage};

use crate::decode::{check, decode_jpeg_at_least, decoding_limits, swaps_sides};
use crate::{Format, Limits, MediaError};

/// How an image is fitted to a variant's box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Fills the box exactly, cropping the middle of the image to the box's proportions.
    Cover,
    /// Fits inside the box, keeping the image's proportions.
    Inside,
}

/// What a variant is encoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// JPEG at a quality from 1 to 100; transparency is flattened onto white.
    Jpeg {
        /// The encoder's quality.
        quality: u8,
    },
    /// PNG, lossless, keeping transparency.
    Png,
}

impl Encoding {
    /// The content type of what it encodes.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg { .. } => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

/// A variant's size and encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantSpec {
    /// Width of the box.
    pub width: u32,
    /// Height of the box; `None`: as tall as the proportions make it.
    pub height: Option<u32>,
    /// How the image fits the box.
    pub fit: Fit,
    /// What it is encoded as.
    pub encoding: Encoding,
}

/// A rendered variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The encoded bytes.
    pub bytes: Bytes,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Renders the image in `bytes` to `spec`: upright, never enlarged, without metadata.
pub fn render(
    bytes: &[u8],
    format: Format,
    limits: &Limits,
    spec: &VariantSpec,
) -> Result<Rendered, MediaError> {
    let unreadable = |error: image::ImageError| MediaError::Unreadable(error.to_string());
    let reader = || ImageReader::with_format(Cursor::new(bytes), format.decoder_format());
    let mut decoder = reader().into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    check(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let displayed = if swaps_sides(orientation) {
        (height, width)
    } else {
        (width, height)
    };
    let (target, needed) = target_size(displayed, spec);
    let stored_needed = if swaps_sides(orientation) {
        (needed.1, needed.0)
    } else {
        needed
    };
    let reduced = match format {
        Format::Jpeg => decode_jpeg_at_least(bytes, stored_needed)?,
        _ => None,
    };
    let mut image = match reduced {
        Some(image) => image,
        None => {
            decoder
                .set_limits(decoding_limits(limits))
                .map_err(unreadable)?;
            DynamicImage::from_decoder(decoder).map_err(unreadable)?
        }
    };
    image.apply_orientation(orientation);
    let (source_width, source_height) = (image.width(), image.height());
    let (pixels, pixel_type) = match spec.encoding {
        Encoding::Jpeg { .. } => (flattened(image).into_raw(), PixelType::U8x3),
        Encoding::Png => (image.into_rgba8().into_raw(), PixelType::U8x4),
    };
    let resize_failed = |error: &dyn std::fmt::Display| MediaError::Unreadable(error.to_string());
    let source = ImageRef::new(source_width, source_height, &pixels, pixel_type)
        .map_err(|error| resize_failed(&error))?;
    let mut resized = Image::new(target.0, target.1, pixel_type);
    let options = ResizeOptions::new().fit_into_destination(Some((0.5, 0.5)));
    Resizer::new()
        .resize(&source, &mut resized, &options)
        .map_err(|error| resize_failed(&error))?;
    drop(pixels);
    let mut encoded = Vec::new();
    let written = match spec.encoding {
        Encoding::Jpeg { quality } => JpegEncoder::new_with_quality(&mut encoded, quality)
            .write_image(
                resized.buffer(),
                target.0,
                target.1,
                ExtendedColorType::Rgb8,
            ),
        Encoding::Png => PngEncoder::new(&mut encoded).write_image(
            resized.buffer(),
            target.0,
            target.1,
            ExtendedColorType::Rgba8,
        ),
    };
    written.map_err(unreadable)?;
    Ok(Rendered {
        bytes: Bytes::from(encoded),
        width: target.0,
        height: target.1,
    })
}

/// The image as RGB, any transparency flattened onto white.
fn flattened(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [red, green, blue, alpha] = rgba.get_pixel(x, y).0;
        let over_white = |channel: u8| {
            let alpha = u16::from(alpha);
            ((u16::from(channel) * alpha + 255 * (255 - alpha)) / 255) as u8
        };
        image::Rgb([over_white(red), over_white(green), over_white(blue)])
    })
}

/// The size of the variant, and the least size (as displayed) to decode for it: the
/// target itself for `Inside`, the image scaled to cover the box for `Cover`. An image
/// smaller than a `Cover` box is cropped to the box's proportions, not enlarged.
fn target_size(displayed: (u32, u32), spec: &VariantSpec) -> ((u32, u32), (u32, u32)) {
    let (width, height) = (f64::from(displayed.0), f64::from(displayed.1));
    let box_width = f64::from(spec.width);
    let box_height = spec.height.map_or(f64::INFINITY, f64::from);
    let scale = match spec.fit {
        Fit::Inside => (box_width / width).min(box_height / height),
        Fit::Cover if spec.height.is_none() => box_width / width,
        Fit::Cover => (box_width / width).max(box_height / height),
    }
    .min(1.0);
    let scaled = |side: f64| ((side * scale).round() as u32).max(1);
    let needed = (scaled(width), scaled(height));
    let target = match (spec.fit, spec.height) {
        (Fit::Cover, Some(box_height)) => {
            // The box's proportions, as large as fits in the scaled image.
            let aspect = box_width / f64::from(box_height);
            let (across, down) = (f64::from(needed.0), f64::from(needed.1));
            let side = |value: f64| (value.round() as u32).max(1);
            if across / down > aspect {
                (side(down * aspect).min(needed.0), needed.1)
            } else {
                (needed.0, side(across / aspect).min(needed.1))
            }
        }
        _ => needed,
    };
    (target, needed)
}

#[cfg(test)]
mod tests;
