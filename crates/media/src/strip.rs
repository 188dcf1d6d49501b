//! Metadata removed from the container without re-encoding: what remains are the pixels,
//! the colour profile, and the orientation as the only EXIF tag.

use bytes::Bytes;
use image::metadata::Orientation;
use img_parts::ImageEXIF;
use img_parts::jpeg::{Jpeg, markers};
use img_parts::png::Png;
use img_parts::webp::{CHUNK_XMP, WebP};

use crate::{Format, MediaError};

/// PNG chunks that carry text or metadata: EXIF, text (XMP is an `iTXt`), and the time.
const PNG_METADATA: [[u8; 4]; 5] = [*b"eXIf", *b"tEXt", *b"zTXt", *b"iTXt", *b"tIME"];

/// The prefix of an ICC profile in a JPEG `APP2` segment.
const ICC_PROFILE: &[u8] = b"ICC_PROFILE\0";

/// `bytes` without their metadata, keeping `orientation`. A GIF is returned as it is.
pub(crate) fn strip(
    bytes: Bytes,
    format: Format,
    orientation: Orientation,
) -> Result<Bytes, MediaError> {
    let unreadable = |error: img_parts::Error| MediaError::Unreadable(error.to_string());
    let exif = orientation_exif(orientation);
    match format {
        Format::Jpeg => {
            let mut jpeg = Jpeg::from_bytes(bytes).map_err(unreadable)?;
            // Keep JFIF (APP0), the ICC profile (APP2) and Adobe's colour transform
            // (APP14); every other application segment and comment goes.
            jpeg.segments_mut().retain(|segment| {
                let marker = segment.marker();
                let application = (markers::APP0..=markers::APP15).contains(&marker);
                !(marker == markers::COM
                    || (application
                        && !(marker == markers::APP0
                            || marker == markers::APP14
                            || (marker == markers::APP2
                                && segment.contents().starts_with(ICC_PROFILE)))))
            });
            jpeg.set_exif(exif);
            Ok(without_trailing_images(jpeg.encoder().bytes()))
        }
        Format::Png => {
            let mut png = Png::from_bytes(bytes).map_err(unreadable)?;
            png.chunks_mut()
                .retain(|chunk| !PNG_METADATA.contains(&chunk.kind()));
            png.set_exif(exif);
            Ok(png.encoder().bytes())
        }
        Format::WebP => {
            let mut webp = WebP::from_bytes(bytes).map_err(unreadable)?;
            webp.remove_chunks_by_id(CHUNK_XMP);
            // Also updates the header's flags to the chunks left.
            webp.set_exif(exif);
            Ok(webp.encoder().bytes())
        }
        Format::Gif => Ok(bytes),
    }
}

/// The JPEG cut after its end (EOI): a phone's Multi-Picture file appends more JPEGs there
/// (a preview, a depth map), each with EXIF of its own, GPS position included.
fn without_trailing_images(jpeg: Bytes) -> Bytes {
    match jpeg.get(2..).and_then(end_of_image) {
        Some(end) => jpeg.slice(..2 + end),
        None => jpeg,
    }
}

/// Where the image ends in what follows its SOI: just after the EOI marker, found by
/// skipping segments by their length and walking the entropy-coded data between them
/// (where `FF 00` is a stuffed byte and `FF D0` to `FF D7` restart markers).
fn end_of_image(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at + 1 < data.len() {
        if data[at] != markers::P {
            at += 1;
            continue;
        }
        let marker = data[at + 1];
        match marker {
            0x00 | markers::P | markers::RST0..=markers::RST7 => at += 1,
            markers::EOI => return Some(at + 2),
            _ => {
                let length = data.get(at + 2..at + 4)?;
                at += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
            }
        }
    }
    None
}

/// A TIFF block holding only the orientation tag; none for an upright image.
fn orientation_exif(orientation: Orientation) -> Option<Bytes> {
    if orientation == Orientation::NoTransforms {
        return None;
    }
    let mut tiff = Vec::with_capacity(26);
    // Big-endian header; the first directory right after it.
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08");
    // One entry: tag 0x0112 (Orientation), type SHORT, one value, padded to four bytes.
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&u16::from(orientation.to_exif()).to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    // No next directory.
    tiff.extend_from_slice(&0u32.to_be_bytes());
    Some(Bytes::from(tiff))
}
