//! `sscnmf evaluate`: mir_eval-style scores of one note list against another.

use super::*;

#[derive(Args, Debug)]
pub(super) struct EvaluateArgs {
    /// Reference notes (MIDI, CSV, MAPS txt or JSON).
    reference: PathBuf,
    /// Estimated notes (same formats).
    estimate: PathBuf,
    /// Onset tolerance in seconds.
    #[arg(long, default_value_t = 0.05)]
    onset_tolerance: f64,
    /// Offset tolerance as a fraction of the reference note's duration (at least 50 ms).
    #[arg(long, default_value_t = 0.2)]
    offset_ratio: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(super) fn evaluate_cmd(a: EvaluateArgs) -> anyhow::Result<()> {
    let reference = read_notes(&a.reference)?;
    let estimate = read_notes(&a.estimate)?;
    let e = evaluate(&reference, &estimate, a.onset_tolerance, a.offset_ratio);
    if a.json {
        println!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    println!("{} reference notes, {} estimated notes", e.n_reference, e.n_estimate);
    println!("{:<16} {:>9} {:>9} {:>9} {:>9} {:>8}", "", "Precision", "Recall", "F1", "Accuracy", "Matched");
    for (name, s) in [("Onset", &e.onset), ("Onset + offset", &e.onset_offset)] {
        println!(
            "{:<16} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            name, s.precision, s.recall, s.f_measure, s.accuracy, s.matched
        );
    }
    Ok(())
}
