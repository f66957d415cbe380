//! A Lambda built for real money does not contain the sandbox: its dependency tree, as
//! cargo resolves it for that build, has no `recoup-sandbox`, the only Recoup crate that
//! reads card numbers. The default build carries both providers.

use std::process::Command;

fn tree(package: &str, features: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["tree", "--edges", "normal", "--prefix", "none", "--package", package]);
    if let Some(f) = features {
        cmd.args(["--no-default-features", "--features", f]);
    }
    let out = cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).output().expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn has(tree: &str, krate: &str) -> bool {
    tree.lines().any(|l| l.split_whitespace().next() == Some(krate))
}

#[test]
fn a_function_built_for_stripe_does_not_contain_the_sandbox() {
    for f in recoup_functions::FUNCTIONS {
        let stripe_only = tree(f.name, Some("lambda,stripe"));
        assert!(has(&stripe_only, "recoup-stripe"), "{}: no Stripe adapter in its Stripe build", f.name);
        assert!(!has(&stripe_only, "recoup-sandbox"), "{}: the Stripe build contains the sandbox", f.name);

        let default = tree(f.name, None);
        assert!(has(&default, "recoup-sandbox") && has(&default, "recoup-stripe"), "{}: default build", f.name);
    }
}

#[test]
fn the_domain_crate_never_depends_on_a_provider() {
    let shared = tree("recoup-shared", Some("aws,embedded"));
    assert!(!has(&shared, "recoup-sandbox") && !has(&shared, "recoup-stripe"));
}
