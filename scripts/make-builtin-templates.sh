#!/usr/bin/env bash
# Regenerates assets/builtin-piano.templates, the dictionary built into the
# binary (see assets/README.md for the choice, provenance and licence).
#
# Source: the dev set's Salamander piano, intensity M (velocity 70), sustain
# off: isolated notes rendered from the Salamander Grand Piano V3 samples
# (Yamaha C5, Alexander Holm, CC BY 3.0), see shared/data/dev/README.md.
# Learned with the default settings (tau 10, 500 iterations, KL), stored as
# bfloat16, without a calibration of the decision rule (--no-calibrate): the
# rule calibrated on Salamander's notes did not transfer to the other pianos
# better than the uncalibrated defaults (assets/README.md). Chosen by
# measurement over templates learned from the Fluid R3 GM SoundFont
# (assets/README.md has the scores).
set -euo pipefail
cd "$(dirname "$0")/.."
NOTES="${1:-${SSCNMF_DATA:-../shared/data/dev}/Salamander/ISOL/NO}"
if [ ! -d "$NOTES" ]; then
    echo "no isolated notes at $NOTES (give the Salamander ISOL/NO folder)" >&2
    exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run --release --quiet -- learn "$NOTES" --intensity M --sustain 0 --no-calibrate -o "$tmp/full.templates" --quiet
cargo run --release --quiet --example store_templates -- "$tmp/full.templates" bf16 assets/builtin-piano.templates
ls -l assets/builtin-piano.templates
