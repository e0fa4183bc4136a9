//! Compiles `proto/signer/v1/*.proto` with protox (no `protoc` needed) and generates the tonic code.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/signer/v1/common.proto",
        "proto/signer/v1/signer.proto",
        "proto/signer/v1/enclave.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("signer_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Carries an AWS secret access key: its Debug is written by hand (redacted) in lib.rs.
        .skip_debug([".signer.v1.AwsCredentials"])
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
