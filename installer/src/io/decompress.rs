//! Decoders for the image formats, each reading from a buffered source.
//!
//! Every decoder here reports a stream that ends before its end marker as an error, which is
//! how a truncated download is told from a complete one.

use std::io::{self, BufRead, Read};

use osie_api::ImageFormat;

/// zstd images made with `--long=31` need a 2 GiB window; the decoder refuses larger
/// windows than it was told to accept.
const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// A reader of the decoded bytes of `src`. `format` must be decided (not `Auto`).
pub fn decoder<'a, R: BufRead + Send + 'a>(format: ImageFormat, src: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match format {
        ImageFormat::Raw | ImageFormat::Auto => Box::new(src),
        ImageFormat::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(src)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        // Multi-member: `pigz` and concatenated files produce several gzip members.
        ImageFormat::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(src)),
        ImageFormat::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(src)),
        // Not a stream: its clusters go to their own offsets (`image::qcow2`).
        ImageFormat::Qcow2 => {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "qcow2 is not decoded as one stream"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn compress(format: ImageFormat, data: &[u8]) -> Vec<u8> {
        match format {
            ImageFormat::Zstd => zstd::encode_all(data, 3).unwrap(),
            ImageFormat::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ImageFormat::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            _ => data.to_vec(),
        }
    }

    #[test]
    fn round_trips_and_truncation_is_an_error() {
        let data = sample();
        for f in [ImageFormat::Zstd, ImageFormat::Gzip, ImageFormat::Xz] {
            let c = compress(f, &data);
            assert_eq!(crate::io::sniff::sniff(&c), f);
            let mut out = Vec::new();
            decoder(f, &c[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{f:?}");
            for cut in [c.len() / 2, c.len() - 1] {
                let r = decoder(f, &c[..cut]).unwrap().read_to_end(&mut Vec::new());
                assert!(r.is_err(), "{f:?} cut at {cut}/{} decoded without error", c.len());
            }
        }
    }
}
