//! The attack/decay baseline's trained model (Cheng, Mauch, Benetos & Dixon,
//! ISMIR 2016): learning it from the same isolated notes as the CNMF
//! templates, and its file. The mathematics is in
//! [`crate::factorization::attack_decay`].
//!
//! # The model file (format version 1)
//!
//! A safetensors file like the template dictionary (see [`crate::templates`]):
//!
//! | tensor | dtype | shape | meaning |
//! |---|---|---|---|
//! | `attack` | F32 | [K, F] | attack spectrum `A[:, k]` of pitch `pitches[k]` |
//! | `decay` | F32 | [K, F] | decay spectrum `D[:, k]` |
//! | `decay_rates` | F32 | \[K\] | `α_k`, per frame |
//! | `envelope` | F32 | [2L + 1] | the attack envelope `P`, `P[L]` at the onset, peak 1 |
//! | `pitches` | U8 | \[K\] | MIDI pitches, strictly increasing |
//!
//! with the metadata of the template dictionary (`format` =
//! `sscnmf-attack-decay`, `format_version`, the STFT, `beta`, `iterations`,
//! `tool_version`, `source`, `missing_pitches`). Reading a template
//! dictionary as a model, or the reverse, is an error saying which kind of
//! file it is.

use std::path::Path;

use crate::audio::DecodeOptions;
use crate::factorization::attack_decay::{combine_notes, AttackDecayParams, NoteTraining};
use crate::model_file::open_model_file;
use crate::spectrogram::{Stft, StftConfig};
use crate::templates::{
    f32_values, learn_each, model_metadata, note_spectrogram, read_model_params, read_pitches, NoteRecording,
    TemplateParams,
};
use crate::{Error, ErrorKind, Result};

/// The model file's format name (`format` metadata key).
pub const FORMAT_NAME: &str = crate::model_file::ATTACK_DECAY_FORMAT;
/// The model file's format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// A trained attack/decay model for a set of MIDI pitches.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackDecayModel {
    /// Spectra, decay rates and envelope, note `k` for `pitches[k]`.
    pub params: AttackDecayParams,
    /// MIDI pitch of each note, strictly increasing.
    pub pitches: Vec<u8>,
    /// How it was made (the STFT transcription must use; `beta` is 1,
    /// `iterations` the training rounds per note).
    pub info: TemplateParams,
}

impl AttackDecayModel {
    /// The model as safetensors bytes (format above).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::{serialize, Dtype, TensorView};
        let p = &self.params;
        let (k, f) = (p.n_notes, p.n_bins);
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (attack, decay) = (bytes(&p.spectra[..k * f]), bytes(&p.spectra[k * f..]));
        let (rates, envelope) = (bytes(&p.decay_rates), bytes(&p.envelope));
        fn view<'a>(name: &str, shape: Vec<usize>, data: &'a [u8]) -> Result<TensorView<'a>> {
            TensorView::new(Dtype::F32, shape, data).map_err(|e| Error::internal(format!("{name} tensor: {e}")))
        }
        let tensors = [
            ("attack", view("attack", vec![k, f], &attack)?),
            ("decay", view("decay", vec![k, f], &decay)?),
            ("decay_rates", view("decay_rates", vec![k], &rates)?),
            ("envelope", view("envelope", vec![p.envelope.len()], &envelope)?),
            (
                "pitches",
                TensorView::new(Dtype::U8, vec![k], &self.pitches)
                    .map_err(|e| Error::internal(format!("pitches tensor: {e}")))?,
            ),
        ];
        let meta = model_metadata(FORMAT_NAME, FORMAT_VERSION, &self.info, &self.pitches);
        let bytes = serialize(tensors, &Some(meta))
            .map_err(|e| Error::internal(format!("serialising the attack/decay model: {e}")))?;
        crate::files::canonical_safetensors(bytes)
    }

    /// Parses and validates a model from safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |msg: String| Error::new(ErrorKind::Templates, msg);
        let (st, meta) = open_model_file(bytes, FORMAT_NAME, FORMAT_VERSION, "attack/decay model")?;
        let info = read_model_params(&meta)?;
        let pitches = read_pitches(&st)?;
        let (k, f) = (pitches.len(), info.stft.n_bins());
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let v = st.tensor(name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if v.dtype() != safetensors::Dtype::F32 || v.shape() != shape {
                return Err(bad(format!("tensor `{name}` must be F32 of shape {shape:?}, not {:?}", v.shape())));
            }
            Ok(f32_values(v.data()))
        };
        let mut spectra = tensor("attack", &[k, f])?;
        spectra.extend(tensor("decay", &[k, f])?);
        let decay_rates = tensor("decay_rates", &[k])?;
        let n_env = st.tensor("envelope").map(|v| v.shape().first().copied().unwrap_or(0)).unwrap_or(0);
        let envelope = tensor("envelope", &[n_env])?;
        let params = AttackDecayParams { n_bins: f, n_notes: k, spectra, decay_rates, envelope };
        params.validate().map_err(|e| bad(e.message().to_string()))?;
        Ok(AttackDecayModel { params, pitches, info })
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|e| e.with_path(path))
    }

    /// Writes the model atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_atomically(path, &self.to_bytes()?)
    }
}

