//! JSON request bodies that must be objects.

use serde::de::{DeserializeOwned, Error};
use serde::{Deserialize, Deserializer};

/// A request body that is a JSON object holding a `T`. serde's derived structs also read
/// arrays (`["a title"]` as a post, `[]` as "no changes"); the API documents objects, so
/// anything else is refused before the fields are read.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = serde_json::Map::deserialize(deserializer)?;
        serde_json::from_value(serde_json::Value::Object(object))
            .map(Object)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Object;

    #[derive(Debug, serde::Deserialize)]
    struct Title {
        title: Option<String>,
    }

    #[test]
    fn an_array_is_not_an_object() {
        assert!(serde_json::from_str::<Object<Title>>("[]").is_err());
        assert!(serde_json::from_str::<Object<Title>>(r#"["a"]"#).is_err());
    }

    #[test]
    fn an_object_reads_as_its_fields() {
        let Object(title) =
            serde_json::from_str::<Object<Title>>(r#"{"title":"a"}"#).expect("an object");
        assert_eq!(title.title.as_deref(), Some("a"));
    }
}
