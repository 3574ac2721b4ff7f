//! Writes the CRD YAML of every kind into the directory named by its argument.
//!
//! `make generate` runs it; `make check-generated` fails when the committed files differ.

use std::path::PathBuf;
use std::process::ExitCode;

use oms_crds::generate::{all_crds, to_yaml};

fn main() -> ExitCode {
    let Some(out_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: crdgen <output directory>   (make generate passes crds/)");
        return ExitCode::from(2);
    };
    for (file, crd) in all_crds() {
        let path = out_dir.join(file);
        let written = to_yaml(&crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&path, yaml).map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("crdgen: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
