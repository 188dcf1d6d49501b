//! The documentation is the repository's own and agrees with the code: nothing points
//! outside the repository, and every configuration key is documented with its default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use test_support::repository_root;

use crate::{read, setting_keys};

fn tracked_files() -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repository_root())
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git ls-files");
    output
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .collect()
}

/// Relative paths in `text` (`../x`, `../../y`) that climb above the repository root
/// when read from `file`.
fn escaping_paths(file: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("../") {
        if start > 0 && text[..start].ends_with("../") {
            continue;
        }
        let rest = &text[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
            .unwrap_or(rest.len());
        let reference = &rest[..end];
        if !reference
            .trim_start_matches("../")
            .starts_with(char::is_alphanumeric)
        {
            continue;
        }
        let mut depth = file.components().count() as i64 - 1;
        for component in Path::new(reference).components() {
            match component {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                found.push(reference.to_owned());
                break;
            }
        }
    }
    found
}

#[test]
fn no_tracked_file_refers_to_a_path_outside_the_repository() {
    let mut offenders = Vec::new();
    for file in tracked_files() {
        let Ok(text) = std::fs::read_to_string(repository_root().join(&file)) else {
            continue;
        };
        for reference in escaping_paths(&file, &text) {
            offenders.push(format!("{}: {reference}", file.display()));
        }
        for name in ["API", "CONFIG", "TESTBED", "ORIGIN", "STYLE"] {
            if text.contains(&format!("shared/{name}.md")) {
                offenders.push(format!("{}: shared/{name}.md", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn a_reference_that_climbs_above_the_root_is_found() {
    // Spelled in pieces, so this file does not itself refer outside the repository.
    let outside = concat!("../..", "/elsewhere/notes.md");
    assert_eq!(
        escaping_paths(Path::new("tests/x.rs"), &format!("read(\"{outside}\")")),
        [outside]
    );
    let inside = concat!("../../", "../../config/default.toml");
    assert!(escaping_paths(Path::new("crates/api/src/config/mod.rs"), inside).is_empty());
}

/// `key → default` of `config/default.toml`, lists left out of the comparison of values.
fn default_toml() -> BTreeMap<String, Option<String>> {
    let table: toml::Table = read("config/default.toml")
        .parse()
        .expect("default.toml is TOML");
    let mut keys = BTreeMap::new();
    for (section, fields) in table {
        let fields = fields.as_table().expect("sections are tables");
        for (key, value) in fields {
            let rendered = match value {
                toml::Value::String(text) if text.is_empty() => Some("\"\"".to_owned()),
                toml::Value::String(text) => Some(text.clone()),
                toml::Value::Integer(number) => Some(number.to_string()),
                toml::Value::Boolean(flag) => Some(flag.to_string()),
                _ => None,
            };
            keys.insert(format!("{section}.{key}"), rendered);
        }
    }
    keys
}

/// The rows of the key table in `docs/configuration.md`: key → (default, variables).
fn documented_keys() -> BTreeMap<String, (String, String)> {
    read("docs/configuration.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            key.contains('.')
                .then(|| (key.to_owned(), (cells[3].to_owned(), cells[4].to_owned())))
        })
        .collect()
}

#[test]
fn the_configuration_page_documents_exactly_the_settings() {
    let documented: BTreeSet<String> = documented_keys().into_keys().collect();
    assert_eq!(documented, setting_keys());
}

#[test]
fn every_default_in_default_toml_is_the_documented_one() {
    let documented = documented_keys();
    for (key, default) in default_toml() {
        let (documented_default, _) = documented
            .get(&key)
            .unwrap_or_else(|| panic!("{key} is not in docs/configuration.md"));
        if let Some(default) = default {
            assert_eq!(
                documented_default.trim_matches('`'),
                default,
                "the default of {key}"
            );
        }
    }
}

#[test]
fn keys_without_a_default_are_documented_as_required() {
    let defaults = default_toml();
    for (key, (default, _)) in documented_keys() {
        if !defaults.contains_key(&key) {
            assert_eq!(default, "–", "{key} has no default, so it is required");
        }
    }
}

#[test]
fn every_key_names_its_app_variable() {
    for (key, (_, variables)) in documented_keys() {
        let variable = format!("APP__{}", key.replace('.', "__").to_uppercase());
        assert!(variables.contains(&variable), "{key}: {variables}");
    }
}
