//! Variable precedence, end to end: module defaults < playbook vars < module params < `-e`.

use std::fs;
use std::process::Command;

#[test]
fn each_layer_overrides_the_one_below() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("modules/layers");
    fs::create_dir_all(m.join("templates")).unwrap();
    fs::write(
        m.join("module.yml"),
        r#"params:
  a: { default: module }
  b: { default: module }
  c: { default: module }
  d: { default: module }
tasks:
  - name: layers
    file: { path: /out, template: templates/out.j2 }
"#,
    )
    .unwrap();
    fs::write(
        m.join("templates/out.j2"),
        "{{ a }} {{ b }} {{ c }} {{ d }} {{ own }}\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("site.yml"),
        r#"vars: { b: playbook, c: playbook, d: playbook, own: "{{ b }}-var" }
modules:
  - name: layers
    params: { c: param, d: param }
"#,
    )
    .unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slice"))
        .args(["apply", "site.yml", "--root", "root", "-e", "d=cli"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `own` is a playbook var built from another playbook var.
    assert_eq!(
        fs::read_to_string(root.join("out")).unwrap(),
        "module playbook param cli playbook-var\n"
    );
}
