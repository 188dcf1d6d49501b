//! Checks of the repository as a whole, run without any service: the deployment files, the
//! documentation and the code agree, and nothing points outside the repository.

mod deployment;
mod docs;
mod layout;

use std::collections::BTreeSet;

use test_support::repository_root;

/// A file of the repository, as text.
fn read(path: &str) -> String {
    let full = repository_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `section.key` of every setting the service reads.
fn setting_keys() -> BTreeSet<String> {
    let env = [
        ("MONGODB_URI", "mongodb://localhost"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_S3_BUCKET_NAME", "bucket"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings =
        api::Settings::load_from(&repository_root().join("config"), &env).expect("settings");
    let value = serde_json::to_value(&settings).expect("settings serialize");
    let mut keys = BTreeSet::new();
    for (section, fields) in value.as_object().expect("sections") {
        for key in fields.as_object().expect("keys").keys() {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}
