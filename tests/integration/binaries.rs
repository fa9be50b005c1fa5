//! The two binaries: `segtop` never links libtorch; `segtop-train` does, CPU only, and
//! `segtop` hands the network commands over to it.

use std::path::Path;
use std::process::Command;

use crate::{repo, segtop, stderr, stdout};

fn ldd(binary: &str) -> String {
    let output = Command::new("ldd").arg(binary).output().expect("ldd runs");
    assert!(output.status.success(), "ldd {binary}: {}", stderr(&output));
    stdout(&output)
}

#[test]
fn segtop_does_not_link_libtorch() {
    let libraries = ldd(env!("CARGO_BIN_EXE_segtop"));
    // Library names only: the load addresses ldd prints are random hex that can spell "c10".
    let names: Vec<&str> = libraries
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("libc.so")), "{libraries}");
    for name in ["torch", "c10", "gomp", "cuda"] {
        assert!(
            !names.iter().any(|n| n.contains(name)),
            "segtop links {name}:\n{libraries}"
        );
    }
}

#[cfg(feature = "trainer")]
#[test]
fn trainer_links_cpu_libtorch_and_finds_it_without_ld_library_path() {
    let trainer = env!("CARGO_BIN_EXE_segtop-train");
    let libraries = ldd(trainer);
    assert!(libraries.contains("libtorch_cpu.so => /"), "{libraries}");
    assert!(!libraries.contains("not found"), "{libraries}");
    assert!(!libraries.contains("libtorch_cuda"), "{libraries}");

    let output = Command::new(trainer)
        .arg("info")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let info = stdout(&output);
    assert!(
        info.lines().any(|l| l.starts_with("libtorch") && l.contains("2.13.0")),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["cuda", "no"]),
        "{info}"
    );
}

#[cfg(feature = "trainer")]
#[test]
fn segtop_hands_network_commands_to_the_trainer() {
    let direct = Command::new(env!("CARGO_BIN_EXE_segtop-train"))
        .arg("info")
        .output()
        .expect("runs");
    let handed = segtop(Path::new(&repo()), &["info"]);
    assert!(handed.status.success(), "{}", stderr(&handed));
    assert_eq!(stdout(&handed), stdout(&direct));
}

#[test]
fn segtop_without_the_trainer_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let alone = dir.path().join("segtop");
    std::fs::copy(env!("CARGO_BIN_EXE_segtop"), &alone).expect("copy");
    let output = Command::new(&alone).arg("train").arg("x.toml").output().expect("runs");
    assert!(!output.status.success());
    let expected = format!(
        "segtop: error: 'segtop train' needs the trainer, but {} does not exist; this segtop was built without it \
         (cargo feature 'trainer', on by default)",
        dir.path().join("segtop-train").display()
    );
    assert_eq!(stderr(&output).trim_end(), expected);
}
