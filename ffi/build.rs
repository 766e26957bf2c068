//! Generates the C header with cbindgen (pinned in Cargo.toml) into
//! OUT_DIR. The committed `include/tidelog.h` must equal it: the unit test
//! `header_is_current` fails otherwise. To refresh the committed header
//! after an API change, build with `TIDELOG_UPDATE_HEADER=1`.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TIDELOG_UPDATE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml is readable and valid");
    let header = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates include/tidelog.h");
    let fresh = out_dir.join("tidelog.h");
    header.write_to_file(&fresh);

    if std::env::var_os("TIDELOG_UPDATE_HEADER").is_some_and(|v| v == "1") {
        let committed = crate_dir.join("..").join("include").join("tidelog.h");
        std::fs::copy(&fresh, &committed).expect("write include/tidelog.h");
    }
}
