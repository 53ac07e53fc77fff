//! QR codes as the PNG images behind `qr_link`.

use qrcode::{Color, EcLevel, QrCode};
use thiserror::Error;
use uuid::Uuid;

use crate::store::{QrImage, Store, StoreError};

/// Side of the rendered image in pixels: large enough to scan from a screen.
pub const QR_IMAGE_SIZE: u32 = 512;
/// Light modules around the code, as the QR standard asks for.
const QUIET_ZONE: usize = 4;

/// A QR string could not be rendered.
#[derive(Debug, Error)]
pub enum QrImageError {
    /// The text does not fit a QR code.
    #[error("qr code text of {0} bytes cannot be encoded: {1}")]
    Encode(usize, String),
    /// PNG encoding failed.
    #[error("qr code png could not be written: {0}")]
    Png(String),
}

/// A QR image could not be served.
#[derive(Debug, Error)]
pub enum QrFetchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its code could not be rendered.
    #[error("qr image {image} could not be rendered: {source}")]
    Render {
        /// The image.
        image: Uuid,
        /// Why.
        source: QrImageError,
    },
    /// The rendering thread ended without an answer.
    #[error("the rendering of qr image {image} stopped: {detail}")]
    Stopped {
        /// The image.
        image: Uuid,
        /// What the thread said.
        detail: String,
    },
}

/// The PNG of QR image `image`, or `None` once it expired.
///
/// The image is rendered on its first fetch, on a blocking thread, and its PNG kept in the
/// store for the next ones: a login whose image nobody fetches costs no rendering.
pub async fn qr_png(store: &Store, image: Uuid) -> Result<Option<Vec<u8>>, QrFetchError> {
    let code = match store.qr_image(image).await? {
        None => return Ok(None),
        Some(QrImage::Png(png)) => return Ok(Some(png)),
        Some(QrImage::Code(code)) => code,
    };
    let png = tokio::task::spawn_blocking(move || render_png(&code))
        .await
        .map_err(|e| QrFetchError::Stopped {
            image,
            detail: e.to_string(),
        })?
        .map_err(|source| QrFetchError::Render { image, source })?;
    store.keep_qr_png(image, &png).await?;
    Ok(Some(png))
}

/// Renders `text` as a black-on-white, 512×512 grayscale PNG with medium error correction.
///
/// CPU-bound: call it from a blocking thread.
pub fn render_png(text: &str) -> Result<Vec<u8>, QrImageError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| QrImageError::Encode(text.len(), e.to_string()))?;
    let modules = code.width();
    let dark: Vec<bool> = code
        .to_colors()
        .into_iter()
        .map(|c| c == Color::Dark)
        .collect();
    let span = modules + 2 * QUIET_ZONE;
    let size = QR_IMAGE_SIZE as usize;
    let mut pixels = vec![255u8; size * size];
    for y in 0..size {
        let my = y * span / size;
        for x in 0..size {
            let mx = x * span / size;
            let inside = (QUIET_ZONE..QUIET_ZONE + modules).contains(&mx)
                && (QUIET_ZONE..QUIET_ZONE + modules).contains(&my);
            if inside && dark[(my - QUIET_ZONE) * modules + (mx - QUIET_ZONE)] {
                pixels[y * size + x] = 0;
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, QR_IMAGE_SIZE, QR_IMAGE_SIZE);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| QrImageError::Png(e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| QrImageError::Png(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| QrImageError::Png(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_512_pixel_png() {
        let png = render_png("2@abc,def,ghi,jkl,1").unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        assert_eq!(reader.info().width, QR_IMAGE_SIZE);
        assert_eq!(reader.info().height, QR_IMAGE_SIZE);
    }
}
