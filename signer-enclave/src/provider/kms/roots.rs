//! The trust anchors of the enclave's TLS connections to KMS: the Amazon Trust Services roots,
//! compiled into the binary (see `roots/PROVENANCE.md`). The store is built empty and given only
//! these, so neither a system store nor a host-supplied bundle (`SSL_CERT_FILE`) is ever read.

use aws_smithy_http_client::tls::{TlsContext, TrustStore};

use crate::Error;

/// The Amazon Trust Services roots, PEM.
pub const AMAZON_TRUST_SERVICES_PEM: &str =
    include_str!("../../../roots/amazon-trust-services.pem");

/// A TLS context trusting exactly the built-in roots.
///
/// # Errors
/// [`Error::Provider`] if the context cannot be built.
pub fn tls_context() -> Result<TlsContext, Error> {
    let store = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_TRUST_SERVICES_PEM.as_bytes());
    TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|_| Error::Provider("cannot build the TLS context for KMS"))
}

#[cfg(test)]
mod tests {
    use der::{Decode as _, Encode as _};
    use sha2::{Digest as _, Sha256};

    use super::*;

    #[test]
    fn exactly_the_five_amazon_trust_services_roots() {
        let blocks: Vec<Vec<u8>> = AMAZON_TRUST_SERVICES_PEM
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|b| b.contains("BEGIN"))
            .map(|b| der::pem::decode_vec(b.trim().as_bytes()).unwrap().1)
            .collect();
        let fingerprints: Vec<String> = blocks
            .iter()
            .map(|der| hex::encode(Sha256::digest(der)))
            .collect();
        assert_eq!(
            fingerprints,
            [
                "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
                "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
                "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
                "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
                "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
            ]
        );
        for der in &blocks {
            let cert = x509_cert::Certificate::from_der(der).unwrap();
            assert_eq!(cert.to_der().unwrap(), *der);
        }
        assert!(tls_context().is_ok());
    }
}
