//! Images made for tests with the `image` crate's encoders, and the metadata a phone
//! writes into them.

use std::io::Cursor;

use bytes::Bytes;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use img_parts::ImageEXIF;
use img_parts::jpeg::{Jpeg, JpegSegment, markers};
use img_parts::png::{Png, PngChunk};

/// A 40 × 20 image: red on the left half, blue on the right.
pub fn picture() -> DynamicImage {
    DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([220, 20, 20])
        } else {
            Rgb([20, 20, 220])
        }
    }))
}

/// A `width` × `height` photo-like JPEG: a gradient, red on the left half, blue on the
/// right.
pub fn photo_jpeg(width: u32, height: u32) -> Bytes {
    let image = ImageBuffer::from_fn(width, height, |x, y| {
        let shade = (y * 100 / height) as u8;
        if x < width / 2 {
            Rgb([200, shade, shade])
        } else {
            Rgb([shade, shade, 200])
        }
    });
    encoded(&DynamicImage::ImageRgb8(image), ImageFormat::Jpeg)
}

/// A 32 × 16 CMYK JPEG, red on the left half and blue on the right, as ImageMagick writes
/// one for print (`-colorspace CMYK`: Adobe's inverted inks).
pub const CMYK_JPEG: &[u8] = include_bytes!("../fixtures/cmyk.jpg");

/// `image` encoded as `format`.
pub fn encoded(image: &DynamicImage, format: ImageFormat) -> Bytes {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    Bytes::from(bytes.into_inner())
}

/// A big-endian TIFF block as a phone writes one: orientation 6 (turn a quarter right)
/// and a GPS directory holding a latitude.
pub fn exif_with_gps() -> Bytes {
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&2u16.to_be_bytes());
    // Orientation, SHORT, 1: 6.
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
    // GPS directory pointer, LONG, 1: at offset 38 (8 + 2 + 2 × 12 + 4).
    tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    // GPS directory: GPSLatitudeRef, ASCII, 2: "N".
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&[0x00, 0x01, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    Bytes::from(tiff)
}

/// An XMP packet naming the camera's serial number, as a JPEG `APP1` segment holds it.
pub const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>serial 4242</x:xmpmeta>";

/// [`picture`] as a phone photo: a JPEG with [`exif_with_gps`], [`XMP`] and a comment
/// naming the camera.
pub fn phone_photo() -> Bytes {
    let mut jpeg = Jpeg::from_bytes(encoded(&picture(), ImageFormat::Jpeg)).unwrap();
    jpeg.set_exif(Some(exif_with_gps()));
    jpeg.segments_mut().insert(
        1,
        JpegSegment::new_with_contents(markers::APP1, Bytes::from_static(XMP)),
    );
    jpeg.segments_mut().insert(
        1,
        JpegSegment::new_with_contents(markers::COM, Bytes::from_static(b"camera serial 4242")),
    );
    jpeg.encoder().bytes()
}

/// A PNG whose header claims `width` × `height` pixels over [`picture`]'s few bytes: a
/// decompression bomb, as far as a decoder that trusts the header knows.
pub fn png_claiming(width: u32, height: u32) -> Bytes {
    let mut png = Png::from_bytes(encoded(&picture(), ImageFormat::Png)).unwrap();
    let header = png.chunks()[0].contents().to_vec();
    let mut claimed = width.to_be_bytes().to_vec();
    claimed.extend_from_slice(&height.to_be_bytes());
    claimed.extend_from_slice(&header[8..]);
    png.chunks_mut()[0] = PngChunk::new(*b"IHDR", Bytes::from(claimed));
    png.encoder().bytes()
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
