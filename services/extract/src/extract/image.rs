//! Images: dimensions read from the header and checked before any pixel is decoded,
//! then a bounded decode, a thumbnail, and on request a downscaled copy for vision models.

use std::io::Cursor;

use std::borrow::Cow;

use crate::types::{ImageInfo, PromptImage, Thumbnail};
use image::{DynamicImage, ImageReader, imageops::FilterType};

use crate::detect::ImageFormat;
use crate::error::{ExtractError, Result};
use crate::extract::{ImageOutput, Limits};

pub const THUMBNAIL_SIDE: u32 = 256;

fn format_of(f: ImageFormat) -> image::ImageFormat {
    match f {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Gif => image::ImageFormat::Gif,
    }
}

fn corrupt(f: ImageFormat, e: impl std::fmt::Display) -> ExtractError {
    ExtractError::invalid(format!(
        "the {} image is corrupt or truncated: {e}",
        f.name().to_uppercase()
    ))
}

/// Width and height from the header only.
pub fn dimensions(data: &[u8], f: ImageFormat) -> Result<(u32, u32)> {
    ImageReader::with_format(Cursor::new(data), format_of(f))
        .into_dimensions()
        .map_err(|e| corrupt(f, e))
}

/// Checks the declared size, then decodes with allocation limits.
pub fn decode(data: &[u8], f: ImageFormat, limits: &Limits) -> Result<DynamicImage> {
    let (w, h) = dimensions(data, f)?;
    if w == 0 || h == 0 {
        return Err(corrupt(f, "zero width or height"));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_image_pixels || w > limits.max_image_side || h > limits.max_image_side {
        return Err(ExtractError::invalid(format!(
            "the image is {w}×{h} pixels ({:.0} megapixels); at most {} megapixels and {} pixels per side are accepted",
            pixels as f64 / 1e6,
            limits.max_image_pixels / 1_000_000,
            limits.max_image_side
        )));
    }
    // JPEG decoders fill a cut-off image with grey; a complete one has an EOI marker.
    if f == ImageFormat::Jpeg && !data.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(corrupt(f, "the file is truncated (no end-of-image marker)"));
    }
    limits.check_time()?;
    let mut reader = ImageReader::with_format(Cursor::new(data), format_of(f));
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_image_side);
    l.max_image_height = Some(limits.max_image_side);
    // 4 bytes per pixel plus decoder working memory.
    l.max_alloc = Some(limits.max_image_pixels * 8 + (64 << 20));
    reader.limits(l);
    reader.decode().map_err(|e| corrupt(f, e))
}

pub fn inspect(data: &[u8], f: ImageFormat, limits: &Limits) -> Result<ImageOutput> {
    let img = decode(data, f, limits)?;
    limits.check_time()?;
    let thumb = img.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let (mime_type, bytes) = encode(&thumb, f == ImageFormat::Jpeg, 80)?;
    Ok(ImageOutput {
        info: ImageInfo {
            width: img.width(),
            height: img.height(),
            format: f.name().to_owned(),
        },
        thumbnail: Some(Thumbnail {
            mime_type: mime_type.to_owned(),
            data: bytes,
            width: thumb.width(),
            height: thumb.height(),
        }),
    })
}

/// JPEG for photos without transparency, PNG otherwise.
fn encode(img: &DynamicImage, prefer_jpeg: bool, quality: u8) -> Result<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    if prefer_jpeg || !img.color().has_alpha() && img.width() * img.height() > 512 * 512 {
        let rgb = img.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(&rgb)
            .map_err(|e| ExtractError::Internal(e.into()))?;
        Ok(("image/jpeg", out))
    } else {
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .map_err(|e| ExtractError::Internal(e.into()))?;
        Ok(("image/png", out))
    }
}

/// An image for a vision model: the original bytes when already small enough and not
/// animated, else a downscaled re-encode (longest side ≤ `max_side`).
pub fn prompt_image<'a>(
    data: &'a [u8],
    f: ImageFormat,
    max_side: u32,
    limits: &Limits,
) -> Result<PromptImage<'a>> {
    let (w, h) = dimensions(data, f)?;
    if w.max(h) <= max_side && f != ImageFormat::Gif {
        return Ok(PromptImage {
            mime_type: format!("image/{}", f.name()),
            data: Cow::Borrowed(data),
            width: w,
            height: h,
        });
    }
    let img = decode(data, f, limits)?;
    let img = if img.width().max(img.height()) > max_side {
        img.resize(max_side, max_side, FilterType::Triangle)
    } else {
        img
    };
    let (mime, bytes) = encode(&img, f == ImageFormat::Jpeg, 85)?;
    Ok(PromptImage {
        mime_type: mime.to_owned(),
        data: Cow::Owned(bytes),
        width: img.width(),
        height: img.height(),
    })
}
