# The enclave image, for `nitro-cli build-enclave --docker-uri signer-enclave:<version> --output-file signer.eif`.
#
# Build the binary first with `scripts/reproduce`: it builds the static enclave binary twice from
# the committed tree in two directories and checks the two are bit-identical, then leaves it in
# target/reproduce/. This file only places that binary in an empty image, so the image has no
# base layers to pin: `scratch` is not an image but the empty filesystem. (A builder image would
# have to be pinned by digest, `rust@sha256:…`; building outside Docker with the toolchain pinned
# by rust-toolchain.toml and rustup's checked downloads avoids trusting one.)
#
# For the EIF's PCR0 to be reproducible too (deploy/README.md, "Reproducing the measurements"):
# build this image with timestamps rewritten (`SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
# docker buildx build --output type=docker,rewrite-timestamp=true …`), and use the same Nitro CLI
# release, whose kernel, init and nsm.ko blobs (/usr/share/nitro_enclaves/blobs/) enter PCR0 and
# PCR1: record their SHA-384s with the release.
#
#   docker buildx build --build-arg SIGNER_ENCLAVE_DEPLOYMENT_ID=prod-eu-1 \
#     --build-arg SIGNER_ENCLAVE_KEYRING_CREATORS=ed25519:<hex>,… \
#     --build-arg SIGNER_ENCLAVE_KMS_KEY_ARN=arn:aws:kms:… -t signer-enclave:<version> .

FROM scratch
COPY --chmod=0555 target/reproduce/signer-enclave /signer-enclave
# In the enclave the internal API listens on vsock (any CID: the host dials the enclave's), KMS
# is reached through the parent's `vsock-proxy 8000 kms.<region>.amazonaws.com 443`, and
# attestation comes from the NSM. The enclave brings its loopback interface up itself (it boots
# down, and AWS's init leaves it so): the KMS forwarder listens on 127.0.0.1:443.
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
