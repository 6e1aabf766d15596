//! Unknown fields. Kubernetes' types accept and drop any field they do not know, so a typo such
//! as `polcyTypes` would silently change a policy's meaning; kubectl's strict validation, and
//! the API server, refuse it. This deserializer walks a manifest's JSON value beside the typed
//! deserialization and records every key a type did not take, with its path and the fields that
//! type does know (pure).

use std::{cell::RefCell, fmt};

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

/// A key the typed deserialization ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    /// Where, as `spec.ingress[0].polcyTypes`.
    pub path: String,
    /// The closest field the type knows, when one is close enough to be a typo of it.
    pub closest: Option<&'static str>,
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field {}", self.path)?;
        if let Some(c) = self.closest {
            write!(f, " (did you mean {c}?)")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Report {
    /// The fields of the struct being read at each open path.
    fields: Vec<(String, &'static [&'static str])>,
    unknown: Vec<UnknownField>,
}

/// Deserializes `value` as `T` and returns it with every field `T` did not know.
pub fn deserialize_strict<T: de::DeserializeOwned>(
    value: Value,
) -> Result<(T, Vec<UnknownField>), serde_path_to_error::Error<serde_json::Error>> {
    let report = RefCell::new(Report::default());
    let t = serde_path_to_error::deserialize(Tracked {
        value,
        path: String::new(),
        report: &report,
    })?;
    Ok((t, report.into_inner().unknown))
}

/// The known field closest to `key`: same letters but case, or at most two edits away.
fn closest(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .map(|f| {
            (
                strsim::levenshtein(&key.to_lowercase(), &f.to_lowercase()),
                *f,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

struct Tracked<'r> {
    value: Value,
    path: String,
    report: &'r RefCell<Report>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de, 'r> Deserializer<'de> for Tracked<'r> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.value {
            Value::Object(map) => visitor.visit_map(Map {
                iter: map.into_iter(),
                pending: None,
                path: self.path,
                report: self.report,
            }),
            Value::Array(items) => visitor.visit_seq(Seq {
                iter: items.into_iter().enumerate(),
                path: self.path,
                report: self.report,
            }),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.report
            .borrow_mut()
            .fields
            .push((self.path.clone(), fields));
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let mut report = self.report.borrow_mut();
        let parent = self.path.rsplit_once('.').map_or("", |(p, _)| p);
        let key = self
            .path
            .rsplit_once('.')
            .map_or(self.path.as_str(), |(_, k)| k);
        let known = report
            .fields
            .iter()
            .rev()
            .find(|(p, _)| p == parent)
            .map_or(&[][..], |(_, f)| *f);
        let closest = closest(key, known);
        report.unknown.push(UnknownField {
            path: self.path.clone(),
            closest,
        });
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.value.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.value.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Map<'r> {
    iter: serde_json::map::IntoIter,
    pending: Option<(String, Value)>,
    path: String,
    report: &'r RefCell<Report>,
}

impl<'de, 'r> MapAccess<'de> for Map<'r> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        let key = seed.deserialize(k.as_str().into_deserializer())?;
        self.pending = Some((k, v));
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (k, v) = self
            .pending
            .take()
            .ok_or_else(|| de::Error::custom("value before key"))?;
        seed.deserialize(Tracked {
            value: v,
            path: join(&self.path, &k),
            report: self.report,
        })
    }
}

struct Seq<'r> {
    iter: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    path: String,
    report: &'r RefCell<Report>,
}

impl<'de, 'r> SeqAccess<'de> for Seq<'r> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        let Some((i, v)) = self.iter.next() else {
            return Ok(None);
        };
        seed.deserialize(Tracked {
            value: v,
            path: format!("{}[{i}]", self.path),
            report: self.report,
        })
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_typo_is_reported_with_its_path_and_the_field_it_meant() {
        let doc = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a", "namespace": "n"},
            "spec": {"podSelector": {}, "polcyTypes": ["Egress"],
                     "ingress": [{"from": [{"podSelector": {}}], "prots": [{"port": 80}]}]},
        });
        let (np, unknown) = deserialize_strict::<NetworkPolicy>(doc).expect("decodes");
        assert!(np.spec.expect("spec").policy_types.is_none());
        assert_eq!(
            unknown,
            vec![
                UnknownField {
                    path: "spec.ingress[0].prots".into(),
                    closest: Some("ports")
                },
                UnknownField {
                    path: "spec.polcyTypes".into(),
                    closest: Some("policyTypes")
                },
            ]
        );
    }

    #[test]
    fn a_miscased_container_port_names_the_right_spelling() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerport": 3535}]}]},
        });
        let (_, unknown) = deserialize_strict::<Pod>(doc).expect("decodes");
        assert_eq!(
            unknown.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "unknown field spec.containers[0].ports[0].containerport (did you mean containerPort?)"
            ]
        );
    }

    #[test]
    fn a_clean_manifest_has_no_unknown_fields() {
        let doc = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x"}, "annotations": {"anything": "goes"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "name": "http"}]}]},
            "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]},
        });
        let (_, unknown) = deserialize_strict::<Pod>(doc).expect("decodes");
        assert_eq!(unknown, vec![]);
    }
}
