# The enclave image, for `nitro-cli build-enclave --docker-uri signer-enclave:latest --output-file signer.eif`.
#
# Reproducibility: the toolchain is pinned by rust-toolchain.toml, dependencies by Cargo.lock, and
# the build runs without network after `cargo fetch`. Pin both base images by digest
# (`image@sha256:…`) when cutting a release; this file names tags because the machines this
# project is developed on have no Docker engine to resolve digests with, and it has not been built
# on them.

FROM rust:1.95.0-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools file
WORKDIR /src
COPY . .
RUN cargo fetch --locked
RUN --network=none cargo build --locked --offline --profile enclave --target x86_64-unknown-linux-musl -p signer-enclave \
 && file target/x86_64-unknown-linux-musl/enclave/signer-enclave | grep -q 'statically linked'

FROM scratch AS enclave
COPY --from=build /src/target/x86_64-unknown-linux-musl/enclave/signer-enclave /signer-enclave
# In the enclave the internal API listens on vsock (any CID: the host dials the enclave's), KMS
# is reached through the parent's `vsock-proxy 8000 kms.<region>.amazonaws.com 443`, and
# attestation comes from the NSM. The image's init must bring the loopback interface up (the KMS
# forwarder listens on 127.0.0.1:443).
#
# The deployment's measured configuration is this image's environment, set at build time
# (`--build-arg`), so it is part of PCR0 and the host cannot change it:
#   SIGNER_ENCLAVE_DEPLOYMENT_ID       the deployment stamps name (e.g. prod-eu-1)
#   SIGNER_ENCLAVE_KEYRING_CREATORS    API keys that may create keyrings (ed25519:<hex>,…)
#   SIGNER_ENCLAVE_KMS_KEY_ARN         the wrapping key's full ARN (deploy/kms/key-policy.json)
# and optionally the limits (SIGNER_ENCLAVE_MAX_KEYRINGS, …; `signer-enclave --help`).
ARG SIGNER_ENCLAVE_DEPLOYMENT_ID
ARG SIGNER_ENCLAVE_KEYRING_CREATORS
ARG SIGNER_ENCLAVE_KMS_KEY_ARN
ENV SIGNER_ENCLAVE_DEPLOYMENT_ID=${SIGNER_ENCLAVE_DEPLOYMENT_ID} \
    SIGNER_ENCLAVE_KEYRING_CREATORS=${SIGNER_ENCLAVE_KEYRING_CREATORS} \
    SIGNER_ENCLAVE_KMS_KEY_ARN=${SIGNER_ENCLAVE_KMS_KEY_ARN}
ENTRYPOINT ["/signer-enclave", "--listen", "vsock://4294967295:5000", "--provider", "kms", "--attestor", "nsm", "--kms-vsock-proxy", "vsock://3:8000"]
