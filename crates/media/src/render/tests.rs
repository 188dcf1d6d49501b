//! Unit tests of `render`: sizes, fits, orientation and encodings, on images made with the
//! `image` crate's encoders.

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, Rgba};
use test_support::images::{CMYK_JPEG, contains, encoded, phone_photo, photo_jpeg, picture};

use super::*;

const LIMITS: Limits = Limits {
    max_pixels: 50_000_000,
    max_dimension: 20_000,
};

const JPEG: Encoding = Encoding::Jpeg { quality: 85 };

fn spec(width: u32, height: Option<u32>, fit: Fit) -> VariantSpec {
    VariantSpec {
        width,
        height,
        fit,
        encoding: JPEG,
    }
}

/// [`picture`] (40 × 20, red then blue) as a PNG, rendered to `spec`.
fn rendered_picture(spec: VariantSpec) -> Rendered {
    let bytes = encoded(&picture(), ImageFormat::Png);
    render(&bytes, Format::Png, &LIMITS, &spec).expect("rendered")
}

fn decoded(rendered: &Rendered) -> DynamicImage {
    image::load_from_memory(&rendered.bytes).expect("decodes")
}

fn is_red(pixel: Rgb<u8>) -> bool {
    pixel.0[0] > 150 && pixel.0[2] < 100
}

#[test]
fn cover_fills_the_box_with_the_middle_of_the_image() {
    let rendered = rendered_picture(spec(10, Some(10), Fit::Cover));

    assert_eq!((rendered.width, rendered.height), (10, 10));
    let image = decoded(&rendered).to_rgb8();
    assert!(
        is_red(*image.get_pixel(1, 5)),
        "the left of the middle is red"
    );
    assert!(
        !is_red(*image.get_pixel(8, 5)),
        "the right of the middle is blue"
    );
}

#[test]
fn inside_keeps_the_proportions() {
    let bytes = photo_jpeg(2000, 1000);

    let rendered =
        render(&bytes, Format::Jpeg, &LIMITS, &spec(320, None, Fit::Inside)).expect("rendered");

    assert_eq!((rendered.width, rendered.height), (320, 160));
    assert_eq!(decoded(&rendered).width(), 320);
}

#[test]
fn a_large_jpeg_is_decoded_at_a_reduced_size_and_still_covers_the_box() {
    let bytes = photo_jpeg(4000, 3000);

    let rendered = render(
        &bytes,
        Format::Jpeg,
        &LIMITS,
        &spec(320, Some(320), Fit::Cover),
    )
    .expect("rendered");

    assert_eq!((rendered.width, rendered.height), (320, 320));
    let image = decoded(&rendered).to_rgb8();
    assert!(is_red(*image.get_pixel(10, 160)));
    assert!(!is_red(*image.get_pixel(310, 160)));
}

#[test]
fn a_small_image_is_never_enlarged() {
    let bytes = encoded(&picture(), ImageFormat::Jpeg);

    let rendered = render(
        &bytes,
        Format::Jpeg,
        &LIMITS,
        &spec(1280, None, Fit::Inside),
    )
    .expect("rendered");

    assert_eq!((rendered.width, rendered.height), (40, 20));
}

#[test]
fn a_photo_turned_a_quarter_is_rendered_upright_without_metadata() {
    let photo = phone_photo();

    let rendered =
        render(&photo, Format::Jpeg, &LIMITS, &spec(10, None, Fit::Inside)).expect("rendered");

    assert_eq!((rendered.width, rendered.height), (10, 20));
    let image = decoded(&rendered).to_rgb8();
    assert!(
        is_red(*image.get_pixel(5, 2)),
        "the left of the photo is on top"
    );
    assert!(!is_red(*image.get_pixel(5, 18)));
    assert!(!contains(&rendered.bytes, b"Exif"));
    assert!(!contains(&rendered.bytes, b"xmpmeta"));
}

#[test]
fn transparency_is_flattened_onto_white_in_a_jpeg_and_kept_in_a_png() {
    let clear = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(8, 8, Rgba([0, 0, 0, 0])));
    let bytes = encoded(&clear, ImageFormat::Png);

    let jpeg = render(&bytes, Format::Png, &LIMITS, &spec(4, None, Fit::Inside)).expect("jpeg");
    let png_spec = VariantSpec {
        encoding: Encoding::Png,
        ..spec(4, None, Fit::Inside)
    };
    let png = render(&bytes, Format::Png, &LIMITS, &png_spec).expect("png");

    assert!(
        decoded(&jpeg)
            .to_rgb8()
            .get_pixel(2, 2)
            .0
            .iter()
            .all(|&c| c > 240)
    );
    assert_eq!(decoded(&png).to_rgba8().get_pixel(2, 2).0[3], 0);
}

#[test]
fn a_sixteen_bit_png_is_rendered() {
    let deep = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(30, 30, Rgb([65535, 0, 0])));
    let bytes = encoded(&deep, ImageFormat::Png);

    let rendered = render(
        &bytes,
        Format::Png,
        &LIMITS,
        &spec(10, Some(10), Fit::Cover),
    )
    .expect("rendered");

    assert!(is_red(*decoded(&rendered).to_rgb8().get_pixel(5, 5)));
}

#[test]
fn an_image_over_the_limits_is_refused_before_rendering() {
    let bytes = photo_jpeg(400, 300);
    let small = Limits {
        max_pixels: 10_000,
        max_dimension: 20_000,
    };

    let refused = render(&bytes, Format::Jpeg, &small, &spec(10, None, Fit::Inside));

    assert!(matches!(refused, Err(MediaError::TooLarge { .. })));
}

#[test]
fn a_cmyk_jpeg_is_rendered_in_its_colours() {
    let rendered = render(
        CMYK_JPEG,
        Format::Jpeg,
        &LIMITS,
        &spec(16, None, Fit::Inside),
    )
    .expect("rendered");

    let image = decoded(&rendered).to_rgb8();
    assert_eq!((image.width(), image.height()), (16, 8));
    assert!(
        is_red(*image.get_pixel(2, 4)),
        "{:?}",
        image.get_pixel(2, 4)
    );
    assert!(!is_red(*image.get_pixel(13, 4)));
    assert!(
        image.get_pixel(13, 4).0[2] > 150,
        "{:?}",
        image.get_pixel(13, 4)
    );
}

#[test]
fn an_image_smaller_than_a_cover_box_is_cropped_to_its_proportions_not_enlarged() {
    let rendered = rendered_picture(spec(320, Some(320), Fit::Cover));

    assert_eq!((rendered.width, rendered.height), (20, 20));
}
