//! The Cloud Hypervisor series (`patches/cloud-hypervisor/`) as its maintainers and users
//! meet it, without building it: it applies with `git am` to a pristine unpack of the pinned
//! commit (`scripts/build-cloud-hypervisor --check`), a patch that does not apply is named,
//! the `series` file lists exactly the patches, and every commit message keeps Cloud
//! Hypervisor's rules (`.gitlint` and `scripts/gitlint/rules/` of the pinned tree: a
//! `component: Summary` title whose component is one of theirs, at most 72 characters a
//! line, a `Signed-off-by:`).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::{repo_root, script};

fn series_dir() -> PathBuf {
    repo_root().join("patches/cloud-hypervisor")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pv-ch-series-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `scripts/build-cloud-hypervisor --check` with its own cache (and series, if given).
fn check(cache: &Path, series: Option<&Path>) -> Output {
    let mut cmd = Command::new(script("build-cloud-hypervisor"));
    cmd.arg("--check").env("PV_CACHE", cache);
    if let Some(dir) = series {
        cmd.env("PV_CH_SERIES_DIR", dir);
    }
    cmd.output().expect("scripts/build-cloud-hypervisor")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh `--check` of the series in a cache of its own: the cache (to remove) and the
/// patched tree.
fn patched_tree(name: &str) -> (PathBuf, PathBuf) {
    let cache = scratch(name);
    let out = check(&cache, None);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tree = PathBuf::from(stdout.lines().last().unwrap_or_default());
    (cache, tree)
}

/// The patches the `series` file lists, in order.
fn series() -> Vec<String> {
    fs::read_to_string(series_dir().join("series"))
        .expect("patches/cloud-hypervisor/series")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_series_file_lists_exactly_the_patches_in_order() {
    let listed = series();
    let mut on_disk: Vec<String> = fs::read_dir(series_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".patch"))
        .collect();
    on_disk.sort();
    assert_eq!(listed, on_disk);
    for (i, name) in listed.iter().enumerate() {
        assert!(
            name.starts_with(&format!("{:04}-", i + 1)),
            "{name} is patch {} of the series",
            i + 1
        );
    }
}

#[test]
fn the_series_applies_to_the_pinned_commit() {
    let (cache, tree) = patched_tree("applies");
    let config = fs::read_to_string(tree.join("vmm/src/config.rs")).expect("vmm/src/config.rs");
    assert!(
        config.contains("pv_keys::read"),
        "the series is not in {}",
        tree.display()
    );
    let log = Command::new("git")
        .args(["log", "--format=%s"])
        .current_dir(&tree)
        .output()
        .unwrap();
    let subjects = String::from_utf8_lossy(&log.stdout);
    assert_eq!(
        subjects.lines().count(),
        series().len() + 1,
        "one commit per patch on the upstream one: {subjects}"
    );
    let _ = fs::remove_dir_all(&cache);
}

#[test]
fn a_patch_that_does_not_apply_is_named() {
    let cache = scratch("broken-cache");
    let broken = scratch("broken-series");
    let names = series();
    for name in &names {
        fs::copy(series_dir().join(name), broken.join(name)).unwrap();
    }
    fs::copy(series_dir().join("series"), broken.join("series")).unwrap();
    // The last patch now edits a line the tree does not have.
    let last = names.last().unwrap();
    let patch = fs::read_to_string(broken.join(last)).unwrap();
    let hunk = patch.find("\n@@ ").expect("a hunk");
    let context = patch[hunk..]
        .lines()
        .skip(1)
        .find(|l| l.starts_with(' ') && l.trim().len() > 3)
        .expect("a context line")
        .to_owned();
    let spoiled = patch.replacen(&context, " this line is not in Cloud Hypervisor", 1);
    fs::write(broken.join(last), spoiled).unwrap();
    let out = check(&cache, Some(&broken));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("patch {last} does not apply")),
        "{stderr}"
    );
    let _ = fs::remove_dir_all(&cache);
    let _ = fs::remove_dir_all(&broken);
}

