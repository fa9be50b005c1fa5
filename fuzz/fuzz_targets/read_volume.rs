//! Any bytes given to the NIfTI reader, plain or gzip, give a volume or an error: never a
//! panic, never an allocation the header has not justified.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(volume) = segtop::data::volume::read_bytes(data) {
        assert_eq!(volume.data.len(), volume.shape.iter().product::<usize>());
    }
});
