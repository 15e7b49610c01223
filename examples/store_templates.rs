//! Rewrites a template dictionary with its templates stored as f32 or bf16
//! (`scripts/make-builtin-templates.sh` uses it for the built-in dictionary).
//!
//! ```sh
//! cargo run --release --example store_templates -- IN.templates bf16 OUT.templates
//! ```

use std::path::Path;

use sscnmf::templates::{StoredPrecision, TemplateDictionary};

fn main() -> sscnmf::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let precision = match (args.len(), args.get(1).map(String::as_str)) {
        (3, Some("f32")) => StoredPrecision::F32,
        (3, Some("bf16")) => StoredPrecision::Bf16,
        _ => {
            eprintln!("usage: store_templates IN.templates f32|bf16 OUT.templates");
            std::process::exit(2);
        }
    };
    let dictionary = TemplateDictionary::load(Path::new(&args[0]))?;
    sscnmf::files::write_atomically(Path::new(&args[2]), &dictionary.to_bytes_as(precision)?)?;
    Ok(())
}
