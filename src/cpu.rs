//! What the CPU can compute fast, for `train.precision = "auto"`.
//!
//! bfloat16 convolutions and matrix products are several times faster than float32 on CPUs
//! with bfloat16 instructions (Intel AMX from Sapphire Rapids on, AVX512-BF16 on Intel Cooper
//! Lake and AMD Zen 4 on), where oneDNN uses them. Elsewhere oneDNN emulates bfloat16 with
//! float32 arithmetic and conversions, which is slower than float32 alone, so `auto` picks
//! bfloat16 only when the CPU reports one of those instruction sets. The flags come from
//! `/proc/cpuinfo`, where Linux lists an extension only when it also lets processes use it.

use crate::experiment::Precision;

/// CPU flags that make bfloat16 fast, in the order they are named.
pub const BF16_FLAGS: [&str; 2] = ["amx_bf16", "avx512_bf16"];

/// The flags of this machine's first CPU (empty where they cannot be read), read once: the
/// queue asks for every run it weighs.
pub fn flags() -> &'static [String] {
    static FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| flags_of_cpuinfo(&text))
            .unwrap_or_default()
    })
}

/// Which of [`BF16_FLAGS`] are among `flags`.
pub fn bf16_flags(flags: &[String]) -> Vec<&'static str> {
    BF16_FLAGS
        .into_iter()
        .filter(|wanted| flags.iter().any(|f| f == wanted))
        .collect()
}

/// The `flags` line of the first processor in a `/proc/cpuinfo` text.
pub fn flags_of_cpuinfo(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

/// The precision a run computes in: `requested`, with `auto` resolved against `flags`, and a
/// sentence saying why.
pub fn resolve(requested: Precision, flags: &[String]) -> (Precision, String) {
    let found = bf16_flags(flags);
    match requested {
        Precision::Float32 => (Precision::Float32, "float32, as asked".into()),
        Precision::Bfloat16 if found.is_empty() => (
            Precision::Bfloat16,
            "bfloat16, as asked, though this CPU has neither amx_bf16 nor avx512_bf16: \
             bfloat16 is emulated and slower than float32 here"
                .into(),
        ),
        Precision::Bfloat16 => (
            Precision::Bfloat16,
            format!("bfloat16, as asked (this CPU has {})", found.join(" and ")),
        ),
        Precision::Auto if found.is_empty() => (
            Precision::Float32,
            "float32: this CPU has neither amx_bf16 nor avx512_bf16, so bfloat16 would be emulated and slower".into(),
        ),
        Precision::Auto => (
            Precision::Bfloat16,
            format!("bfloat16: this CPU has {}", found.join(" and ")),
        ),
    }
}

/// [`resolve`] against this machine's CPU.
pub fn resolve_here(requested: Precision) -> (Precision, String) {
    resolve(requested, flags())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn auto_picks_bfloat16_only_with_bfloat16_instructions() {
        let sapphire_rapids = flags("fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8");
        let zen4 = flags("fpu sse avx2 avx512f avx512_bf16");
        let amx_only = flags("avx2 amx_tile amx_bf16");
        let skylake = flags("fpu sse avx2 avx512f avx512bw avx512_vnni");
        let zen2 = flags("fpu sse avx2 fma");
        let (precision, why) = resolve(Precision::Auto, &sapphire_rapids);
        assert_eq!(precision, Precision::Bfloat16);
        assert_eq!(why, "bfloat16: this CPU has amx_bf16 and avx512_bf16");
        assert_eq!(resolve(Precision::Auto, &zen4).0, Precision::Bfloat16);
        assert_eq!(resolve(Precision::Auto, &amx_only).0, Precision::Bfloat16);
        for cpu in [&skylake, &zen2, &Vec::new()] {
            let (precision, why) = resolve(Precision::Auto, cpu);
            assert_eq!(precision, Precision::Float32, "{cpu:?}");
            assert!(why.contains("neither amx_bf16 nor avx512_bf16"), "{why}");
        }
        // A flag is a whole word: avx512_bf16 is not found in avx512_bf16x (nor the reverse).
        assert_eq!(
            resolve(Precision::Auto, &flags("avx512_bf16x amx_bf1")).0,
            Precision::Float32
        );
    }

    #[test]
    fn explicit_choices_stand_and_say_when_they_are_slow() {
        let zen2 = flags("fpu sse avx2 fma");
        assert_eq!(resolve(Precision::Float32, &flags("amx_bf16")).0, Precision::Float32);
        let (precision, why) = resolve(Precision::Bfloat16, &zen2);
        assert_eq!(precision, Precision::Bfloat16);
        assert!(why.contains("emulated and slower"), "{why}");
    }

    #[test]
    fn flags_come_from_the_first_processor_of_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512_bf16 amx_bf16\n\n\
                    processor\t: 1\nflags\t\t: fpu\n";
        assert_eq!(flags_of_cpuinfo(text), ["fpu", "avx512_bf16", "amx_bf16"]);
        assert!(flags_of_cpuinfo("processor : 0\n").is_empty());
        assert!(flags_of_cpuinfo("").is_empty());
    }
}
