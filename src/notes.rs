//! Note lists and their file formats: standard MIDI files, CSV, MAPS txt, JSON.

/// One transcribed or reference note.
///
/// Times are in seconds from the start of the audio; `offset > onset`.
/// `pitch` is the MIDI note number (60 = C4, 69 = A4 = 440 Hz).
/// `velocity` is the MIDI velocity 1..=127.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Note {
    /// Onset time in seconds.
    pub onset: f64,
    /// Offset (release) time in seconds.
    pub offset: f64,
    /// MIDI pitch.
    pub pitch: u8,
    /// MIDI velocity, 1..=127.
    pub velocity: u8,
}
