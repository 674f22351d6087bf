//! Generates the Rust code for `hostwatch/v1/*.proto` with protox (no system protoc), and
//! writes the file descriptor set the aggregator serves through gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "hostwatch/v1/ingest.proto",
        "hostwatch/v1/operator.proto",
        "hostwatch/v1/integrations.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hostwatch_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .client_mod_attribute("hostwatch.v1", r#"#[cfg(feature = "client")]"#)
        .server_mod_attribute("hostwatch.v1", r#"#[cfg(feature = "server")]"#)
        .compile_fds(descriptors)?;
    Ok(())
}
