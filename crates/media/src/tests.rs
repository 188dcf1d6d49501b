//! Unit tests of `process`, on images made with the `image` crate's encoders: each bad
//! input it can make, and a phone-like photo with GPS, XMP and a comment.

use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgba};
use img_parts::ImageEXIF;
use img_parts::png::{Png, PngChunk};
use img_parts::riff::{RiffChunk, RiffContent};
use img_parts::webp::{CHUNK_XMP, WebP};
use test_support::images::{
    CMYK_JPEG, contains, encoded, exif_with_gps, phone_photo, picture, png_claiming,
};

use super::*;

const LIMITS: Limits = Limits {
    max_pixels: 50_000_000,
    max_dimension: 20_000,
};

fn pixels(bytes: &[u8]) -> Vec<u8> {
    image::load_from_memory(bytes)
        .expect("decodes")
        .to_rgb8()
        .into_raw()
}

#[test]
fn a_phone_photo_loses_its_gps_block_xmp_and_comment_and_keeps_its_orientation() {
    let photo = phone_photo();

    let processed = process(photo.clone(), Format::Jpeg, &LIMITS, true).expect("processed");

    assert!(processed.changed);
    let exif = exif::Reader::new()
        .read_from_container(&mut Cursor::new(&processed.bytes[..]))
        .expect("the orientation is still there");
    let tags: Vec<exif::Tag> = exif.fields().map(|field| field.tag).collect();
    assert_eq!(tags, [exif::Tag::Orientation]);
    assert_eq!(
        exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|field| field.value.get_uint(0)),
        Some(6)
    );
    assert!(!contains(&processed.bytes, b"xmpmeta"));
    assert!(!contains(&processed.bytes, b"camera serial"));
    assert_eq!(pixels(&processed.bytes), pixels(&photo), "not re-encoded");
}

#[test]
fn a_photo_turned_a_quarter_is_described_as_displayed() {
    let processed = process(phone_photo(), Format::Jpeg, &LIMITS, true).expect("processed");

    assert_eq!((processed.image.width, processed.image.height), (20, 40));
    assert!(processed.image.blurhash.len() >= 6);
}

#[test]
fn without_stripping_the_bytes_are_kept_as_sent() {
    let photo = phone_photo();

    let processed = process(photo.clone(), Format::Jpeg, &LIMITS, false).expect("processed");

    assert!(!processed.changed);
    assert_eq!(processed.bytes, photo);
}

#[test]
fn an_upright_image_without_metadata_is_stored_as_sent() {
    let png = encoded(&picture(), ImageFormat::Png);

    let processed = process(png.clone(), Format::Png, &LIMITS, true).expect("processed");

    assert!(!processed.changed);
    assert_eq!((processed.image.width, processed.image.height), (40, 20));
}

#[test]
fn png_text_chunks_are_removed() {
    let mut png = Png::from_bytes(encoded(&picture(), ImageFormat::Png)).expect("png");
    let position = png.chunks().len() - 1;
    png.chunks_mut().insert(
        position,
        PngChunk::new(*b"tEXt", Bytes::from_static(b"Comment\0GPS 48.85 N")),
    );
    let bytes = png.encoder().bytes();

    let processed = process(bytes, Format::Png, &LIMITS, true).expect("processed");

    assert!(processed.changed);
    assert!(!contains(&processed.bytes, b"GPS 48.85"));
    assert_eq!(
        pixels(&processed.bytes),
        pixels(&encoded(&picture(), ImageFormat::Png))
    );
}

#[test]
fn a_sixteen_bit_png_is_described() {
    let deep =
        DynamicImage::ImageRgba16(ImageBuffer::from_pixel(30, 10, Rgba([65535, 0, 0, 65535])));

    let processed =
        process(encoded(&deep, ImageFormat::Png), Format::Png, &LIMITS, true).expect("processed");

    assert_eq!((processed.image.width, processed.image.height), (30, 10));
}

#[test]
fn a_png_whose_header_claims_a_hundred_thousand_pixels_a_side_is_refused_before_decoding() {
    let refused = process(png_claiming(100_000, 100_000), Format::Png, &LIMITS, true);

    assert_eq!(
        refused,
        Err(MediaError::TooLarge {
            width: 100_000,
            height: 100_000,
            setting: "media.max_dimension",
            limit: 20_000,
        })
    );
}

