//! BraTS data: finding cases, loading and checking NIfTI volumes, preprocessing, and the
//! synthetic cases the demo and the tests use. Nothing here needs libtorch.

pub mod cache;
pub mod case;
pub mod dataset;
pub mod preprocess;
pub mod probe;
pub mod sampler;
pub mod synth;
pub mod volume;
