//! Renders the man page `radacctd.1` from the command line's definition (`src/cli/args.rs`):
//! into OUT_DIR, where `radacctd man` includes it, and beside the built binaries
//! (`target/<profile>/radacctd.1`), where `cargo deb` takes it for /usr/share/man/man1.

use std::path::{Path, PathBuf};

#[path = "src/cli/args.rs"]
#[allow(dead_code)]
mod args;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli/args.rs");
    println!("cargo:rerun-if-changed=build.rs");
    // The migrations are embedded by `sqlx::migrate!`, which does not track new files.
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let command = <args::Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command).render(&mut page)?;
    std::fs::write(out_dir.join("radacctd.1"), &page)?;
    // OUT_DIR is <target>/<profile>/build/radacctd-<hash>/out.
    if let Some(profile_dir) = out_dir.ancestors().nth(3).filter(|d| is_profile_dir(d)) {
        std::fs::write(profile_dir.join("radacctd.1"), &page)?;
    }
    Ok(())
}

fn is_profile_dir(dir: &Path) -> bool {
    dir.join("build").is_dir()
}
