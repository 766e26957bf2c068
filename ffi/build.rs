//! Generates the C header with cbindgen (pinned in Cargo.toml) into
//! OUT_DIR. The committed `include/tidelog.h` must equal it: the unit test
//! `header_is_current` fails otherwise. To refresh the committed header
//! after an API change, build with `TIDELOG_UPDATE_HEADER=1`.
//!
//! The header's `TIDELOG_VERSION` macros come from the package version
//! (the workspace's `version`), so a release bump shows in the header too.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TIDELOG_UPDATE_HEADER");

    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml is readable and valid");
    config.after_includes = Some(version_macros());
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

/// `TIDELOG_VERSION` and its parts, documented (the C tests check that
/// every declaration of the header has a Doxygen comment).
fn version_macros() -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo"));
    let version = var("CARGO_PKG_VERSION");
    format!(
        r#"
/**
 * The version of the tidelog release this header belongs to,
 * "MAJOR.MINOR.PATCH". tidelog_version() returns the loaded library's:
 * the two differ when the program was compiled against another release's
 * header than the library it runs with.
 */
#define TIDELOG_VERSION "{version}"

/**
 * The major number of ::TIDELOG_VERSION.
 */
#define TIDELOG_VERSION_MAJOR {major}

/**
 * The minor number of ::TIDELOG_VERSION.
 */
#define TIDELOG_VERSION_MINOR {minor}

/**
 * The patch number of ::TIDELOG_VERSION.
 */
#define TIDELOG_VERSION_PATCH {patch}"#,
        major = var("CARGO_PKG_VERSION_MAJOR"),
        minor = var("CARGO_PKG_VERSION_MINOR"),
        patch = var("CARGO_PKG_VERSION_PATCH"),
    )
}