/// Learns an attack/decay model from isolated-note recordings (the same
/// recordings [`crate::templates::TemplateLearner`] uses).
#[derive(Debug, Clone, Default)]
pub struct AttackDecayLearner {
    /// The STFT (default: the paper's, 44.1 kHz, 8192/4096/882).
    pub stft: StftConfig,
    /// Training of each note (default: the authors' 50 rounds, 9-frame envelope).
    pub training: NoteTraining,
    /// How to decode (default: mean of the channels, whole file).
    pub decode: DecodeOptions,
    /// Free text stored in the `source` metadata.
    pub source: String,
}

impl AttackDecayLearner {
    /// Trains every note (in parallel), calling `on_done` after each; the
    /// model's envelope is the mean of the notes' envelopes.
    pub fn learn(&self, notes: &[NoteRecording], on_done: impl Fn(&NoteRecording) + Sync) -> Result<AttackDecayModel> {
        let stft = Stft::new(self.stft.clone())?;
        let (sorted, fits) = learn_each(notes, on_done, |note| {
            Ok(self.training.train(&note_spectrogram(&stft, &self.decode, note)?)?.params)
        })?;
        Ok(AttackDecayModel {
            params: combine_notes(&fits)?,
            pitches: sorted.iter().map(|n| n.pitch).collect(),
            info: TemplateParams {
                stft: self.stft.clone(),
                beta: 1.0,
                iterations: self.training.iterations,
                tool_version: env!("CARGO_PKG_VERSION").to_string(),
                source: self.source.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::TemplateDictionary;

    fn small_model() -> AttackDecayModel {
        let stft = StftConfig { sample_rate: 8000, n_fft: 16, win_length: 8, hop_length: 4 };
        let (f, k) = (9, 2);
        AttackDecayModel {
            params: AttackDecayParams {
                n_bins: f,
                n_notes: k,
                spectra: (0..2 * f * k).map(|i| (i % 5) as f32 / 10.0 + 0.01).collect(),
                decay_rates: vec![0.05, 0.2],
                envelope: vec![0.2, 1.0, 0.4],
            },
            pitches: vec![60, 62],
            info: TemplateParams { stft, beta: 1.0, iterations: 3, tool_version: "test".into(), source: "unit".into() },
        }
    }

    #[test]
    fn model_round_trips_and_the_wrong_kind_of_file_is_named() {
        let m = small_model();
        let bytes = m.to_bytes().unwrap();
        assert_eq!(AttackDecayModel::from_bytes(&bytes).unwrap(), m);
        assert_eq!(bytes, small_model().to_bytes().unwrap());
        let err = TemplateDictionary::from_bytes(&bytes).unwrap_err().to_string();
        assert!(err.contains("attack/decay model") && err.contains("not a templates file"), "{err}");
        let mut broken = small_model();
        broken.params.decay_rates[1] = -1.0;
        let err = AttackDecayModel::from_bytes(&broken.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("decay rates must be positive"), "{err}");
        assert!(AttackDecayModel::from_bytes(b"nonsense").is_err());
    }
}
