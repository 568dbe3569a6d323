//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/sealgate/v1/sealgate.proto"];
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sealgate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".sealgate.v1")
        // prost's codec, but a request that does not decode is
        // INVALID_ARGUMENT, not INTERNAL (src/api/codec.rs).
        .codec_path("crate::api::codec::Codec")
        // google.rpc.Status as tonic-types defines it, so a tonic::Status's
        // details convert without copying field by field.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    // The schema migrations embedded by sqlx::migrate! (keys::sqlite,
    // keys::postgres): a changed migration rebuilds the crate.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
