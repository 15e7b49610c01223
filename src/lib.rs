//! # sscnmf
//!
//! Piano transcription by semi-supervised convolutive NMF
//! (Wu, Marmoret & Cohen, "Semi-Supervised Convolutive NMF for Automatic Music
//! Transcription", SMC 2022).
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! [`audio`] → [`spectrogram`] → [`factorization`] → [`templates`] →
//! [`attack_decay`] (a baseline's model) → [`transcription`] (activations → notes) → [`notes`] (MIDI, CSV, MAPS txt) →
//! [`evaluation`] → [`experiments`]; [`synth`] turns notes back into sound
//! (the additive piano, or a SoundFont through [`soundfont`]), and [`plot`]
//! draws pictures of any stage's results. [`calibration`] chooses the
//! decision rule's numbers on the isolated notes; they travel in the
//! dictionary file as plain data ([`decision`]), and [`model_file`] tells the
//! kinds of model file apart, so that no stage depends on a later one.
//!
//! ```no_run
//! use std::path::Path;
//! use sscnmf::notes::{write_notes, NoteFormat};
//! use sscnmf::templates::TemplateDictionary;
//! use sscnmf::transcription::Transcriber;
//!
//! # fn main() -> sscnmf::Result<()> {
//! // Templates learned by `sscnmf learn`; `TemplateDictionary::builtin()` is the CLI's default.
//! let dictionary = TemplateDictionary::load(Path::new("piano.templates"))?;
//! let transcriber = Transcriber::new(dictionary)?;
//! let transcription = transcriber.transcribe_file(Path::new("song.flac"))?;
//! write_notes(Path::new("song.mid"), &transcription.notes, NoteFormat::Midi)?;
//! # Ok(())
//! # }
//! ```

// Numerical loops read like the formulas they implement (W[f,i,q], H[q,t−i]);
// index loops are clearer there than iterator chains.
#![allow(clippy::needless_range_loop)]

pub mod attack_decay;
pub mod audio;
pub mod calibration;
pub mod decision;
pub mod error;
pub mod evaluation;
pub mod experiments;
pub mod factorization;
pub mod files;
pub mod fuzzing;
pub mod model_file;
pub mod notes;
pub mod plot;
pub mod soundfont;
pub mod spectrogram;
pub mod synth;
pub mod templates;
pub mod transcription;

pub use error::{Error, ErrorKind, Result};

/// The README's Rust examples, compiled as doc tests (`cargo test --doc`),
/// so that the library tour cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
