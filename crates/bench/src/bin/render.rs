//! `posts-api-render`: one variant render in a process of its own, so `scripts/bench-images`
//! can time it and read its peak memory beside `vipsthumbnail` and ImageMagick on the same
//! files; and the photo-like files they are given.
//!
//! ```text
//! posts-api-render photo WIDTH HEIGHT OUT.{jpg,png}   # a noisy gradient, like a photo
//! posts-api-render thumb IN.{jpg,png} OUT.jpg         # the default `thumb`: 320 × 320 cover, JPEG q80
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use media::{Encoding, Fit, Format, Limits, VariantSpec};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a photo-like image: gradients with grain, so it compresses as a photo does.
    Photo {
        width: u32,
        height: u32,
        out: PathBuf,
    },
    /// Renders the default `thumb` variant of an image.
    Thumb { input: PathBuf, out: PathBuf },
}

/// The service's default `thumb` (config/default.toml).
const THUMB: VariantSpec = VariantSpec {
    width: 320,
    height: Some(320),
    fit: Fit::Cover,
    encoding: Encoding::Jpeg { quality: 80 },
};

/// The service's default limits.
const LIMITS: Limits = Limits {
    max_pixels: 50_000_000,
    max_dimension: 20_000,
};

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Photo { width, height, out } => photo(width, height, &out),
        Command::Thumb { input, out } => {
            let bytes = std::fs::read(&input).with_context(|| format!("reading {input:?}"))?;
            let rendered = media::render(&bytes, format_of(&input)?, &LIMITS, &THUMB)?;
            std::fs::write(&out, &rendered.bytes).with_context(|| format!("writing {out:?}"))
        }
    }
}

fn format_of(path: &Path) -> anyhow::Result<Format> {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("jpg" | "jpeg") => Ok(Format::Jpeg),
        Some("png") => Ok(Format::Png),
        _ => bail!("{path:?}: not .jpg or .png"),
    }
}

fn photo(width: u32, height: u32, out: &Path) -> anyhow::Result<()> {
    let mut seed: u32 = 0x9e37_79b9;
    let image = ImageBuffer::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % 48) as u8;
        let red = (x * 200 / width) as u8;
        let green = (y * 180 / height) as u8;
        let blue = ((x + y) * 150 / (width + height)) as u8;
        Rgb([
            red.saturating_add(grain),
            green.saturating_add(grain),
            blue.saturating_add(grain),
        ])
    });
    let file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {out:?}"))?,
    );
    // A camera's quality: about a megabyte for every 3 MP, as phones write them.
    let written = match format_of(out)? {
        Format::Png => DynamicImage::ImageRgb8(image)
            .write_to(&mut std::io::BufWriter::new(file), ImageFormat::Png),
        _ => JpegEncoder::new_with_quality(file, 92).encode_image(&image),
    };
    written.with_context(|| format!("writing {out:?}"))
}
