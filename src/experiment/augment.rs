//! `[augment]`: random transforms of training patches, including those that make scans look
//! like an older scanner's (thick slices, low resolution, a bias field).

use serde::Serialize;

use super::raw;
use super::{non_negative, positive, probability, range_pair};
use crate::config::Checker;

/// Random transforms of training patches; each applies with its probability `*_p`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AugmentConfig {
    pub enabled: bool,
    /// Rotation about each axis, up to this many degrees either way (labels: nearest).
    pub rotate_degrees: f64,
    pub rotate_p: f64,
    /// Probability of a quarter turn (90, 180 or 270 degrees) in a random plane.
    pub rotate90_p: f64,
    /// Isotropic zoom factor range.
    pub scale: [f64; 2],
    pub scale_p: f64,
    /// Axes (0, 1, 2 = x, y, z) that may be mirrored, each with `flip_p`.
    pub flip_axes: Vec<u32>,
    pub flip_p: f64,
    /// Multiplicative intensity range.
    pub brightness: [f64; 2],
    pub brightness_p: f64,
    pub gamma: [f64; 2],
    pub gamma_p: f64,
    pub noise_sigma: f64,
    pub noise_p: f64,
    /// Probability (per channel) of a lower-resolution scan: the patch down-sampled by a
    /// factor drawn from `lowres_zoom` on every axis and interpolated back.
    pub lowres_p: f64,
    pub lowres_zoom: [f64; 2],
    /// Probability (per patch) of thick slices along one random axis: groups of a thickness
    /// drawn from `thick_slices` (voxels) averaged, then interpolated back to the grid, as a
    /// thick-sliced acquisition resampled to 1 mm looks.
    pub thick_slices_p: f64,
    pub thick_slices: [f64; 2],
    /// Probability (per channel) of a smooth multiplicative intensity field (scanner
    /// inhomogeneity), `exp` of a random second-order polynomial of up to `bias_field` across
    /// the patch.
    pub bias_field_p: f64,
    pub bias_field: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            enabled: true,
            rotate_degrees: 15.0,
            rotate_p: 0.2,
            rotate90_p: 0.0,
            scale: [0.85, 1.25],
            scale_p: 0.2,
            flip_axes: vec![0, 1, 2],
            flip_p: 0.5,
            brightness: [0.75, 1.25],
            brightness_p: 0.15,
            gamma: [0.7, 1.5],
            gamma_p: 0.3,
            noise_sigma: 0.1,
            noise_p: 0.1,
            lowres_p: 0.15,
            lowres_zoom: [0.5, 1.0],
            thick_slices_p: 0.2,
            thick_slices: [2.0, 6.0],
            bias_field_p: 0.2,
            bias_field: 0.3,
        }
    }
}

/// What every `*_p` key allows.
const P_RULE: &str = "must be between 0 and 1";

pub(super) fn check_augment(check: &mut Checker, mut raw: raw::RawAugment) -> AugmentConfig {
    let mut augment = AugmentConfig::default();
    if let Some(axes) = raw.flip_axes.take() {
        augment.flip_axes = check_flip_axes(check, axes, augment.flip_axes);
    }
    augment.enabled = raw.enabled.unwrap_or(augment.enabled);
    check_geometry(check, &raw, &mut augment);
    check_intensity(check, &raw, &mut augment);
    check_scanner_artefacts(check, &raw, &mut augment);
    augment
}

/// Only the three spatial axes can be mirrored; otherwise every axis stays allowed.
fn check_flip_axes(check: &mut Checker, axes: Vec<u32>, default: Vec<u32>) -> Vec<u32> {
    if axes.iter().any(|&a| a > 2) {
        check.error(
            "augment.flip_axes",
            format!("augment.flip_axes = {axes:?} is out of range: axes are 0, 1 and 2"),
        );
        default
    } else {
        axes
    }
}

/// Rotation, zoom and mirroring, each with its probability; `augment` holds the defaults.
fn check_geometry(check: &mut Checker, raw: &raw::RawAugment, augment: &mut AugmentConfig) {
    augment.rotate_degrees = check.value(
        "augment.rotate_degrees",
        raw.rotate_degrees,
        augment.rotate_degrees,
        |a| (0.0..=180.0).contains(&a),
        "must be between 0 and 180",
    );
    augment.rotate_p = check.value("augment.rotate_p", raw.rotate_p, augment.rotate_p, probability, P_RULE);
    augment.rotate90_p = check.value(
        "augment.rotate90_p",
        raw.rotate90_p,
        augment.rotate90_p,
        probability,
        P_RULE,
    );
    augment.scale = range_pair(
        check,
        "augment.scale",
        raw.scale,
        augment.scale,
        positive,
        "factors must be above 0",
    );
    augment.scale_p = check.value("augment.scale_p", raw.scale_p, augment.scale_p, probability, P_RULE);
    augment.flip_p = check.value("augment.flip_p", raw.flip_p, augment.flip_p, probability, P_RULE);
}

/// Brightness, gamma and noise, each with its probability; `augment` holds the defaults.
fn check_intensity(check: &mut Checker, raw: &raw::RawAugment, augment: &mut AugmentConfig) {
    augment.brightness = range_pair(
        check,
        "augment.brightness",
        raw.brightness,
        augment.brightness,
        positive,
        "factors must be above 0",
    );
    augment.brightness_p = check.value(
        "augment.brightness_p",
        raw.brightness_p,
        augment.brightness_p,
        probability,
        P_RULE,
    );
    augment.gamma = range_pair(
        check,
        "augment.gamma",
        raw.gamma,
        augment.gamma,
        positive,
        "exponents must be above 0",
    );
    augment.gamma_p = check.value("augment.gamma_p", raw.gamma_p, augment.gamma_p, probability, P_RULE);
    augment.noise_sigma = check.value(
        "augment.noise_sigma",
        raw.noise_sigma,
        augment.noise_sigma,
        non_negative,
        "must be at least 0",
    );
    augment.noise_p = check.value("augment.noise_p", raw.noise_p, augment.noise_p, probability, P_RULE);
}

/// Low resolution, thick slices and a bias field, which make scans look like an older
/// scanner's; `augment` holds the defaults.
fn check_scanner_artefacts(check: &mut Checker, raw: &raw::RawAugment, augment: &mut AugmentConfig) {
    augment.lowres_p = check.value("augment.lowres_p", raw.lowres_p, augment.lowres_p, probability, P_RULE);
    augment.lowres_zoom = range_pair(
        check,
        "augment.lowres_zoom",
        raw.lowres_zoom,
        augment.lowres_zoom,
        |z| z > 0.0 && z <= 1.0,
        "zoom factors must be above 0 and at most 1",
    );
    augment.thick_slices_p = check.value(
        "augment.thick_slices_p",
        raw.thick_slices_p,
        augment.thick_slices_p,
        probability,
        P_RULE,
    );
    augment.thick_slices = range_pair(
        check,
        "augment.thick_slices",
        raw.thick_slices,
        augment.thick_slices,
        |t| (1.0..=16.0).contains(&t),
        "thicknesses must be between 1 and 16 voxels",
    );
    augment.bias_field_p = check.value(
        "augment.bias_field_p",
        raw.bias_field_p,
        augment.bias_field_p,
        probability,
        P_RULE,
    );
    augment.bias_field = check.value(
        "augment.bias_field",
        raw.bias_field,
        augment.bias_field,
        |b| (0.0..=2.0).contains(&b),
        "must be between 0 and 2",
    );
}
