//! Deployment tooling: the KMS key policy for an enclave image's measurements, and the
//! assessment of a running deployment against what it should be.

pub mod assess;
pub mod key_policy;

/// Parses 96 hex digits (a SHA-384 register), upper or lower case, into lower-case hex.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for anything else.
pub fn normalise_pcr(hex_text: &str) -> Result<String, crate::Error> {
    let text = hex_text
        .trim()
        .trim_start_matches("0x")
        .to_ascii_lowercase();
    match hex::decode(&text) {
        Ok(bytes) if bytes.len() == 48 => Ok(text),
        _ => Err(crate::Error::InvalidArgument(
            "a PCR is 48 bytes of hex (96 digits)",
        )),
    }
}

#[cfg(test)]
mod tests;
