//! Measurements of an enclave image file (EIF): the PCRs a Nitro enclave booted from it reports.
//!
//! An EIF is a 548-byte header followed by sections, each a 12-byte header (type, flags, size,
//! big-endian) and its bytes. The hypervisor measures them in file order: PCR0 over the kernel,
//! the command line and every ramdisk; PCR1 over the kernel, the command line and the first
//! ramdisk (the boot loader's); PCR2 over the other ramdisks (the application); PCR8, for a signed
//! image, over the DER of the signing certificate. Each register is the SHA-384 extend of zeros
//! with the SHA-384 of what it measures. The reader streams: a multi-gigabyte image needs no
//! more memory than the signature section, which is bounded.

use std::io::Read;

use der::{Decode as _, Encode as _};
use sha2::{Digest, Sha384};
use x509_cert::Certificate;

use super::{Error, pem_to_der};

/// `.eif`.
const MAGIC: [u8; 4] = *b".eif";
/// Header bytes: magic, version, flags, default memory and CPUs, reserved, section count, 32
/// section offsets and 32 sizes, unused, CRC-32.
const HEADER_LEN: usize = 4 + 2 + 2 + 8 + 8 + 2 + 2 + 32 * 8 * 2 + 4 + 4;
const SECTION_HEADER_LEN: usize = 12;
/// The format's limit on sections.
pub const MAX_SECTIONS: usize = 32;
/// Largest signature section read (a certificate and a COSE_Sign1 are a few KiB).
pub const MAX_SIGNATURE_SECTION: u64 = 64 * 1024;

/// What an enclave booted from the image reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMeasurements {
    /// The whole image: kernel, command line, every ramdisk.
    pub pcr0: [u8; 48],
    /// Kernel, command line and the first ramdisk.
    pub pcr1: [u8; 48],
    /// The application's ramdisks.
    pub pcr2: [u8; 48],
    /// The signing certificate, for a signed image.
    pub pcr8: Option<[u8; 48]>,
}

fn bad(why: &'static str) -> Error {
    Error::Image(why)
}

/// `SHA-384(zeros ‖ digest)`: one extend of a register that starts at zero.
fn extend_from_zero(digest: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    h.finalize().into()
}

/// The signature section: a CBOR array of `{signing_certificate: PEM bytes, signature: bytes}`.
/// PCR8 measures the first certificate's DER.
fn certificate_der(section: &[u8]) -> Result<Vec<u8>, Error> {
    let value: ciborium::Value =
        ciborium::from_reader(section).map_err(|_| bad("signature section is not CBOR"))?;
    let first = value
        .into_array()
        .ok()
        .and_then(|a| a.into_iter().next())
        .and_then(|v| v.into_map().ok())
        .ok_or_else(|| bad("signature section holds no signature"))?;
    let pem = first
        .into_iter()
        .find(|(k, _)| k.as_text() == Some("signing_certificate"))
        .and_then(|(_, v)| match v {
            ciborium::Value::Bytes(b) => Some(b),
            // serde writes a Vec<u8> field as an array of integers.
            ciborium::Value::Array(items) => items
                .into_iter()
                .map(|i| i.as_integer().and_then(|n| u8::try_from(n).ok()))
                .collect(),
            _ => None,
        })
        .ok_or_else(|| bad("signature has no signing certificate"))?;
    let pem = std::str::from_utf8(&pem).map_err(|_| bad("signing certificate is not PEM"))?;
    let der = pem_to_der(pem).ok_or_else(|| bad("signing certificate is not PEM"))?;
    // Measured as the certificate's canonical DER encoding.
    Certificate::from_der(&der)
        .and_then(|c| c.to_der())
        .map_err(|_| bad("signing certificate is not an X.509 certificate"))
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), Error> {
    r.read_exact(buf).map_err(|_| bad(what))
}

/// Reads an image from its first byte to its last and returns its measurements.
///
/// # Errors
/// [`Error::Image`] when the bytes are not a well-formed EIF: wrong magic, a section of an
/// unknown type, more sections than the format allows or than the header announces, a missing
/// kernel, command line or ramdisk, a truncated section, an unreadable signature.
pub fn measure(mut image: impl Read) -> Result<ImageMeasurements, Error> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(&mut image, &mut header, "shorter than an EIF header")?;
    if header[..4] != MAGIC {
        return Err(bad("not an EIF (magic)"));
    }
    let announced = usize::from(u16::from_be_bytes([header[26], header[27]]));
    if announced > MAX_SECTIONS {
        return Err(bad("more sections than the format allows"));
    }
    let (mut image_hash, mut boot_hash, mut app_hash) =
        (Sha384::new(), Sha384::new(), Sha384::new());
    let (mut kernels, mut cmdlines, mut ramdisks) = (0usize, 0usize, 0usize);
    let mut pcr8 = None;
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..announced {
        let mut sh = [0u8; SECTION_HEADER_LEN];
        read_exact(&mut image, &mut sh, "truncated section header")?;
        let kind = u16::from_be_bytes([sh[0], sh[1]]);
        let mut left = u64::from_be_bytes(sh[4..12].try_into().expect("8 bytes qed"));
        match kind {
            1 => kernels += 1,
            2 => cmdlines += 1,
            3 => ramdisks += 1,
            4 => {
                if pcr8.is_some() || left > MAX_SIGNATURE_SECTION {
                    return Err(bad("signature section repeated or too large"));
                }
                let mut section = vec![0u8; usize::try_from(left).expect("bounded qed")];
                read_exact(&mut image, &mut section, "truncated signature section")?;
                pcr8 = Some(extend_from_zero(&Sha384::digest(certificate_der(
                    &section,
                )?)));
                continue;
            }
            5 => {}
            _ => return Err(bad("unknown section type")),
        }
        if kernels > 1 || cmdlines > 1 || (kind != 1 && kernels == 0) {
            return Err(bad("kernel and command line must come first, once each"));
        }
        while left > 0 {
            let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            read_exact(&mut image, &mut buf[..n], "truncated section")?;
            let chunk = &buf[..n];
            left -= u64::try_from(n).expect("at most 64 KiB qed");
            match kind {
                1 | 2 => {
                    image_hash.update(chunk);
                    boot_hash.update(chunk);
                }
                3 if ramdisks == 1 => {
                    image_hash.update(chunk);
                    boot_hash.update(chunk);
                }
                3 => {
                    image_hash.update(chunk);
                    app_hash.update(chunk);
                }
                _ => {} // metadata: not measured
            }
        }
    }
    if kernels != 1 || cmdlines != 1 || ramdisks == 0 {
        return Err(bad("an EIF needs a kernel, a command line and a ramdisk"));
    }
    if image.read(&mut buf[..1]).map_err(|_| bad("unreadable"))? != 0 {
        return Err(bad("bytes after the announced sections"));
    }
    Ok(ImageMeasurements {
        pcr0: extend_from_zero(&image_hash.finalize()),
        pcr1: extend_from_zero(&boot_hash.finalize()),
        pcr2: extend_from_zero(&app_hash.finalize()),
        pcr8,
    })
}