#[test]
fn an_image_over_the_pixel_limit_is_refused() {
    let limits = Limits {
        max_pixels: 799,
        ..LIMITS
    };

    let refused = process(
        encoded(&picture(), ImageFormat::Png),
        Format::Png,
        &limits,
        true,
    );

    assert!(matches!(
        refused,
        Err(MediaError::TooLarge {
            setting: "media.max_pixels",
            limit: 799,
            ..
        })
    ));
}

#[test]
fn a_truncated_jpeg_is_unreadable() {
    let photo = encoded(&picture(), ImageFormat::Jpeg);

    let refused = process(photo.slice(..photo.len() / 2), Format::Jpeg, &LIMITS, true);

    assert!(
        matches!(refused, Err(MediaError::Unreadable(_))),
        "{refused:?}"
    );
}

#[test]
fn an_animated_gif_is_described_by_its_first_frame_and_kept_as_sent() {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
        let frames = (0..12u8)
            .map(|n| image::Frame::new(ImageBuffer::from_pixel(16, 8, Rgba([n * 20, 0, 0, 255]))));
        encoder.encode_frames(frames).expect("gif");
    }
    let gif = Bytes::from(bytes);

    let processed = process(gif.clone(), Format::Gif, &LIMITS, true).expect("processed");

    assert_eq!((processed.image.width, processed.image.height), (16, 8));
    assert_eq!(processed.bytes, gif);
}

#[test]
fn webp_exif_and_xmp_chunks_are_removed_and_the_header_flags_follow() {
    let mut webp = WebP::from_bytes(encoded(&picture(), ImageFormat::WebP)).expect("webp");
    webp.set_exif(Some(exif_with_gps()));
    webp.chunks_mut().push(RiffChunk::new(
        CHUNK_XMP,
        RiffContent::Data(Bytes::from_static(b"<x:xmpmeta>serial 4242</x:xmpmeta>")),
    ));
    let bytes = webp.encoder().bytes();

    let processed = process(bytes, Format::WebP, &LIMITS, true).expect("processed");

    assert!(!contains(&processed.bytes, b"xmpmeta"));
    let stripped = WebP::from_bytes(processed.bytes.clone()).expect("webp");
    assert!(!stripped.has_chunk(CHUNK_XMP));
    assert_eq!(
        stripped.exif().map(|exif| exif.len()),
        Some(26),
        "orientation only"
    );
    assert_eq!((processed.image.width, processed.image.height), (20, 40));
    assert_eq!(
        pixels(&processed.bytes),
        pixels(&encoded(&picture(), ImageFormat::WebP))
    );
}

#[test]
fn a_cmyk_jpeg_is_described_and_kept_as_sent() {
    let processed =
        process(Bytes::from_static(CMYK_JPEG), Format::Jpeg, &LIMITS, true).expect("processed");

    assert_eq!((processed.image.width, processed.image.height), (32, 16));
    assert!(!processed.changed, "it carries no metadata to strip");
}

#[test]
fn an_image_appended_after_the_first_as_a_phone_does_is_removed_with_its_metadata() {
    let mut photo = phone_photo().to_vec();
    photo.extend_from_slice(&phone_photo());

    let processed = process(Bytes::from(photo), Format::Jpeg, &LIMITS, true).expect("processed");

    assert!(
        !contains(&processed.bytes, &[0x88, 0x25, 0, 4]),
        "a GPS pointer is left"
    );
    assert!(!contains(&processed.bytes, b"xmpmeta"));
    assert!(!contains(&processed.bytes, b"camera serial"));
}

#[test]
fn decoding_a_jpeg_needs_an_eighth_of_its_sides_and_a_png_all_of_its_pixels() {
    let jpeg = test_support::images::photo_jpeg(800, 600);
    let png = encoded(&picture(), ImageFormat::Png);

    assert_eq!(
        decoding_bytes(&jpeg, Format::Jpeg, &LIMITS),
        Ok(100 * 75 * 3)
    );
    assert_eq!(decoding_bytes(&png, Format::Png, &LIMITS), Ok(40 * 20 * 3));
}

#[test]
fn the_decoding_estimate_refuses_what_the_limits_refuse() {
    let bomb = png_claiming(100_000, 100_000);

    assert!(matches!(
        decoding_bytes(&bomb, Format::Png, &LIMITS),
        Err(MediaError::TooLarge { .. })
    ));
}
