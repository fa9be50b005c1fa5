use super::*;

#[test]
fn table_headers_are_told_from_arrays_of_arrays() {
    assert_eq!(table_header("[data]"), Some("[data]"));
    assert_eq!(table_header("[[member]]"), Some("[[member]]"));
    assert_eq!(table_header("[member.model]"), Some("[member.model]"));
    assert_eq!(table_header("[0, 240],"), None);
    assert_eq!(table_header("[[0, 240], [0, 240], [0, 155]]"), None);
}

#[test]
fn a_member_is_checked_at_the_lines_of_the_package_file() {
    let text = "# header\nformat = 1\n\n[data]\nmodalities = [\"t1n\"]\n\n[validate]\noverlap = 0.5\n\n\
                [[member]]\nfile = \"a\"\n\n[member.model]\ndepth = 3\n\n[[member]]\nfile = \"b\"\n\n\
                [member.model]\ndepth = 99\n";
    let path = Path::new("p/package.toml");
    let first = member_experiment(path, text, 0).expect("the first member is valid");
    assert_eq!(first.model.depth, 3);
    assert_eq!(first.data.modalities.len(), 1);
    let error = member_experiment(path, text, 1).expect_err("depth 99").to_string();
    // depth = 99 is on line 20, its value at column 9.
    assert!(error.starts_with("p/package.toml:20:9: model.depth"), "{error}");
}
