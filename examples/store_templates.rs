//! Rewrites a template dictionary with its templates stored as f32 or bf16
//! (`scripts/make-builtin-templates.sh` uses it for the built-in dictionary).
//! Given an isolated notes' folder, it then calibrates the decision rule of
//! the stored (rounded) templates on them (`sscnmf::calibration`), so that
//! the calibration is that of the templates as they will be read (how the
//! calibrated variant of the built-in dictionary in assets/README.md was
//! made).
//!
//! ```sh
//! cargo run --release --example store_templates -- IN.templates bf16 OUT.templates [NOTES_DIR]
//! ```

use std::path::Path;

use sscnmf::calibration::{calibrate_on_folder, calibration_transcriber};
use sscnmf::templates::{StoredPrecision, TemplateDictionary};

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let precision = match (args.len(), args.get(1).map(String::as_str)) {
        (3 | 4, Some("f32")) => StoredPrecision::F32,
        (3 | 4, Some("bf16")) => StoredPrecision::Bf16,
        _ => {
            eprintln!("usage: store_templates IN.templates f32|bf16 OUT.templates [NOTES_DIR]");
            std::process::exit(2);
        }
    };
    let dictionary = TemplateDictionary::load(Path::new(&args[0]))?;
    let mut stored = TemplateDictionary::from_bytes(&dictionary.to_bytes_as(precision)?)?;
    if let Some(notes) = args.get(3) {
        let plain = TemplateDictionary { calibration: None, ..stored.clone() };
        let c = calibrate_on_folder(&calibration_transcriber(plain)?, Path::new(notes), 0)?;
        eprintln!("calibrated: {}", c.to_json());
        stored.calibration = Some(c);
    }
    sscnmf::files::write_atomically(Path::new(&args[2]), &stored.to_bytes_as(precision)?)?;
    Ok(())
}
