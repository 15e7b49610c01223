//! The numbers of the decision rule (activations → notes) that a template
//! dictionary carries: how activations are scaled before the threshold, the
//! free decay rate of the offset rule's floor, and the whole calibration
//! [`crate::calibration`] chose on the isolated notes.
//!
//! Plain data, below [`crate::templates`] (which stores a [`Calibration`] in
//! its metadata) and [`crate::transcription`] (which applies it), so that the
//! dictionary does not depend on the stages that come after it.

use serde::{Deserialize, Serialize};

use crate::{Error, ErrorKind, Result};

/// How activations are scaled before thresholding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationScale {
    /// Divided by the recording's largest activation (default): δ is a
    /// fraction of the loudest note and independent of the recording's level.
    #[default]
    Max,
    /// Divided by the mean of the pitches' peaks: each pitch's largest
    /// activation in the recording, over the pitches whose peak is at least
    /// [`ACTIVE_PITCH_FRACTION`] of the largest. Like [`Max`](Self::Max)
    /// independent of the level, but δ is then relative to a typical note's
    /// peak rather than to the single loudest one, so it transfers between
    /// recordings of different dynamics (a δ calibrated on isolated notes
    /// holds on songs; docs/results/dev/decision-offsets-velocity.md).
    MeanPitchPeak,
    /// Raw activations, as in the paper: δ depends on the recording's level.
    Raw,
}

/// The pitches whose peak is at least this fraction of the recording's
/// largest activation count in [`ActivationScale::MeanPitchPeak`].
pub const ACTIVE_PITCH_FRACTION: f64 = 0.05;

/// The free decay rate of an activation, per pitch:
/// `λ(p) = exp(intercept + slope · (p − 60))` per second (a line in the log
/// rate: a piano's strings decay faster the higher they are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecayRate {
    /// `ln λ` at middle C (MIDI 60), λ in 1/s.
    pub intercept: f64,
    /// Change of `ln λ` per semitone.
    pub slope: f64,
}

impl DecayRate {
    /// λ(p) in 1/s (capped at 1000).
    pub fn at(&self, pitch: u8) -> f64 {
        let r = (self.intercept + self.slope * (f64::from(pitch) - 60.0)).exp();
        if r.is_finite() {
            r.min(1000.0)
        } else {
            1000.0
        }
    }
}

fn one() -> usize {
    1
}

/// What [`crate::calibration::calibrate`] chose, stored in the dictionary
/// file; `OnsetDetector::calibrated` of [`crate::transcription`] turns it
/// into the rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// δ of eq. 10, on activations scaled by [`scale`](Self::scale).
    pub threshold: f64,
    /// The activation scaling δ is relative to (files of the first
    /// calibrations, without it: max-scaled).
    #[serde(default)]
    pub scale: ActivationScale,
    /// The fraction of the offset rule's floor (`OffsetRule::Decay` of
    /// [`crate::transcription`]).
    pub offset_fraction: f64,
    /// The free decay rate of the offset rule's floor (`None`: a fixed floor).
    #[serde(default)]
    pub offset_decay_rate: Option<DecayRate>,
    /// The bridge of the offset rule (frames).
    #[serde(default = "one")]
    pub offset_bridge: usize,
    /// `a` of the velocity fit `a + b · ln(raw peak)`.
    pub velocity_intercept: f64,
    /// `b` of the velocity fit.
    pub velocity_slope: f64,
    /// Seconds of the calibration mix.
    pub mix_seconds: f64,
    /// Notes in the calibration mix.
    pub mix_notes: usize,
    /// The mix's seed.
    pub seed: u64,
    /// Onset F-measure on the mix at the chosen δ.
    pub mix_onset_f: f64,
    /// Onset + offset F-measure on the mix at the chosen δ and offset rule.
    pub mix_onset_offset_f: f64,
    /// Mean absolute velocity error (MIDI units) of the mix's onset-matched
    /// notes after the fit.
    pub mix_velocity_mae: f64,
}

impl Calibration {
    /// As the dictionary file's `calibration` metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers")
    }

    /// Parses the `calibration` metadata, checking that the rule's numbers
    /// are usable.
    pub fn from_json(json: &str) -> Result<Calibration> {
        let bad = |why: String| Error::new(ErrorKind::Templates, format!("metadata `calibration`: {why}"));
        let c: Calibration = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let rate = c.offset_decay_rate.map_or([0.0, 0.0], |r| [r.intercept, r.slope]);
        let finite = [c.threshold, c.offset_fraction, c.velocity_intercept, c.velocity_slope, rate[0], rate[1]];
        if finite.iter().any(|x| !x.is_finite())
            || c.threshold < 0.0
            || !(0.0..1.0).contains(&c.offset_fraction)
            || !(1..=1000).contains(&c.offset_bridge)
        {
            return Err(bad(
                "threshold, decay rate and velocity fit must be finite, the offset fraction in [0, 1), the bridge \
                 1 to 1000 frames"
                    .into(),
            ));
        }
        Ok(c)
    }
}