/// Cloud Hypervisor's commit components, from its gitlint rule in the pinned tree.
fn components(tree: &Path) -> Vec<String> {
    let rule = fs::read_to_string(tree.join("scripts/gitlint/rules/TitleStartsWithComponent.py"))
        .expect("the gitlint rule of the pinned tree");
    let start = rule.find("valid_components = (").expect("valid_components");
    let end = start + rule[start..].find(')').expect("end of valid_components");
    rule[start..end]
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_commit_message_keeps_cloud_hypervisors_rules() {
    let (cache, tree) = patched_tree("rules");
    let valid = components(&tree);
    assert!(valid.iter().any(|c| c == "vmm"), "{valid:?}");
    let n = series().len();
    let log = Command::new("git")
        .args(["log", "--format=%B%x00", &format!("-{n}")])
        .current_dir(&tree)
        .output()
        .unwrap();
    let messages = String::from_utf8_lossy(&log.stdout);
    for message in messages
        .split('\0')
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        let mut lines = message.lines();
        let title = lines.next().unwrap_or_default();
        assert!(title.len() <= 72, "title over 72: {title}");
        let (component, summary) = title.split_once(": ").unwrap_or(("", ""));
        for c in component.split(", ") {
            assert!(
                valid.iter().any(|v| v == c),
                "component {c:?} of {title:?} is not one of {valid:?}"
            );
        }
        assert!(
            summary.starts_with(|c: char| c.is_ascii_uppercase()),
            "summary starts with a capital: {title}"
        );
        assert_eq!(
            lines.next(),
            Some(""),
            "a blank line after the title: {title}"
        );
        let body: Vec<&str> = lines.collect();
        assert!(
            body.iter().filter(|l| !l.trim().is_empty()).count() >= 2,
            "a body that says why: {title}"
        );
        let mut in_code = false;
        for line in &body {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            let exempt = in_code
                || line.starts_with(' ')
                || line.starts_with("Signed-off-by: ")
                || line.starts_with("http");
            assert!(
                exempt || line.len() <= 72,
                "{title}: body line over 72: {line}"
            );
        }
        assert!(
            body.iter().any(|l| l.starts_with("Signed-off-by: ")),
            "no Signed-off-by: {title}"
        );
    }
    let _ = fs::remove_dir_all(&cache);
}

/// The names in the YAML flow list `enum: [...]` that follows `anchor` in `doc` (it may
/// span lines).
fn enum_after(doc: &str, anchor: &str) -> Vec<String> {
    let at = doc
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in the document"));
    let start = at + doc[at..].find("enum: [").expect("an enum after the anchor") + "enum: [".len();
    let end = start + doc[start..].find(']').expect("the end of the enum");
    doc[start..end]
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn the_openapi_document_names_what_pv_features_names() {
    let (cache, tree) = patched_tree("openapi");
    let doc = fs::read_to_string(tree.join("vmm/src/api/openapi/cloud-hypervisor.yaml"))
        .expect("the OpenAPI document");
    let features: Vec<String> = pv_features::cpuid::KvmFeatures::NAMES
        .iter()
        .map(|(_, n)| (*n).to_owned())
        .collect();
    // The list form of KvmPvConfig.features (the first enum is "all"/"off").
    let config = &doc[doc.find("    KvmPvConfig:").expect("KvmPvConfig")..];
    assert_eq!(enum_after(config, "- type: array"), features);
    let rules: Vec<String> = pv_features::cpuid::Rule::ALL
        .iter()
        .map(|r| {
            serde_json::to_value(r)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut listed = enum_after(&doc, "The guest-side dependency, for kind rule.");
    let mut want = rules.clone();
    listed.sort();
    want.sort();
    assert_eq!(listed, want, "KvmPvEffective.dropped.reason.rule");
    let exits: Vec<String> = ["hlt", "pause", "mwait", "cstate"]
        .map(str::to_owned)
        .to_vec();
    for schema in ["    KvmPvConfig:", "    KvmPvEffective:", "    KvmPvPatch:"] {
        let part = &doc[doc.find(schema).unwrap_or_else(|| panic!("{schema}"))..];
        assert_eq!(enum_after(part, "disable_exits:"), exits, "{schema}");
    }
    for exit in &exits {
        assert!(
            pv_features::exits::DisableExits::parse_list(exit).is_ok(),
            "pv-features knows {exit}"
        );
    }
    let _ = fs::remove_dir_all(&cache);
}
